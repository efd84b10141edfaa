"""``PersonSearchEvaluator``: CUHK-SYSU / PRW person search, detection quality and RCP.

Model contract (what a person-search meta-architecture must implement for evaluation):

* **Gallery pass** -- ``model(inputs)`` in eval mode, ``inputs`` = scene dicts (record fields
  incl. ``"image_id"``, ``"height"``, ``"width"``, ``"image"``; gallery records also carry
  the annotation ``"boxes"`` (N,4 original coordinates), ``"pids"`` and ``"camid"``). One
  output per input::

      {"boxes": (N, 4) float tensor, x1y1x2y2 in ORIGINAL image coordinates,
       "scores": (N,) person scores, "features": (N, D) re-ID features}

  Return every detection the model keeps; the evaluator keeps the features of those with
  ``score >= det_thresh`` (search) and the boxes of those with ``score >=`` the lowest
  detection-quality threshold (detection AP/recall).
* **Query pass** -- ``model.extract_query(inputs)`` (falls back to ``model(inputs)`` when the
  model has no ``extract_query``; the inputs then carry ``"query_box"`` so the model can tell).
  ``inputs`` = scene dicts of the query images plus ``"query_box"`` (4,) x1y1x2y2 in ORIGINAL
  coordinates (the model rescales it like its own boxes) and ``"query_index"`` (position in
  the evaluator's ``queries``; without it the query is found by ``(image_id, query_pid)``).
  One output per input::

      {"query_feature": (D,) or (1, D) feature of the given query box,
       # optional, for RCP context persons (else the gallery pass of the same image is used):
       "boxes": (N, 4), "scores": (N,), "features": (N, D)  detections of the query image}

  Context persons of a query = the query image's detections with ``score >= det_thresh``
  whose IoU with the query box is < 0.5 (i.e. not the query itself).
* Features need not be L2-normalised (similarities are cosine; the evaluator normalises).
  Records without ``"query_index"`` are matched by ``(image_id, query_pid)``, unique in
  CUHK-SYSU and PRW.

Queries can also be fed without a model through :meth:`PersonSearchEvaluator.add_query`.
:func:`run_person_search_inference` runs both passes and evaluates.

Detection quality uses the gallery gt (``"boxes"``/``"pids"`` of the gallery inputs) at IoU
``detection_iou``, by default with the matching rule of the OIM/SeqNet reference evaluation
(``detection_matching="greedy"``: the former greedy rule), at every score threshold of
``detection_thresholds`` (default 0.01, the threshold of the reference) and at ``det_thresh``;
"labeled" = persons with pid >= 0 (see
:func:`~reid_plugins.evaluation.detection_metrics.detection_recall_ap`).

Results (percentages 0-100; ``T`` = a threshold written with ``%g``, e.g. ``AP@0.01``)::

    {"search": {"mAP", "top-1", "top-5", "top-10", "det_thresh" (raw value, not a %)},
     "search_without_rcp": {same keys as "search"},  # with RCP: the ranking without context
     "detection": {"recall@T", "AP@T", "recall_labeled@T", "AP_labeled@T"},  # needs gallery gt
     "search_gallery_curve": {size: mAP}}                                     # CUHK-SYSU

With RCP, ``"search"`` ranks with context persons and ``"search_without_rcp"`` ranks the same
features without them (one more ranking, no more inference): RCP's own effect in every run.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..utils import comm
from .detection_metrics import DETECTION_MATCHING
from .evaluator import DatasetEvaluator, inference_context
from .search_metrics import (
    SearchGallery,
    detection_recall_ap,
    search_cuhk_sysu,
    search_gallery_curve,
    search_prw,
    select_context,
)

__all__ = ["PersonSearchEvaluator", "run_person_search_inference"]

logger = logging.getLogger(__name__)

_PROTOCOLS = ("cuhk_sysu", "prw")


def _np(x, dtype=np.float32) -> np.ndarray:
    """Tensor (any device / float dtype, incl. half) or array-like -> numpy ``dtype``."""
    if isinstance(x, torch.Tensor):
        x = x.detach()
        x = x.float() if x.is_floating_point() else x
        return x.cpu().numpy().astype(dtype, copy=False)
    return np.asarray(x, dtype=dtype)


class PersonSearchEvaluator(DatasetEvaluator):
    """Person-search evaluator (see the module docstring for the model contract).

    Args (keyword-only):
        dataset_name: registered name of the gallery scene set (for logs / from_config).
        queries: per query a dict ``{"image_id": str, "query_box": (4,) x1y1x2y2, "query_pid":
            int, "camid": int (-1 unknown), "gallery": [(image_id, gt box x1y1x2y2 or None),
            ...]}``; ``"gallery"`` (the TestG<N> list) is required for CUHK-SYSU, unused by PRW.
            The ``load_cuhk_sysu_protocol`` dicts (``"query_image_id"``, ``"query_box"``,
            ``"query_pid"``, ``"gallery_image_ids"``, ``"gallery_gt"``) are accepted as well;
            PRW query records (``prw_query``) can be passed as they are.
        protocol: ``"cuhk_sysu"`` or ``"prw"``.
        query_dataset_name: registered name of the query set (logs only).
        gallery_size: CUHK-SYSU gallery size of ``queries[i]["gallery"]`` (logged); ``-1`` =
            full set (all gallery images except the query's).
        det_thresh: search uses the detections with ``score >= det_thresh``; detection
            quality is also reported at this threshold.
        rcp: ``(b, lam)`` to rank with context persons (TDN Eq. 6-8), or None.
        cross_camera: PRW only: gallery = other cameras' frames (default multi-view).
        gallery_curve: CUHK-SYSU ``{size: [per-query gallery]}`` for the mAP curve, aligned
            with ``queries``; a per-query gallery is a ``[(image_id, box or None)]`` list or a
            dict with ``"gallery_image_ids"``/``"gallery_gt"`` (``load_cuhk_sysu_protocol``).
        gallery_annotations: ``{image_id: {"boxes", "pids", "camid"}}``; default: taken from
            the gallery inputs' ``"boxes"``/``"pids"``/``"camid"``.
        topk: reported ranks.
        detection_iou: IoU of the detection-quality metrics.
        detection_thresholds: further score thresholds of the detection metrics (default
            0.01, the reference's).
        detection_matching: ``"standard"`` (OIM/SeqNet reference rule) or ``"greedy"``.
        output_dir: if set, ``search_results_<protocol>.json`` with per-query records (query
            image/box/pid, AP, top-10 gallery image ids, boxes, scores, correct flags); with
            ``rcp`` also ``search_results_<protocol>_without_rcp.json``.
        distributed: gather predictions from all processes (rank 0 evaluates).
    """

    def __init__(
        self,
        *,
        dataset_name: str,
        queries: Sequence[Mapping],
        protocol: str = "cuhk_sysu",
        query_dataset_name: Optional[str] = None,
        gallery_size: int = 100,
        det_thresh: float = 0.5,
        rcp: Optional[Tuple[float, float]] = None,
        cross_camera: bool = False,
        gallery_curve: Optional[Mapping[int, Sequence[Sequence]]] = None,
        gallery_annotations: Optional[Mapping[str, Mapping]] = None,
        topk: Sequence[int] = (1, 5, 10),
        detection_iou: float = 0.5,
        detection_thresholds: Sequence[float] = (0.01,),
        detection_matching: str = "standard",
        output_dir: Optional[str] = None,
        distributed: bool = True,
    ) -> None:
        if protocol not in _PROTOCOLS:
            raise ValueError(f"protocol must be one of {_PROTOCOLS}, got '{protocol}'")
        self.dataset_name = dataset_name
        self.query_dataset_name = query_dataset_name
        self.protocol = protocol
        self.gallery_size = int(gallery_size)
        self.det_thresh = float(det_thresh)
        self.rcp = None if rcp is None else (float(rcp[0]), float(rcp[1]))
        self.cross_camera = bool(cross_camera)
        self.topk = tuple(int(k) for k in topk)
        self.detection_iou = float(detection_iou)
        if detection_matching not in DETECTION_MATCHING:
            raise ValueError(
                f"detection_matching (TEST.SEARCH.DETECTION_MATCHING) must be one of "
                f"{DETECTION_MATCHING}, got '{detection_matching}'"
            )
        self.detection_matching = detection_matching
        self.detection_thresholds = sorted(
            {float(t) for t in detection_thresholds} | {self.det_thresh}
        )
        self.output_dir = output_dir
        self.distributed = distributed
        self.queries = [self._check_query(i, q) for i, q in enumerate(queries)]
        if gallery_curve and protocol == "cuhk_sysu":
            for size, lists in gallery_curve.items():
                if lists is not None and len(lists) != len(self.queries):
                    raise ValueError(
                        f"gallery_curve[{size}] has {len(lists)} queries, not {len(self.queries)}"
                    )
        self.gallery_curve = dict(gallery_curve or {}) if protocol == "cuhk_sysu" else {}
        self._fixed_annotations = gallery_annotations
        self._by_key: Dict[Tuple[str, int], List[int]] = defaultdict(list)
        for i, q in enumerate(self.queries):
            self._by_key[(q["image_id"], q["query_pid"])].append(i)
        self.reset()

    def _check_query(self, i: int, q: Mapping) -> Dict:
        if "image_id" not in q and "query_image_id" in q:  # load_cuhk_sysu_protocol format
            q = dict(q, image_id=q["query_image_id"])
        for key in ("image_id", "query_box", "query_pid"):
            if key not in q:
                raise KeyError(f"queries[{i}] lacks '{key}' (has {sorted(q)})")
        gallery = q.get("gallery")
        if gallery is None and "gallery_image_ids" in q:
            gallery = {
                "gallery_image_ids": q["gallery_image_ids"],
                "gallery_gt": q.get("gallery_gt"),
            }
        if self.protocol == "cuhk_sysu" and gallery is None:
            raise KeyError(
                f"queries[{i}] lacks 'gallery' (or 'gallery_image_ids'/'gallery_gt'): the TestG "
                "list is needed by CUHK-SYSU"
            )
        box = _np(q["query_box"], np.float64).reshape(-1)
        if box.size != 4:
            raise ValueError(f"queries[{i}]['query_box'] must have 4 values, got {box.size}")
        if not (box[2] > box[0] and box[3] > box[1]):
            raise ValueError(
                f"queries[{i}] ('{q['image_id']}'): query_box {box.tolist()} has zero width or "
                "height (x1,y1,x2,y2 with x2 > x1 and y2 > y1 expected)"
            )
        return {
            "image_id": str(q["image_id"]),
            "query_box": box,
            "query_pid": int(q["query_pid"]),
            "camid": int(q.get("camid", -1)),
            "gallery": gallery,
        }

    @classmethod
    def from_config(
        cls,
        cfg,
        dataset_name: str,
        query_dataset_name: Optional[str] = None,
        *,
        queries: Optional[Sequence[Mapping]] = None,
        protocol_loader: Optional[Callable[[int], Sequence[Mapping]]] = None,
        output_dir: Optional[str] = None,
    ) -> "PersonSearchEvaluator":
        """Build from ``cfg.TEST.SEARCH`` for the gallery set ``dataset_name``.

        * protocol: ``MetadataCatalog.get(dataset_name).search_protocol`` (set when the scene
          sets are registered), else "prw" if the name contains "prw", else "cuhk_sysu".
        * CUHK-SYSU queries: ``queries``, else ``protocol_loader(TEST.SEARCH.GALLERY_SIZE)``;
          the default loader is the query set's metadata ``load_protocol`` (i.e.
          ``load_cuhk_sysu_protocol(root, size)``, format ``{"query_image_id", "query_box",
          "query_pid", "gallery_image_ids", "gallery_gt"}``).
        * PRW queries: ``queries``, else the records of ``query_dataset_name``.
        * gallery-size curve (CUHK-SYSU): ``protocol_loader(n)`` for each n of
          ``TEST.SEARCH.GALLERY_CURVE`` that exists (the query metadata's ``gallery_sizes``
          when known; sizes that fail to load are skipped with a warning).
        """
        from ..data.catalog import DatasetCatalog, MetadataCatalog

        s = cfg.TEST.SEARCH
        protocol = MetadataCatalog.get(dataset_name).get("search_protocol") or (
            "prw" if "prw" in dataset_name.lower() else "cuhk_sysu"
        )
        size = int(s.GALLERY_SIZE)
        available = None
        if protocol == "cuhk_sysu" and protocol_loader is None:
            if query_dataset_name is None:
                raise ValueError(
                    "CUHK-SYSU needs protocol_loader= or query_dataset_name (whose metadata has "
                    "load_protocol)"
                )
            qmeta = MetadataCatalog.get(query_dataset_name)
            if "load_protocol" not in qmeta:
                DatasetCatalog.get(query_dataset_name)  # loading the records sets the metadata
            if "load_protocol" not in qmeta:
                raise KeyError(
                    f"Metadata of '{query_dataset_name}' has no 'load_protocol'; pass "
                    "protocol_loader= to PersonSearchEvaluator.from_config"
                )
            protocol_loader = qmeta.load_protocol
            available = qmeta.get("gallery_sizes")
        if queries is None and protocol == "cuhk_sysu":
            queries = protocol_loader(size)
        if queries is None:
            if query_dataset_name is None:
                raise ValueError(
                    "PersonSearchEvaluator.from_config needs queries or query_dataset_name"
                )
            queries = DatasetCatalog.get(query_dataset_name)
        curve = {}
        if protocol == "cuhk_sysu":
            for n in s.GALLERY_CURVE:
                if available is not None and int(n) not in available:
                    continue
                try:
                    curve[int(n)] = protocol_loader(int(n))
                except (OSError, KeyError, ValueError) as e:
                    logger.warning("Gallery-size curve: size %s skipped (%s)", n, e)
        return cls(
            dataset_name=dataset_name,
            queries=queries,
            protocol=protocol,
            query_dataset_name=query_dataset_name,
            gallery_size=size,
            det_thresh=s.DET_THRESH,
            rcp=(s.RCP.B, s.RCP.LAMBDA) if s.RCP.ENABLED else None,
            cross_camera=s.CROSS_CAMERA,
            gallery_curve=curve,
            detection_iou=s.DETECTION_IOU,
            detection_thresholds=s.DETECTION_THRESHOLDS,
            detection_matching=s.DETECTION_MATCHING,
            output_dir=output_dir if output_dir is not None else cfg.OUTPUT_DIR,
        )

    # ---------------------------------------------------------------------------------------
    def reset(self) -> None:
        self._dets: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
        self._det_boxes: Dict[str, np.ndarray] = {}
        self._annotations: Dict[str, Dict] = {}
        self._query_feats: Dict[int, np.ndarray] = {}
        self._query_dets: Dict[int, Tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._query_ctx: Dict[int, np.ndarray] = {}

    def process(self, inputs: List[dict], outputs: List[dict]) -> None:
        """Store the gallery detections (and gt annotations) of one batch."""
        for inp, out in zip(inputs, outputs):
            name = str(inp["image_id"])
            for key in ("boxes", "scores", "features"):
                if key not in out:
                    raise KeyError(f"model output for gallery image '{name}' lacks '{key}'")
            boxes = _np(out["boxes"]).reshape(-1, 4)
            scores = _np(out["scores"]).reshape(-1)
            feats = _np(out["features"])  # (0, D) when nothing was detected
            feats = feats.reshape(boxes.shape[0], -1 if boxes.shape[0] else feats.shape[-1])
            if scores.shape[0] != boxes.shape[0]:
                raise ValueError(
                    f"image '{name}': {boxes.shape[0]} boxes but {scores.shape[0]} scores"
                )
            keep = scores >= self.det_thresh  # search uses only these: store no more
            self._dets[name] = (np.c_[boxes[keep], scores[keep]], feats[keep])
            low = scores >= self.detection_thresholds[0]
            self._det_boxes[name] = np.c_[boxes[low], scores[low]]
            if "boxes" in inp:
                gt = _np(inp["boxes"], np.float64).reshape(-1, 4)
                pids = _np(inp.get("pids", -np.ones(len(gt))), np.int64).reshape(-1)
                self._annotations[name] = {
                    "boxes": gt,
                    "pids": pids,
                    "camid": int(inp.get("camid", -1)),
                }

    def _query_index(self, inp: Mapping) -> int:
        if "query_index" in inp:
            idx = int(inp["query_index"])
            if not 0 <= idx < len(self.queries):
                raise IndexError(f"query_index {idx} out of range (0..{len(self.queries) - 1})")
            return idx
        key = (str(inp.get("image_id")), int(inp.get("query_pid", -(10**9))))
        found = self._by_key.get(key, [])
        if len(found) != 1:
            raise KeyError(
                f"query input {key} (image_id, query_pid) matches {len(found)} queries; "
                "give 'query_index' in the query inputs"
            )
        return found[0]

    def process_queries(self, inputs: List[dict], outputs: List[dict]) -> None:
        """Store query features (and query-image detections for RCP) of one batch."""
        for inp, out in zip(inputs, outputs):
            idx = self._query_index(inp)
            if "query_feature" not in out:
                raise KeyError(f"query output {idx} lacks 'query_feature' (keys: {sorted(out)})")
            feat = _np(out["query_feature"])
            if feat.ndim == 2 and feat.shape[0] != 1:
                raise ValueError(
                    f"query {idx}: 'query_feature' must be (D,) or (1, D), got {feat.shape}"
                )
            self._query_feats[idx] = feat.reshape(-1)
            if "boxes" in out:
                if "scores" not in out or "features" not in out:
                    raise KeyError(f"query output {idx} has 'boxes' but no 'scores'/'features'")
                boxes = _np(out["boxes"]).reshape(-1, 4)
                feats = _np(out["features"])  # (0, D) when nothing was detected
                feats = feats.reshape(boxes.shape[0], -1 if boxes.shape[0] else feats.shape[-1])
                self._query_dets[idx] = (boxes, _np(out["scores"]).reshape(-1), feats)

    def add_query(self, query_index: int, feature, context_feats=None) -> None:
        """Explicit API: the feature of query ``query_index`` and optionally its context
        persons' features ``(N, D)`` (used as given by RCP, no filtering)."""
        if not 0 <= int(query_index) < len(self.queries):
            raise IndexError(f"query_index {query_index} out of range (0..{len(self.queries) - 1})")
        self._query_feats[int(query_index)] = _np(feature).reshape(-1)
        if context_feats is not None:
            self._query_ctx[int(query_index)] = _np(context_feats).reshape(
                -1, self._query_feats[int(query_index)].size
            )

    # ---------------------------------------------------------------------------------------
    def _state(self) -> Tuple[Dict, ...]:
        """What :meth:`evaluate` needs from this process (gathered across processes)."""
        return (
            self._dets,
            self._det_boxes,
            self._annotations,
            self._query_feats,
            self._query_dets,
            self._query_ctx,
        )

    def _gather(self):
        state = self._state()
        if not self.distributed or comm.get_world_size() == 1:
            return state
        parts = comm.gather(state, dst=0)
        if not comm.is_main_process():
            return None
        merged = tuple({} for _ in state)
        for part in parts:
            for m, p in zip(merged, part):
                m.update(p)
        return merged

    def _contexts(self, dets, query_dets, query_ctx, dim: int) -> List[np.ndarray]:
        out, n_missing = [], 0
        for i, q in enumerate(self.queries):
            if i in query_ctx:
                out.append(query_ctx[i])
                continue
            if i in query_dets:
                boxes, scores, feats = query_dets[i]
            elif q["image_id"] in dets:
                d, feats = dets[q["image_id"]]
                boxes, scores = d[:, :4], d[:, 4]
            else:
                n_missing += 1
                out.append(np.zeros((0, dim), np.float32))
                continue
            out.append(select_context(q["query_box"], boxes, scores, feats, self.det_thresh))
        if n_missing:
            logger.warning(
                "RCP: %d queries have no detections of their image; no context", n_missing
            )
        return out

    def evaluate(self) -> Dict:
        """Compute the search (and detection) metrics on the main process; ``{}`` elsewhere."""
        state = self._gather()
        if state is None:
            return {}
        dets, det_boxes, annotations, query_feats, query_dets, query_ctx = state
        missing = [i for i in range(len(self.queries)) if i not in query_feats]
        if missing:
            raise RuntimeError(
                f"{len(missing)} of {len(self.queries)} queries have no feature "
                f"(e.g. {missing[:5]}); run process_queries/add_query for every query"
            )
        if not self.queries:
            raise RuntimeError("PersonSearchEvaluator has no queries")
        qfeats = np.stack([query_feats[i] for i in range(len(self.queries))])
        contexts = (
            self._contexts(dets, query_dets, query_ctx, qfeats.shape[1]) if self.rcp else None
        )
        annotations = self._fixed_annotations or annotations
        qimgs = [q["image_id"] for q in self.queries]
        gallery = SearchGallery(dets, self.det_thresh)
        kw = dict(
            topk=self.topk,
            rcp=self.rcp,
            query_context_feats=contexts,
            progress=comm.is_main_process(),
        )
        res = self._search(qfeats, qimgs, gallery, annotations, **kw)
        results: Dict = {"search": self._search_metrics(res)}
        plain = None
        if self.rcp:  # the same features ranked without context persons: RCP's own effect
            plain = self._search(qfeats, qimgs, gallery, annotations, **dict(kw, rcp=None))
            results["search_without_rcp"] = self._search_metrics(plain)
        if annotations:
            gt = {k: a["boxes"] for k, a in annotations.items()}
            pids = {k: a["pids"] for k, a in annotations.items()}
            missing_dets = [k for k in gt if k not in dets]
            if missing_dets:
                raise KeyError(
                    f"{len(missing_dets)} annotated gallery images have no predictions, "
                    f"e.g. {missing_dets[:5]}"
                )
            d = {k: det_boxes.get(k, dets[k][0]) for k in gt}
            results["detection"] = {}
            for t in self.detection_thresholds:
                kw_det = dict(
                    iou_thresh=self.detection_iou,
                    det_thresh=t,
                    gt_pids=pids,
                    matching=self.detection_matching,
                )
                full = detection_recall_ap(gt, d, **kw_det)
                lab = detection_recall_ap(gt, d, labeled_only=True, **kw_det)
                results["detection"].update(
                    {
                        f"recall@{t:g}": 100 * full["recall"],
                        f"AP@{t:g}": 100 * full["AP"],
                        f"recall_labeled@{t:g}": 100 * lab["recall"],
                        f"AP_labeled@{t:g}": 100 * lab["AP"],
                    }
                )
        if self.gallery_curve:
            curve = search_gallery_curve(qfeats, qimgs, gallery, self.gallery_curve, **kw)
            results["search_gallery_curve"] = {n: 100 * v for n, v in curve.items()}
        logger.info(
            "Person search (%s, %s, gallery %s, det_thresh %.2f, rcp %s): %s",
            self.protocol,
            self.dataset_name,
            self.gallery_size if self.protocol == "cuhk_sysu" else "all",
            self.det_thresh,
            self.rcp,
            results,
        )
        if self.output_dir:
            self._dump(res["records"], results)
            if plain is not None:
                self._dump(plain["records"], results, rcp=False)
        return results

    def _search(self, qfeats, qimgs, gallery, annotations, **kw) -> Dict:
        """One ranking of every query by the protocol (:func:`search_cuhk_sysu` /
        :func:`search_prw`)."""
        if self.protocol == "cuhk_sysu":
            lists = [q["gallery"] for q in self.queries]
            return search_cuhk_sysu(
                qfeats, qimgs, gallery, lists, full_set=self.gallery_size < 0, **kw
            )
        if not annotations:
            raise RuntimeError(
                "PRW needs gallery annotations: gallery inputs must carry 'boxes'/'pids'/"
                "'camid' or pass gallery_annotations"
            )
        return search_prw(
            qfeats,
            qimgs,
            [q["query_pid"] for q in self.queries],
            [q["camid"] for q in self.queries],
            gallery,
            annotations,
            cross_camera=self.cross_camera,
            **kw,
        )

    def _search_metrics(self, res: Dict) -> Dict:
        out = {"mAP": 100 * res["mAP"]}
        for k in self.topk:
            out[f"top-{k}"] = 100 * res[f"top-{k}"]
        out["det_thresh"] = self.det_thresh
        return out

    def _dump(self, records: List[Dict], results: Dict, rcp: bool = True) -> None:
        """``search_results_<protocol>.json`` (``..._without_rcp.json``: the ranking without
        context persons of an RCP evaluation)."""
        for r in records:
            q = self.queries[r["query_index"]]
            r["query_box"] = q["query_box"].tolist()
            r["query_pid"] = q["query_pid"]
        os.makedirs(self.output_dir, exist_ok=True)
        suffix = "" if rcp else "_without_rcp"
        path = os.path.join(self.output_dir, f"search_results_{self.protocol}{suffix}.json")
        settings = {
            "dataset": self.dataset_name,
            "query_dataset": self.query_dataset_name,
            "protocol": self.protocol,
            "gallery_size": self.gallery_size,
            "det_thresh": self.det_thresh,
            "detection_matching": self.detection_matching,
            "rcp": self.rcp if rcp else None,
            "cross_camera": self.cross_camera,
        }
        with open(path, "w") as f:
            json.dump({"settings": settings, "results": results, "queries": records}, f)
        logger.info("Per-query person-search results written to %s", path)


def run_person_search_inference(model: nn.Module, gallery_loader, query_loader, evaluator) -> Dict:
    """Gallery pass (``model(inputs)``), query pass (``model.extract_query(inputs)``, or
    ``model(inputs)`` if the model has none), then ``evaluator.evaluate()``.

    Eval mode and ``torch.no_grad()`` for both passes; the model's mode is restored.
    """
    evaluator.reset()
    extract = getattr(comm.unwrap_model(model), "extract_query", None) or model
    show = comm.is_main_process()
    with inference_context(model), torch.no_grad():
        for inputs in tqdm(gallery_loader, desc="search gallery", disable=not show, leave=False):
            evaluator.process(inputs, model(inputs))
        for inputs in tqdm(query_loader, desc="search queries", disable=not show, leave=False):
            evaluator.process_queries(inputs, extract(inputs))
    results = evaluator.evaluate()
    return results if results is not None else {}
