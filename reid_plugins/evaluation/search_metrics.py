"""Person-search metric maths: CUHK-SYSU / PRW search protocols, detection quality, RCP.

Pure functions over numpy arrays (no model, no dataset object); wrapped by
:class:`~reid_plugins.evaluation.person_search_evaluation.PersonSearchEvaluator`. This module
holds the search protocols (:func:`search_cuhk_sysu`, :func:`search_gallery_curve`,
:func:`search_prw`) and re-exports the rest of the public API: the box metrics
(:func:`iou_threshold`, :func:`box_iou`, :func:`average_precision`,
:func:`detection_recall_ap`) from :mod:`~reid_plugins.evaluation.detection_metrics`, and
:class:`SearchGallery` and RCP (:func:`rcp_rescore`, :func:`select_context`) from
:mod:`~reid_plugins.evaluation.search_core`, which ranks the planned galleries.
All boxes are ``x1, y1, x2, y2`` in original image pixels (continuous coordinates, no ``+1``);
similarities are cosine (dot products of L2-normalised features). Metrics are fractions in
``[0, 1]`` here (the evaluator reports percentages).

Protocol decisions (the CUHK-SYSU / PRW search evaluation of OIM, NAE and SeqNet):

* A detection is kept when ``score >= det_thresh``. Gallery images whose detections are all
  dropped still count in the recall denominator of every query they contain.
* A ground-truth box of width ``w`` and height ``h`` is matched by a detection with
  ``IoU >= min(0.5, w*h / ((w+10)*(h+10)))``.
* "Only the highest-scoring matching detection counts as positive": the *score* is the
  ranking score of the search (the cosine similarity to the query, or its RCP-rescored value
  when RCP is on), i.e. the ``y_score`` that is ranked; not the detector confidence. Among the
  detections of an image whose IoU with the query's box passes the threshold, the one ranked
  highest is the positive, all others of that image are negatives. This is what the public
  CUHK-SYSU/PRW evaluation code (and therefore every published number) does: it sorts an
  image's detections by similarity and labels the first one that overlaps the box. Using the
  detector confidence instead would label a detection that may rank *below* a duplicate,
  making the duplicate a ranked false positive above the true match. Ties are broken by
  gallery order (image index, then detection order).
* Per query ``AP = average_precision(y_true, y_score) * (#found / #gallery images containing
  the query)`` and 0 when nothing is found. ``average_precision`` is sklearn's step-wise
  (non-interpolated) AP, ties grouped. top-k: the best-ranked positive has rank ``< k`` in the
  list of all gallery detections ordered by score (ties by gallery order).
* RCP (TDN Eq. 6-8) rescales only the candidate ``g`` (highest individual similarity) of each
  gallery image; the image's other detections keep ``S_I`` and stay in the ranking.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .detection_metrics import average_precision, box_iou, detection_recall_ap, iou_threshold
from .search_core import (
    QueryPlan,
    RCPResult,
    SearchGallery,
    SearchOptions,
    as_search_gallery,
    rank_queries,
    rcp_rescore,
    select_context,
)

__all__ = [
    "iou_threshold",
    "box_iou",
    "average_precision",
    "RCPResult",
    "rcp_rescore",
    "select_context",
    "SearchGallery",
    "search_cuhk_sysu",
    "search_gallery_curve",
    "search_prw",
    "detection_recall_ap",
]

logger = logging.getLogger(__name__)

GalleryEntry = Tuple[str, Optional[Sequence[float]]]


def _boxes_of(entries: Sequence[GalleryEntry], what: str) -> np.ndarray:
    """``(N, 4)`` float64 gt boxes of ``(image_id, box)`` entries (x2 > x1, y2 > y1 checked)."""
    boxes = np.asarray([e[1] for e in entries], dtype=np.float64).reshape(-1, 4)
    if np.any(boxes[:, 2] <= boxes[:, 0]) or np.any(boxes[:, 3] <= boxes[:, 1]):
        raise ValueError(f"{what}: gt boxes must be x1,y1,x2,y2 with x2 > x1 and y2 > y1")
    return boxes


def search_cuhk_sysu(
    query_feats,
    query_image_ids: Sequence[str],
    gallery_dets,
    protocol: Sequence[Union[Sequence[GalleryEntry], Mapping]],
    *,
    det_thresh: float = 0.5,
    topk: Sequence[int] = (1, 5, 10),
    full_set: bool = False,
    rcp: Optional[Tuple[float, float]] = None,
    query_context_feats: Optional[Sequence[np.ndarray]] = None,
    query_ids: Optional[Sequence] = None,
    record_topn: int = 10,
    chunk_size: int = 256,
    progress: bool = False,
) -> Dict:
    """CUHK-SYSU person search: mAP and top-k over all queries.

    Args:
        query_feats: ``(Q, D)`` features of the query boxes (normalised here).
        query_image_ids: the image of each query (never part of its own gallery).
        gallery_dets: ``{image_id: (dets (N,5) x1,y1,x2,y2,score, feats (N,D))}`` or a
            prebuilt :class:`SearchGallery` (then ``det_thresh`` is the one it was built with).
        protocol: per query, the ``TestG<N>`` gallery, either a list of ``(gallery image_id,
            gt box x1y1x2y2 or None)`` (the query appears in the images with a box) or a dict
            ``{"gallery_image_ids": [...], "gallery_gt": {image_id: box x1y1x2y2}}`` (the
            format of ``load_cuhk_sysu_protocol``).
        det_thresh: detections with ``score >= det_thresh`` are kept.
        topk: ranks reported as ``top-k``.
        full_set: gallery = every image of ``gallery_dets`` except the query's own; positives
            still come from ``protocol`` (every TestG list holds all of a query's images).
        rcp: ``(b, lam)`` for Ranking with Context Persons, or None.
        query_context_feats: per query ``(N_i, D)`` context-person features (for ``rcp``).
        query_ids: optional ids copied into the per-query records.
        record_topn: length of the ranked list kept in each record.

    Returns:
        ``{"mAP", "top-1", "top-5", "top-10", "num_queries", "records": [per query dict]}``.
    """
    gallery = as_search_gallery(gallery_dets, det_thresh)
    if len(protocol) != len(query_image_ids):
        raise ValueError(
            f"protocol has {len(protocol)} queries, query_image_ids {len(query_image_ids)}"
        )
    all_images = np.arange(len(gallery))

    def plan(q: int) -> QueryPlan:
        what = f"CUHK-SYSU protocol of query {q} ('{query_image_ids[q]}')"
        own_name = query_image_ids[q]
        p = protocol[q]
        if isinstance(p, Mapping):  # {"gallery_image_ids": [...], "gallery_gt": {id: box}}
            try:
                names, gt = p["gallery_image_ids"], p.get("gallery_gt") or {}
            except KeyError as e:
                raise KeyError(f"{what}: a dict entry needs 'gallery_image_ids'") from e
            pos_entries = [(n, b) for n, b in gt.items() if n != own_name]
        else:  # [(image_id, box or None), ...]
            pos_entries = [e for e in p if e[1] is not None and np.size(e[1]) and e[0] != own_name]
            names = None if full_set else [e[0] for e in p]
        pos_images = gallery.indices([e[0] for e in pos_entries], what)
        if full_set:
            own = gallery.index.get(own_name, -1)
            images = all_images[all_images != own]
        else:
            images = np.sort(gallery.indices([n for n in names if n != own_name], what))
            if images.size > 1 and np.any(images[1:] == images[:-1]):
                raise ValueError(f"{what}: an image is listed twice")
            at = np.minimum(np.searchsorted(images, pos_images), max(images.size - 1, 0))
            if pos_images.size and (images.size == 0 or np.any(images[at] != pos_images)):
                raise ValueError(f"{what}: a gt image is not in the gallery list")
        return QueryPlan(images, pos_images, _boxes_of(pos_entries, what))

    options = SearchOptions(
        topk, rcp, query_context_feats, query_ids, record_topn, chunk_size, progress
    )
    return rank_queries(gallery, query_feats, query_image_ids, plan, options)


def search_gallery_curve(
    query_feats,
    query_image_ids: Sequence[str],
    gallery_dets,
    protocols: Mapping[int, Optional[Sequence[Sequence[GalleryEntry]]]],
    *,
    det_thresh: float = 0.5,
    **kwargs,
) -> Dict[int, float]:
    """mAP for each gallery size whose protocol exists (``protocols[size]`` not None).

    ``kwargs`` go to :func:`search_cuhk_sysu`; the gallery is indexed once for all sizes.
    Returns ``{size: mAP}`` in increasing size order.
    """
    gallery_dets = as_search_gallery(gallery_dets, det_thresh)
    kwargs["record_topn"] = 0
    out = {}
    for size in sorted(protocols):
        if protocols[size] is None:
            continue
        res = search_cuhk_sysu(
            query_feats, query_image_ids, gallery_dets, protocols[size], **kwargs
        )
        out[int(size)] = res["mAP"]
    return out


def search_prw(
    query_feats,
    query_image_ids: Sequence[str],
    query_pids: Sequence[int],
    query_camids: Sequence[int],
    gallery_dets,
    gallery_annotations: Mapping[str, Mapping],
    *,
    cross_camera: bool = False,
    det_thresh: float = 0.5,
    topk: Sequence[int] = (1, 5, 10),
    rcp: Optional[Tuple[float, float]] = None,
    query_context_feats: Optional[Sequence[np.ndarray]] = None,
    query_ids: Optional[Sequence] = None,
    record_topn: int = 10,
    chunk_size: int = 256,
    progress: bool = False,
) -> Dict:
    """PRW person search: gallery = every annotated frame except the query's own.

    Args:
        gallery_annotations: ``{image_id: {"boxes": (N,4) x1y1x2y2, "pids": (N,), "camid":
            int}}`` of the gallery frames (all 6,112 test frames); each must be in
            ``gallery_dets``. Positives are the boxes with the query's pid (first one if a
            frame repeats a pid).
        cross_camera: False (default) = multi-view: same-camera frames are in the gallery;
            True = only frames of other cameras (the dataset's original protocol).
        Other args as in :func:`search_cuhk_sysu`.

    Returns:
        Same dict as :func:`search_cuhk_sysu`.
    """
    gallery = as_search_gallery(gallery_dets, det_thresh)
    nq = len(query_image_ids)
    if len(query_pids) != nq or len(query_camids) != nq:
        raise ValueError("query_image_ids, query_pids and query_camids must have equal lengths")
    names = list(gallery_annotations.keys())
    ann_idx = gallery.indices(names, "PRW gallery_annotations")
    ann_cam = np.asarray([int(gallery_annotations[n].get("camid", -1)) for n in names])
    wanted = {int(p) for p in query_pids}
    if any(p < 0 for p in wanted):
        raise ValueError("search_prw: query pids must be labelled (>= 0)")
    by_pid: Dict[int, Tuple[List[int], List[np.ndarray]]] = {p: ([], []) for p in wanted}
    repeated = []
    for n, gi in zip(names, ann_idx):
        ann = gallery_annotations[n]
        pids = np.asarray(ann["pids"]).ravel()
        boxes = np.asarray(ann["boxes"], dtype=np.float64).reshape(-1, 4)
        if pids.size != boxes.shape[0]:
            raise ValueError(
                f"gallery_annotations['{n}']: {boxes.shape[0]} boxes, {pids.size} pids"
            )
        for p in wanted.intersection(pids.tolist()):
            if np.count_nonzero(pids == p) > 1:
                repeated.append((n, p))
            box = boxes[np.flatnonzero(pids == p)[0]]
            if box[2] <= box[0] or box[3] <= box[1]:
                # its IoU threshold min(0.5, wh / ((w+10)(h+10))) would be 0: any detection
                # of the frame would match it
                raise ValueError(
                    f"gallery_annotations['{n}']: box {box.tolist()} of pid {p} has zero width "
                    "or height (x1,y1,x2,y2 with x2 > x1 and y2 > y1 expected)"
                )
            by_pid[p][0].append(gi)
            by_pid[p][1].append(box)
    if repeated:
        logger.warning(
            "PRW: %d frames repeat a query pid (e.g. %s); the first box of each is used",
            len(repeated),
            repeated[:3],
        )
    by_pid_arr = {
        p: (np.asarray(i, np.int64), np.asarray(b, np.float64).reshape(-1, 4))
        for p, (i, b) in by_pid.items()
    }
    order = np.argsort(ann_idx)
    ann_idx, ann_cam = ann_idx[order], ann_cam[order]
    cam_of = dict(zip(ann_idx.tolist(), ann_cam.tolist()))

    def plan(q: int) -> QueryPlan:
        own = gallery.index.get(query_image_ids[q], -1)
        keep = ann_idx != own
        pos_i, pos_b = by_pid_arr[int(query_pids[q])]
        pkeep = pos_i != own
        if cross_camera:
            cam = int(query_camids[q])
            if cam < 0:
                raise ValueError(f"cross_camera needs the camid of query {q}, got {cam}")
            keep &= ann_cam != cam
            pkeep &= np.asarray([cam_of[i] != cam for i in pos_i.tolist()], bool).reshape(-1)
        return QueryPlan(ann_idx[keep], pos_i[pkeep], pos_b[pkeep])

    options = SearchOptions(
        topk, rcp, query_context_feats, query_ids, record_topn, chunk_size, progress
    )
    return rank_queries(gallery, query_feats, query_image_ids, plan, options)
