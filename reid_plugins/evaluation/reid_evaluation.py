"""``ReIDEvaluator``: CMC / mAP / mINP on a ReID test set (query + gallery records)."""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

from ..utils import comm
from .distance import GalleryDistance
from .evaluator import DatasetEvaluator
from .rank import evaluate_features, evaluate_rank
from .rerank import RERANK_VARIANTS, re_ranking

__all__ = ["ReIDEvaluator"]

logger = logging.getLogger(__name__)

_REPORTED_RANKS = (1, 5, 10)


def _resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


class ReIDEvaluator(DatasetEvaluator):
    """Evaluates a ReID model on a test set whose records carry ``is_query``.

    ``process(inputs, outputs)`` takes the records fed to the model (dicts with ``"pid"``,
    ``"camid"``, ``"is_query"``, ``"file_name"``) and the model's outputs (dicts with a 1-D
    ``"feature"`` tensor), and keeps the features on the CPU. ``evaluate()`` gathers everything
    on the main process (``comm.gather``), splits query and gallery, computes distances and
    ranks (chunked, see :func:`~reid_plugins.evaluation.evaluate_features`; or with k-reciprocal
    re-ranking, which needs the full matrices) and returns, on the main process only::

        {"reid": {"Rank-1": .., "Rank-5": .., "Rank-10": .., "mAP": .., "mINP": ..}}

    **All values are percentages (0-100)**, as in papers. Rank-k entries with k > ``max_rank``
    are omitted. Other processes return ``{}``.

    With ``output_dir`` set, it also writes ``reid_topk_<dataset_name>.json``: per query its
    file, pid, camid, whether it was valid (had a true match), its AP (fraction, ``null`` when
    skipped) and the first ``topk_dump`` remaining gallery samples (same-pid/same-camera and
    junk removed, as the metrics see them) with files, pids, camids, distances and
    ``correct`` flags, for later visualisation.

    Args:
        dataset_name: name of the test set (used in messages and the dump's file name).
        metric: ``"cosine"`` or ``"euclidean"`` (squared) distance between features.
        max_rank: CMC length.
        chunk_size: queries per distance/ranking chunk (bounded memory).
        rerank: apply k-reciprocal re-ranking (Zhong et al. 2017) with ``rerank_k1``,
            ``rerank_k2``, ``rerank_lambda``; ``rerank_variant`` ``"authors"`` (the released
            code, default) or ``"paper"`` (:func:`~reid_plugins.evaluation.rerank.re_ranking`).
        pairwise_fn: optional model-provided distance replacing ``metric``:
            ``pairwise_fn(q_feats_chunk, g_feats) -> (chunk, N_g)`` tensor/array, lower = more
            similar (e.g. GMN's metric network). Called chunk by chunk (with re-ranking also
            for the query-query and gallery-gallery matrices).
        output_dir: folder for the JSON dump; ``None`` = no dump.
        topk_dump: gallery samples per query in the dump.
        device: device used for the distance computation (default CPU).
        faiss_topk: > 0 = rank with a faiss index (:mod:`~reid_plugins.evaluation.faiss_index`)
            retrieving ``faiss_topk`` gallery samples per query instead of the dense ranking;
            mAP/mINP/CMC are then computed over that top-K list (true matches beyond K count as
            missed); K >= gallery size gives the dense result. 0 (default) = dense.
        faiss_options: ``FaissGalleryIndex`` options (``index_type``, ``nlist``, ``nprobe``).
    """

    def __init__(
        self,
        *,
        dataset_name: str,
        metric: str = "cosine",
        max_rank: int = 50,
        chunk_size: int = 1024,
        rerank: bool = False,
        rerank_k1: int = 20,
        rerank_k2: int = 6,
        rerank_lambda: float = 0.3,
        rerank_variant: str = "authors",
        pairwise_fn: Optional[Callable[[torch.Tensor, torch.Tensor], Any]] = None,
        output_dir: Optional[str] = None,
        topk_dump: int = 10,
        device: Optional[str] = None,
        faiss_topk: int = 0,  # faiss (TEST.FAISS)
        faiss_options: Optional[Dict[str, Any]] = None,  # faiss (TEST.FAISS)
    ) -> None:
        if metric not in ("cosine", "euclidean"):
            raise ValueError(
                f"ReIDEvaluator('{dataset_name}'): unknown metric '{metric}' "
                "(TEST.METRIC must be 'cosine' or 'euclidean')"
            )
        if int(max_rank) < 1 or int(chunk_size) < 1 or int(topk_dump) < 1:
            raise ValueError(
                f"ReIDEvaluator('{dataset_name}'): max_rank, chunk_size and topk_dump must be "
                f">= 1, got {max_rank}, {chunk_size}, {topk_dump}"
            )
        self.dataset_name = dataset_name
        self.metric = metric
        self.max_rank = int(max_rank)
        self.chunk_size = int(chunk_size)
        self.rerank = bool(rerank)
        self.rerank_k1, self.rerank_k2 = int(rerank_k1), int(rerank_k2)
        self.rerank_lambda = float(rerank_lambda)
        if rerank_variant not in RERANK_VARIANTS:
            raise ValueError(
                f"TEST.RERANK.VARIANT must be one of {RERANK_VARIANTS}, got '{rerank_variant}'"
            )
        self.rerank_variant = rerank_variant
        self.pairwise_fn = pairwise_fn
        self.output_dir = output_dir
        self.topk_dump = int(topk_dump)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        # --- faiss top-K ranking (TEST.FAISS), see reid_plugins/evaluation/faiss_index.py
        self.faiss_topk = int(faiss_topk)
        self.faiss_options = dict(faiss_options or {})
        if self.faiss_topk > 0 and (self.rerank or pairwise_fn is not None):
            raise ValueError(
                f"ReIDEvaluator('{dataset_name}'): TEST.FAISS.ENABLED cannot be combined with "
                "TEST.RERANK.ENABLED or a model-provided distance (pairwise_fn); disable one"
            )
        # --- end faiss
        self.reset()

    @classmethod
    def from_config(
        cls,
        cfg,
        dataset_name: str,
        output_dir: Optional[str] = None,
        *,
        pairwise_fn: Optional[Callable] = None,
    ) -> "ReIDEvaluator":
        """Build from ``cfg.TEST`` (METRIC, MAX_RANK, CHUNK_SIZE, RERANK.*, TOPK_DUMP); distances
        are computed on ``cfg.MODEL.DEVICE`` ("auto" = CUDA when available)."""
        t = cfg.TEST
        return cls(
            dataset_name=dataset_name,
            metric=t.METRIC,
            max_rank=t.MAX_RANK,
            chunk_size=t.CHUNK_SIZE,
            rerank=t.RERANK.ENABLED,
            rerank_k1=t.RERANK.K1,
            rerank_k2=t.RERANK.K2,
            rerank_lambda=t.RERANK.LAMBDA,
            rerank_variant=t.RERANK.VARIANT,
            pairwise_fn=pairwise_fn,
            output_dir=output_dir,
            topk_dump=t.TOPK_DUMP,
            device=_resolve_device(cfg.MODEL.DEVICE),
            faiss_topk=t.FAISS.TOPK if t.FAISS.ENABLED else 0,  # faiss (TEST.FAISS)
            faiss_options=dict(
                index_type=t.FAISS.INDEX, nlist=t.FAISS.NLIST, nprobe=t.FAISS.NPROBE
            ),
        )

    def reset(self) -> None:
        self._feats: List[torch.Tensor] = []
        self._pids: List[int] = []
        self._camids: List[int] = []
        self._is_query: List[bool] = []
        self._files: List[str] = []

    def process(self, inputs: List[dict], outputs: List[dict]) -> None:
        """Store features (moved to CPU, float32) and labels of one batch.

        Raises:
            ValueError: ``inputs`` and ``outputs`` differ in length, or an output has no 1-D
                ``"feature"``.
            KeyError: an input lacks ``pid``/``camid``/``is_query``/``file_name``.
        """
        if len(inputs) != len(outputs):
            raise ValueError(
                f"ReIDEvaluator('{self.dataset_name}'): {len(inputs)} inputs but "
                f"{len(outputs)} outputs"
            )
        for inp, out in zip(inputs, outputs):
            missing = [k for k in ("pid", "camid", "is_query", "file_name") if k not in inp]
            if missing:
                raise KeyError(
                    f"ReIDEvaluator('{self.dataset_name}'): input record "
                    f"'{inp.get('file_name', '?')}' lacks {missing}"
                )
            feat = out.get("feature") if isinstance(out, dict) else None
            if not isinstance(feat, torch.Tensor) or feat.dim() != 1:
                raise ValueError(
                    f"ReIDEvaluator('{self.dataset_name}'): the output for "
                    f"'{inp['file_name']}' must hold a 1-D tensor under 'feature', got "
                    f"{type(feat).__name__}{tuple(feat.shape) if hasattr(feat, 'shape') else ''}"
                )
            self._feats.append(feat.detach().to("cpu", torch.float32))
            self._pids.append(int(inp["pid"]))
            self._camids.append(int(inp["camid"]))
            self._is_query.append(bool(inp["is_query"]))
            self._files.append(str(inp["file_name"]))

    def _local_state(self):
        """This process's data, features stacked into one CPU tensor (cheap to pickle)."""
        feats = torch.stack(self._feats) if self._feats else torch.zeros(0, 0)
        return (feats, self._pids, self._camids, self._is_query, self._files)

    def _gather(self):
        parts = comm.gather(self._local_state(), dst=0)
        if not comm.is_main_process():
            return None
        dims = {p[0].shape[1] for p in parts if p[0].shape[0] > 0}
        if len(dims) > 1:
            raise ValueError(
                f"ReIDEvaluator('{self.dataset_name}'): feature dimensions differ across "
                f"processes: {sorted(dims)}"
            )
        nonempty = [p[0] for p in parts if p[0].shape[0] > 0]
        feats = torch.cat(nonempty) if nonempty else torch.zeros(0, 0)
        pids = np.array([x for p in parts for x in p[1]], dtype=np.int64)
        camids = np.array([x for p in parts for x in p[2]], dtype=np.int64)
        is_query = np.array([x for p in parts for x in p[3]], dtype=bool)
        files = [x for p in parts for x in p[4]]
        return feats, pids, camids, is_query, files

    def _distance_fn(self, g: torch.Tensor):
        if self.pairwise_fn is not None:
            return lambda q: self.pairwise_fn(q, g)
        return GalleryDistance(g, self.metric)

    def _full_distance(self, q: torch.Tensor, g: torch.Tensor) -> np.ndarray:
        fn = self._distance_fn(g.to(self.device))
        out = np.empty((q.shape[0], g.shape[0]), dtype=np.float32)
        for s in range(0, q.shape[0], self.chunk_size):
            d = fn(q[s : s + self.chunk_size].to(self.device))
            d = d.detach().cpu().numpy() if isinstance(d, torch.Tensor) else np.asarray(d)
            expected = (min(self.chunk_size, q.shape[0] - s), g.shape[0])
            if d.shape != expected:
                raise ValueError(
                    f"the distance function returned shape {d.shape} for a chunk; expected "
                    f"{expected}"
                )
            out[s : s + self.chunk_size] = d
        return out

    def evaluate(self) -> Dict[str, Dict[str, float]]:
        """Compute the metrics (percentages) on the main process; ``{}`` elsewhere.

        Raises:
            ValueError: no query or no gallery sample was processed (names the dataset), or
                no query has a true match in the gallery.
        """
        gathered = self._gather()
        if gathered is None:
            return {}
        feats, pids, camids, is_query, files = gathered
        nq, ng = int(is_query.sum()), int((~is_query).sum())
        if nq == 0 or ng == 0:
            which = "query" if nq == 0 else "gallery"
            raise ValueError(
                f"ReIDEvaluator('{self.dataset_name}'): empty {which} set ({nq} query and "
                f"{ng} gallery samples processed). The test set must contain records with "
                f"is_query=True and is_query=False."
            )
        q, g = feats[is_query], feats[~is_query]
        qp, gp, qc, gc = pids[is_query], pids[~is_query], camids[is_query], camids[~is_query]
        topk = self.topk_dump if self.output_dir else 0
        logger.info(
            "ReID evaluation on '%s': %d queries, %d gallery samples%s",
            self.dataset_name,
            nq,
            ng,
            " (re-ranking)" if self.rerank else "",
        )
        try:
            if self.rerank:
                if nq + ng > 30000:
                    logger.warning(
                        "Re-ranking %d samples needs ~%.1f GB for the distance matrices",
                        nq + ng,
                        4 * (nq + ng) ** 2 / 1e9,
                    )
                dist = re_ranking(
                    self._full_distance(q, g),
                    self._full_distance(q, q),
                    self._full_distance(g, g),
                    k1=self.rerank_k1,
                    k2=self.rerank_k2,
                    lambda_value=self.rerank_lambda,
                    variant=self.rerank_variant,
                )
                res = evaluate_rank(dist, qp, gp, qc, gc, self.max_rank, topk=topk)
            elif self.faiss_topk > 0:  # faiss top-K ranking (TEST.FAISS)
                from .faiss_index import evaluate_features_faiss

                res = evaluate_features_faiss(
                    q,
                    g,
                    qp,
                    gp,
                    qc,
                    gc,
                    self.metric,
                    self.max_rank,
                    list_length=self.faiss_topk,
                    topk=topk,
                    chunk_size=self.chunk_size,
                    progress=nq > self.chunk_size,
                    **self.faiss_options,
                )
            else:
                res = evaluate_features(
                    q,
                    g,
                    qp,
                    gp,
                    qc,
                    gc,
                    self.metric,
                    self.max_rank,
                    self.chunk_size,
                    pairwise_fn=self.pairwise_fn,
                    device=self.device,
                    topk=topk,
                    progress=nq > self.chunk_size,
                )
        except ValueError as e:
            raise ValueError(f"ReIDEvaluator('{self.dataset_name}'): {e}") from e
        metrics = {
            f"Rank-{k}": 100.0 * float(res["cmc"][k - 1])
            for k in _REPORTED_RANKS
            if k <= self.max_rank
        }
        metrics["mAP"] = 100.0 * res["mAP"]
        metrics["mINP"] = 100.0 * res["mINP"]
        logger.info(
            "'%s': %s (%d valid queries, %d skipped without a true match)",
            self.dataset_name,
            ", ".join(f"{k}={v:.2f}" for k, v in metrics.items()),
            res["num_valid_queries"],
            res["num_skipped_queries"],
        )
        if self.output_dir:
            self._dump(
                res,
                metrics,
                np.flatnonzero(is_query),
                np.flatnonzero(~is_query),
                pids,
                camids,
                files,
            )
        return {"reid": metrics}

    def _dump(self, res, metrics, q_idx, g_idx, pids, camids, files) -> str:
        os.makedirs(self.output_dir, exist_ok=True)
        path = os.path.join(self.output_dir, f"reid_topk_{self.dataset_name}.json")
        ap = np.full(len(q_idx), np.nan)
        ap[res["query_valid"]] = res["all_AP"]
        queries = []
        for i, qi in enumerate(q_idx):
            gsel = [int(j) for j in res["topk_indices"][i] if j >= 0]
            gi = g_idx[gsel]
            queries.append(
                {
                    "query": files[qi],
                    "pid": int(pids[qi]),
                    "camid": int(camids[qi]),
                    "valid": bool(res["query_valid"][i]),
                    "ap": None if np.isnan(ap[i]) else float(ap[i]),
                    "gallery": [files[j] for j in gi],
                    "gallery_pids": [int(pids[j]) for j in gi],
                    "gallery_camids": [int(camids[j]) for j in gi],
                    "distances": [float(x) for x in res["topk_distances"][i][: len(gsel)]],
                    "correct": [bool(pids[j] == pids[qi]) for j in gi],
                }
            )
        payload = {
            "dataset": self.dataset_name,
            "metric": "pairwise_fn" if self.pairwise_fn is not None else self.metric,
            "rerank": self.rerank,
            "topk": self.topk_dump,
            "faiss_topk": self.faiss_topk or None,  # faiss: metrics over top-K lists
            "metrics_percent": metrics,
            "queries": queries,
        }
        with open(path, "w") as f:
            json.dump(payload, f)
        logger.info("Wrote per-query top-%d rankings to %s", self.topk_dump, path)
        return path
