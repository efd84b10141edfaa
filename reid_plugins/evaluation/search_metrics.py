"""Person-search metric maths: CUHK-SYSU / PRW search protocols, detection quality, RCP.

Pure functions over numpy arrays (no model, no dataset object); wrapped by
:class:`~reid_plugins.evaluation.person_search_evaluation.PersonSearchEvaluator`.
All boxes are ``x1, y1, x2, y2`` in original image pixels (continuous coordinates, no ``+1``);
similarities are cosine (dot products of L2-normalised features). Metrics are fractions in
``[0, 1]`` here (the evaluator reports percentages).

Protocol decisions (see ``/work/shared/specs/evaluation.md``):

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
from contextlib import nullcontext
from typing import Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
from tqdm import tqdm

try:  # small per-query BLAS calls are much faster single-threaded (no thread wake-ups)
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - optional
    threadpool_limits = None

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

GalleryDets = Mapping[str, Tuple[np.ndarray, np.ndarray]]
GalleryEntry = Tuple[str, Optional[Sequence[float]]]


def iou_threshold(w, h):
    """CUHK-SYSU/PRW matching threshold ``min(0.5, w*h / ((w+10)*(h+10)))`` for a gt ``w x h``.

    Accepts scalars (returns a float) or arrays (element-wise).
    """
    w = np.asarray(w, dtype=np.float64)
    h = np.asarray(h, dtype=np.float64)
    thr = np.minimum(0.5, w * h / ((w + 10.0) * (h + 10.0)))
    return float(thr) if thr.ndim == 0 else thr


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``a (N,4)`` and ``b (M,4)`` x1y1x2y2 boxes -> ``(N, M)`` float64."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _iou_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise IoU of ``a (N,4)`` with ``b (N,4)``."""
    lt = np.maximum(a[:, :2], b[:, :2])
    rb = np.minimum(a[:, 2:], b[:, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = union - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def average_precision(y_true, y_score) -> float:
    """Non-interpolated AP, equal to ``sklearn.metrics.average_precision_score``.

    ``AP = sum_n (R_n - R_{n-1}) * P_n`` over the distinct score thresholds (tied scores form
    one threshold). Returns 0.0 when ``y_true`` has no positive.
    """
    y_true = np.asarray(y_true).ravel().astype(bool)
    y_score = np.asarray(y_score, dtype=np.float64).ravel()
    if y_true.shape != y_score.shape:
        raise ValueError(f"average_precision: y_true {y_true.shape} vs y_score {y_score.shape}")
    if not np.all(np.isfinite(y_score)):
        raise ValueError("average_precision: y_score contains NaN or inf")
    n_pos = int(y_true.sum())
    if n_pos == 0:
        return 0.0
    order = np.argsort(-y_score, kind="mergesort")
    s, t = y_score[order], y_true[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each tie group
    tps = np.cumsum(t)[last]
    precision = tps / (last + 1.0)
    recall = tps / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _ap_of_positives(pos_scores: np.ndarray, all_scores: np.ndarray) -> float:
    """AP given the positives' scores and all scores (positives included), without sorting.

    Equals :func:`average_precision`: each positive contributes
    ``#(positives >= s) / #(all >= s)`` at its score ``s``; the mean over positives is the AP.
    """
    ps = np.sort(pos_scores)
    k = ps.size
    if k <= 16:  # a few positives: direct counting beats a searchsorted over all scores
        ge_all = np.array([np.count_nonzero(all_scores >= p) for p in ps])
        return float(np.mean((k - np.searchsorted(ps, ps, side="left")) / ge_all))
    # slot[i] = number of positive thresholds <= all_scores[i]
    slot = np.searchsorted(ps, all_scores, side="right")
    hist = np.bincount(slot, minlength=k + 1)
    ge_all = np.cumsum(hist[::-1])[::-1][1:]  # ge_all[j] = #(all >= ps[j])
    ge_pos = k - np.searchsorted(ps, ps, side="left")
    return float(np.mean(ge_pos / ge_all))


def _l2n(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


# --------------------------------------------------------------------------------------------
# RCP (TDN Eq. 6-8)
# --------------------------------------------------------------------------------------------
class RCPResult(NamedTuple):
    """RCP on one gallery image: candidate index and its scores."""

    index: int  # g = argmax_j S_I(q, g_j) (first on ties)
    score: float  # S = S_I + lam * S_C (Eq. 8)
    s_individual: float  # S_I(q, g)
    s_context: float  # S_C (Eq. 7)


def _check_rcp(b: float, lam: float) -> None:
    if not b >= 0:
        raise ValueError(f"RCP threshold b must be >= 0 (TDN Eq. 6), got {b}")
    if not lam >= 0:
        raise ValueError(f"RCP weight lambda must be >= 0 (TDN Eq. 8), got {lam}")


def rcp_rescore(query_feat, context_feats, gallery_image_feats, b: float = 0.3, lam: float = 0.2):
    """Ranking with Context Persons for one query and one gallery image (TDN Eq. 6-8).

    Args:
        query_feat: ``(D,)`` feature of the query person q.
        context_feats: ``(N, D)`` features of the context persons q_1..q_N (may be ``N = 0``).
        gallery_image_feats: ``(M, D)`` features of the gallery persons g_1..g_M, ``M >= 1``.
        b: confidence threshold of Eq. 6 (``>= 0``).
        lam: weight of the context score in Eq. 8.

    Returns:
        :class:`RCPResult`: ``g = argmax_j S_I(q, g_j)``; for each context person
        ``S_co = S_I(q, g) * max_j S_I(q_i, g_j)`` when that maximum is ``>= b`` else 0;
        ``S_C = sum_i S_co``; ``score = S_I(q, g) + lam * S_C``. Cosine similarities.
    """
    _check_rcp(b, lam)
    g = _l2n(np.asarray(gallery_image_feats, dtype=np.float64).reshape(-1, np.size(query_feat)))
    if g.shape[0] == 0:
        raise ValueError("rcp_rescore: the gallery image has no detection")
    q = _l2n(np.asarray(query_feat, dtype=np.float64).ravel()).astype(np.float64)
    ctx = np.asarray(context_feats, dtype=np.float64).reshape(-1, q.size)
    s_q = g.astype(np.float64) @ q
    j = int(np.argmax(s_q))
    s_i = float(s_q[j])
    s_c = 0.0
    if ctx.shape[0]:
        best = (_l2n(ctx).astype(np.float64) @ g.astype(np.float64).T).max(axis=1)
        s_c = float(np.sum(np.where(best >= b, s_i * best, 0.0)))
    return RCPResult(j, s_i + lam * s_c, s_i, s_c)


def select_context(query_box, boxes, scores, feats, det_thresh: float = 0.5, iou: float = 0.5):
    """Context persons of a query: the query image's detections with ``score >= det_thresh``
    that are not the query itself (``IoU(query_box, det) < iou``). Returns ``(N, D)`` features.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).ravel()
    feats = np.asarray(feats, dtype=np.float32)  # (0, D) when the image has no detection
    feats = feats.reshape(boxes.shape[0], -1 if boxes.shape[0] else feats.shape[-1])
    keep = scores >= det_thresh
    if boxes.shape[0]:
        keep &= box_iou(np.asarray(query_box).reshape(1, 4), boxes)[0] < iou
    return feats[keep]


# --------------------------------------------------------------------------------------------
# Gallery index and the vectorised search core
# --------------------------------------------------------------------------------------------
class SearchGallery:
    """All kept gallery detections concatenated image by image (built once, reused).

    Attributes: ``image_ids`` (list), ``index`` (image_id -> int), ``starts``/``counts`` (per
    image, into the concatenated arrays), ``boxes (T,4)``, ``scores (T,)``, ``feats (T,D)``
    (float32, L2-normalised), ``det_image (T,)`` image index of each detection.
    """

    def __init__(self, gallery_dets: GalleryDets, det_thresh: float = 0.5) -> None:
        self.det_thresh = float(det_thresh)
        self.image_ids: List[str] = list(gallery_dets.keys())
        self.index = {k: i for i, k in enumerate(self.image_ids)}
        boxes, scores, feats, counts = [], [], [], []
        dim = None
        for name, value in gallery_dets.items():
            try:
                dets, f = value
            except (TypeError, ValueError) as e:
                raise ValueError(f"gallery_dets['{name}'] must be a (dets, feats) pair") from e
            dets = np.asarray(dets, dtype=np.float32)
            dets = dets.reshape(0, 5) if dets.size == 0 else dets
            f = np.asarray(f, dtype=np.float32)
            if dets.ndim != 2 or dets.shape[1] != 5:
                raise ValueError(f"gallery_dets['{name}'] dets must be (N, 5), got {dets.shape}")
            if dets.shape[0] == 0:
                f = f.reshape(0, dim or (f.shape[-1] if f.ndim == 2 else 0))
            if f.ndim != 2 or f.shape[0] != dets.shape[0]:
                raise ValueError(
                    f"gallery_dets['{name}'] feats must be ({dets.shape[0]}, D), got {f.shape}"
                )
            if f.shape[1]:  # also (0, D): keeps D when no image has a detection
                if dim is not None and f.shape[1] != dim:
                    raise ValueError(f"gallery_dets['{name}'] feature dim {f.shape[1]} != {dim}")
                dim = f.shape[1]
            keep = dets[:, 4] >= det_thresh
            boxes.append(dets[keep, :4])
            scores.append(dets[keep, 4])
            feats.append(f[keep])
            counts.append(int(keep.sum()))
        self.dim = dim or 0
        self.counts = np.asarray(counts, dtype=np.int64)
        self.starts = np.r_[0, np.cumsum(self.counts)[:-1]].astype(np.int64)
        total = int(self.counts.sum())
        self.boxes = np.concatenate(boxes).astype(np.float64) if total else np.zeros((0, 4))
        self.scores = np.concatenate(scores) if total else np.zeros(0, np.float32)
        feats = [f for f in feats if f.shape[0]]
        self.feats = _l2n(np.concatenate(feats)) if total else np.zeros((0, self.dim), np.float32)
        self.det_image = np.repeat(np.arange(len(self.image_ids)), self.counts)

    def __len__(self) -> int:
        return len(self.image_ids)

    def indices(self, image_ids: Sequence[str], what: str) -> np.ndarray:
        """Image indices of ``image_ids``; a clear KeyError for images without predictions."""
        try:
            return np.fromiter((self.index[k] for k in image_ids), np.int64, len(image_ids))
        except KeyError as e:
            missing = [k for k in image_ids if k not in self.index]
            raise KeyError(
                f"{what}: {len(missing)} gallery image(s) have no predictions, e.g. "
                f"{missing[:5]}; every protocol gallery image must be in gallery_dets"
            ) from e


class _Plan(NamedTuple):
    """One query's gallery: sorted image indices, positive images and their gt boxes."""

    images: np.ndarray
    pos_images: np.ndarray
    pos_boxes: np.ndarray


def _expand(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + c)`` for each pair (vectorised)."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    offsets = np.cumsum(counts) - counts
    return np.repeat(starts - offsets, counts) + np.arange(total)


def _topn_stable(y: np.ndarray, n: int) -> np.ndarray:
    """Positions of the ``n`` largest values, descending, ties by position."""
    if y.size <= n:
        return np.argsort(-y, kind="stable")
    v = y[np.argpartition(-y, n - 1)[:n]].min()
    cand = np.flatnonzero(y >= v)
    return cand[np.argsort(-y[cand], kind="stable")][:n]


def _rcp_inplace(y: np.ndarray, ctx: np.ndarray, cnt: np.ndarray, b: float, lam: float) -> None:
    """Eq. 6-8 on every image segment of ``y`` (segments of ``cnt`` > 0 detections, in order):
    the candidate (first argmax of ``y``) becomes ``S_I * (1 + lam * sum_i best_i [best_i >= b])``
    where ``best_i`` is context person i's best similarity in the image (``ctx (N, n)``)."""
    seg = np.r_[0, np.cumsum(cnt)[:-1]]
    seg_id = np.repeat(np.arange(cnt.size), cnt)
    is_max = np.flatnonzero(y == np.maximum.reduceat(y, seg)[seg_id])
    cand = is_max[np.r_[True, np.diff(seg_id[is_max]) != 0]]
    best = np.maximum.reduceat(ctx, seg, axis=1).astype(np.float64)
    weight = np.where(best >= b, best, 0.0).sum(axis=0)
    y[cand] = y[cand] * (1.0 + lam * weight)


def _positives(gallery: SearchGallery, plan: _Plan, idx: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Local positions (into ``idx``/``y``) of the positive of each gt image: among the
    detections passing the IoU rule, the highest ``y`` (first on ties)."""
    n_gt = plan.pos_images.size
    if n_gt == 0 or y.size == 0:
        return np.zeros(0, np.int64)
    pcnt = gallery.counts[plan.pos_images]
    gidx = _expand(gallery.starts[plan.pos_images], pcnt)
    owner = np.repeat(np.arange(n_gt), pcnt)
    gt = plan.pos_boxes[owner]
    thr = iou_threshold(gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1])
    ok = _iou_rows(gallery.boxes[gidx], gt) >= thr
    local = np.searchsorted(idx, gidx[ok])  # idx is sorted
    own = owner[ok]
    order = np.lexsort((local, -y[local], own))
    if order.size == 0:
        return np.zeros(0, np.int64)
    return local[order][np.r_[True, np.diff(own[order]) != 0]]


def _search(
    gallery: SearchGallery,
    query_feats,
    plan_fn: Callable[[int], _Plan],
    *,
    query_image_ids: Sequence[str],
    topk: Sequence[int],
    rcp: Optional[Tuple[float, float]],
    contexts: Optional[Sequence[np.ndarray]],
    query_ids: Optional[Sequence] = None,
    record_topn: int = 10,
    chunk_size: int = 256,
    progress: bool = False,
) -> Dict:
    q_all = _l2n(np.asarray(query_feats, dtype=np.float32))
    nq = len(query_image_ids)
    if q_all.ndim != 2 or q_all.shape[0] != nq:
        raise ValueError(f"query_feats must be ({nq}, D), got {q_all.shape}")
    if gallery.feats.shape[0] and q_all.shape[1] != gallery.dim:
        raise ValueError(f"query feature dim {q_all.shape[1]} != gallery dim {gallery.dim}")
    if rcp is not None:
        b, lam = map(float, rcp)
        _check_rcp(b, lam)
        if contexts is None:
            raise ValueError("rcp is on but query_context_feats is None")
        if len(contexts) != nq:
            raise ValueError(f"query_context_feats has {len(contexts)} entries, expected {nq}")
        contexts = [_l2n(np.asarray(c, np.float32).reshape(-1, q_all.shape[1])) for c in contexts]
    topk = tuple(int(k) for k in topk)
    T = gallery.feats.shape[0]
    aps = np.zeros(nq)
    hits = np.zeros((nq, len(topk)), dtype=bool)
    records = []
    bar = tqdm(total=nq, desc="person search", disable=not progress, leave=False)
    for c0 in range(0, nq, chunk_size):
        qs = range(c0, min(nq, c0 + chunk_size))
        plans = [plan_fn(q) for q in qs]
        det_idx = [_expand(gallery.starts[p.images], gallery.counts[p.images]) for p in plans]
        # dense: one matmul of the chunk against every gallery detection; sparse: per query,
        # gather the query's detections (small products, run single-threaded)
        dense = T > 0 and sum(d.size for d in det_idx) > 0.25 * len(plans) * T
        if dense:
            sims = q_all[c0 : c0 + len(plans)] @ gallery.feats.T
            if rcp is not None:
                ctx_rows = np.cumsum([0] + [contexts[q].shape[0] for q in qs])
                ctx_all = np.concatenate([contexts[q] for q in qs]) @ gallery.feats.T
        single = threadpool_limits is not None and not dense
        with threadpool_limits(limits=1, user_api="blas") if single else nullcontext():
            for i, q in enumerate(qs):
                plan, idx = plans[i], det_idx[i]
                f = None if dense else gallery.feats[idx]
                y = (sims[i, idx] if dense else f @ q_all[q]).astype(np.float64)
                if rcp is not None and y.size and contexts[q].shape[0]:
                    ctx = (
                        ctx_all[ctx_rows[i] : ctx_rows[i + 1]][:, idx]
                        if dense
                        else (f @ contexts[q].T).T
                    )
                    cnt = gallery.counts[plan.images]
                    _rcp_inplace(y, ctx, cnt[cnt > 0], b, lam)
                pos = _positives(gallery, plan, idx, y)
                n_gt = plan.pos_images.size
                if pos.size:
                    ps = y[pos]
                    aps[q] = _ap_of_positives(ps, y) * pos.size / n_gt
                    top = ps.max()
                    p_best = pos[ps == top].min()
                    rank = np.count_nonzero(y > top) + np.count_nonzero(y[:p_best] == top)
                    hits[q] = rank < np.asarray(topk)
                rec = {
                    "query_index": q,
                    "query_image_id": query_image_ids[q],
                    "ap": float(aps[q]),
                    "num_gt": int(n_gt),
                    "num_found": int(pos.size),
                    "recall_rate": float(pos.size / n_gt) if n_gt else 0.0,
                    **{f"top-{k}": bool(h) for k, h in zip(topk, hits[q])},
                }
                if query_ids is not None:
                    rec["query_id"] = query_ids[q]
                if record_topn > 0:
                    pos_set = set(pos.tolist())
                    rec["top"] = [
                        {
                            "image_id": gallery.image_ids[gallery.det_image[idx[p]]],
                            "box": gallery.boxes[idx[p]].tolist(),
                            "score": float(y[p]),
                            "correct": p in pos_set,
                        }
                        for p in _topn_stable(y, record_topn)
                    ]
                records.append(rec)
        bar.update(len(plans))
    bar.close()
    out = {"mAP": float(aps.mean()) if nq else 0.0}
    for j, k in enumerate(topk):
        out[f"top-{k}"] = float(hits[:, j].mean()) if nq else 0.0
    out["num_queries"] = nq
    out["records"] = records
    return out


def _boxes_of(entries: Sequence[GalleryEntry], what: str) -> np.ndarray:
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
    gallery = gallery_dets if isinstance(gallery_dets, SearchGallery) else None
    gallery = gallery or SearchGallery(gallery_dets, det_thresh)
    if len(protocol) != len(query_image_ids):
        raise ValueError(
            f"protocol has {len(protocol)} queries, query_image_ids {len(query_image_ids)}"
        )
    all_images = np.arange(len(gallery))

    def plan(q: int) -> _Plan:
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
        return _Plan(images, pos_images, _boxes_of(pos_entries, what))

    return _search(
        gallery,
        query_feats,
        plan,
        query_image_ids=query_image_ids,
        topk=topk,
        rcp=rcp,
        contexts=query_context_feats,
        query_ids=query_ids,
        record_topn=record_topn,
        chunk_size=chunk_size,
        progress=progress,
    )


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
    if not isinstance(gallery_dets, SearchGallery):
        gallery_dets = SearchGallery(gallery_dets, det_thresh)
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
    gallery = gallery_dets if isinstance(gallery_dets, SearchGallery) else None
    gallery = gallery or SearchGallery(gallery_dets, det_thresh)
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

    def plan(q: int) -> _Plan:
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
        return _Plan(ann_idx[keep], pos_i[pkeep], pos_b[pkeep])

    return _search(
        gallery,
        query_feats,
        plan,
        query_image_ids=query_image_ids,
        topk=topk,
        rcp=rcp,
        contexts=query_context_feats,
        query_ids=query_ids,
        record_topn=record_topn,
        chunk_size=chunk_size,
        progress=progress,
    )


# --------------------------------------------------------------------------------------------
# Detection quality
# --------------------------------------------------------------------------------------------
def detection_recall_ap(
    gt_boxes: Mapping[str, np.ndarray],
    dets: Mapping[str, np.ndarray],
    *,
    iou_thresh: float = 0.5,
    det_thresh: float = 0.0,
    gt_pids: Optional[Mapping[str, np.ndarray]] = None,
    labeled_only: bool = False,
) -> Dict[str, float]:
    """Person-detection recall and AP with one-to-one greedy matching.

    In every image, detections (``score >= det_thresh``) are visited by decreasing score
    (stable); each takes the still-unmatched gt box with the highest IoU if that IoU is
    ``>= iou_thresh`` (true positive), else it is a false positive. ``recall = #TP / #gt`` and
    ``AP = average_precision(y_true, y_score) * recall`` over all detections of all images
    (the non-interpolated area under the PR curve with recall relative to all gt boxes).

    ``labeled_only``: gt boxes with a negative pid (unlabelled persons) are still matched but
    are "ignore" boxes: a detection matched to one is neither a TP nor a FP, and they are not in
    the recall denominator. Needs ``gt_pids``.

    Returns:
        ``{"recall", "AP", "num_gt", "num_tp", "num_det"}`` (fractions in [0, 1]).
    """
    if set(gt_boxes) != set(dets):
        only_gt = sorted(set(gt_boxes) - set(dets))[:5]
        only_det = sorted(set(dets) - set(gt_boxes))[:5]
        raise KeyError(
            f"detection_recall_ap: image sets differ (only gt: {only_gt}, only dets: {only_det})"
        )
    if labeled_only and gt_pids is None:
        raise ValueError("detection_recall_ap(labeled_only=True) needs gt_pids")
    y_true, y_score, n_gt = [], [], 0
    for name, gt in gt_boxes.items():
        gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
        labelled = np.ones(gt.shape[0], bool)
        if labeled_only:
            labelled = np.asarray(gt_pids[name]).ravel() >= 0
            if labelled.size != gt.shape[0]:
                raise ValueError(
                    f"gt_pids['{name}'] has {labelled.size} pids for {gt.shape[0]} boxes"
                )
        n_gt += int(labelled.sum())
        d = np.asarray(dets[name], dtype=np.float64).reshape(-1, 5)
        d = d[d[:, 4] >= det_thresh]
        d = d[np.argsort(-d[:, 4], kind="stable")]
        ious = box_iou(d[:, :4], gt)
        free = np.ones(gt.shape[0], bool)
        for j in range(d.shape[0]):
            cand = np.where(free, ious[j], -1.0)
            m = int(np.argmax(cand)) if gt.shape[0] else -1
            if m >= 0 and cand[m] >= iou_thresh:
                free[m] = False
                if not labelled[m]:
                    continue  # matched to an ignored (unlabelled) person
                y_true.append(True)
            else:
                y_true.append(False)
            y_score.append(d[j, 4])
    n_tp = int(np.sum(y_true))
    recall = n_tp / n_gt if n_gt else 0.0
    ap = average_precision(y_true, y_score) * recall if n_tp else 0.0
    return {"recall": recall, "AP": ap, "num_gt": n_gt, "num_tp": n_tp, "num_det": len(y_true)}
