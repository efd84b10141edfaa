"""Approximate / exact top-K gallery search with faiss, and ReID metrics over top-K lists.

For galleries too large to rank densely (every query sorted against the whole gallery),
:class:`FaissGalleryIndex` retrieves the ``K`` nearest gallery samples of each query:

* ``metric="cosine"``: inner product on L2-normalised features (``IndexFlatIP``); the
  returned distance is ``1 - cos``, as :func:`~reid_plugins.evaluation.compute_distance`.
* ``metric="euclidean"``: squared L2 (``IndexFlatL2``), as ``compute_distance``'s default.
* ``index_type="flat"`` is exact; ``"ivf"`` (``IndexIVFFlat`` with ``nlist`` k-means cells,
  ``nprobe`` of them visited per query) is approximate and much faster on huge galleries.

Returned lists are sorted by increasing distance, **ties broken by gallery index** (the same
stable order as :mod:`reid_plugins.evaluation.rank`), padded with index ``-1`` / distance
``inf`` when fewer than ``K`` samples are found.

:func:`evaluate_retrieved` computes CMC / mAP / mINP from such top-K lists with the
Market-1501 protocol of :func:`~reid_plugins.evaluation.evaluate_rank` (same-pid
same-camera and junk samples removed). **The metrics are then computed over the top-K list
only**: true matches ranked beyond ``K`` count as missed, i.e.

* ``AP = sum_{found i} (i / r_i) / m`` with ``m`` the number of true matches in the whole
  gallery (counted from the labels), so AP is a lower bound of the dense AP;
* ``INP = m / r_m`` when all ``m`` true matches are in the list, else ``0``;
* ``cmc[k]`` counts queries whose first true match is within the list at rank ``<= k + 1``
  (entries past the list length are lower bounds).

With ``K >=`` the gallery size (and the exact flat index) the results equal the dense
evaluation (up to float rounding of near-tied distances).
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
import torch
from tqdm import tqdm

from .distance import METRICS

__all__ = [
    "FaissGalleryIndex",
    "evaluate_retrieved",
    "evaluate_features_faiss",
    "faiss_available",
]

logger = logging.getLogger(__name__)

_INDEX_TYPES = ("flat", "ivf")
_EPS = 1e-12


def faiss_available() -> bool:
    """Whether the ``faiss`` package (``pip install faiss-cpu``) can be imported."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _import_faiss():
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "FaissGalleryIndex needs faiss: `pip install faiss-cpu` (or the `reid_plugins[tools]` "
            "extra), or set TEST.FAISS.ENABLED False"
        ) from e
    return faiss


def _as_float32(x: Union[np.ndarray, torch.Tensor], name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    arr = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (num_samples, dim) array, got shape {arr.shape}")
    if arr.size and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf values")
    return arr


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norm, _EPS), dtype=np.float32)


class FaissGalleryIndex:
    """faiss index over gallery features; ``search(q, k)`` -> ``(distances, indices)``.

    Constructor (keyword-only):
        metric: ``"cosine"`` (inner product on L2-normalised features, distance ``1 - cos``)
            or ``"euclidean"`` (squared L2 distance).
        index_type: ``"flat"`` (exact) or ``"ivf"`` (inverted file, approximate).
        nlist: IVF cells (clipped to the gallery size); ignored by ``"flat"``.
        nprobe: IVF cells visited per query (clipped to ``nlist``); more = slower, more exact.
        chunk_size: queries searched per call (bounds the result buffers; tqdm over chunks).
        seed: k-means seed of the IVF training (deterministic index).
        progress: show a tqdm bar over query chunks.

    Usage::

        index = FaissGalleryIndex(metric="cosine").add(gallery_feats)
        dist, idx = index.search(query_feats, k=100)   # (N_q, k) each, ascending distance
    """

    def __init__(
        self,
        *,
        metric: str = "cosine",
        index_type: str = "flat",
        nlist: int = 1024,
        nprobe: int = 16,
        chunk_size: int = 4096,
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        if metric not in METRICS:
            raise ValueError(f"FaissGalleryIndex: metric must be one of {METRICS}, got '{metric}'")
        if index_type not in _INDEX_TYPES:
            raise ValueError(
                f"FaissGalleryIndex: index_type (TEST.FAISS.INDEX) must be one of "
                f"{_INDEX_TYPES}, got '{index_type}'"
            )
        if int(nlist) < 1 or int(nprobe) < 1 or int(chunk_size) < 1:
            raise ValueError(
                f"FaissGalleryIndex: nlist, nprobe and chunk_size must be >= 1, got {nlist}, "
                f"{nprobe}, {chunk_size}"
            )
        self.metric = metric
        self.index_type = index_type
        self.nlist, self.nprobe = int(nlist), int(nprobe)
        self.chunk_size = int(chunk_size)
        self.seed = int(seed)
        self.progress = bool(progress)
        self._index = None
        self.dim: Optional[int] = None

    @property
    def ntotal(self) -> int:
        """Number of gallery samples in the index."""
        return 0 if self._index is None else int(self._index.ntotal)

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        return _l2_normalise(x) if self.metric == "cosine" else x

    def add(self, gallery: Union[np.ndarray, torch.Tensor]) -> "FaissGalleryIndex":
        """Build the index on ``gallery`` ``(N_g, D)`` (replaces any previous content).

        Returns:
            ``self``, for chaining.

        Raises:
            ValueError: empty or non-2-D gallery, or non-finite values.
        """
        faiss = _import_faiss()
        g = self._prepare(_as_float32(gallery, "gallery features"))
        if g.shape[0] == 0 or g.shape[1] == 0:
            raise ValueError(f"FaissGalleryIndex.add: empty gallery (shape {g.shape})")
        d = g.shape[1]
        ip = self.metric == "cosine"
        if self.index_type == "flat":
            index = faiss.IndexFlatIP(d) if ip else faiss.IndexFlatL2(d)
        else:
            nlist = min(self.nlist, g.shape[0])
            if nlist < self.nlist:
                logger.warning(
                    "FaissGalleryIndex: nlist %d > gallery size %d; using %d cells",
                    self.nlist,
                    g.shape[0],
                    nlist,
                )
            quantizer = faiss.IndexFlatIP(d) if ip else faiss.IndexFlatL2(d)
            mt = faiss.METRIC_INNER_PRODUCT if ip else faiss.METRIC_L2
            index = faiss.IndexIVFFlat(quantizer, d, nlist, mt)
            index.cp.seed = self.seed
            index.train(g)
            index.nprobe = min(self.nprobe, nlist)
            self._quantizer = quantizer  # the IVF index does not own its quantizer
        index.add(g)
        self._index, self.dim = index, d
        return self

    def search(
        self, queries: Union[np.ndarray, torch.Tensor], k: int
    ) -> Tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest gallery samples of every query.

        Returns:
            ``(distances float32 (N_q, k), indices int64 (N_q, k))``, ascending distance,
            ties by gallery index; ``-1`` / ``inf`` padded where fewer than ``k`` were found
            (``k`` > gallery size, or an IVF probe with too few samples).

        Raises:
            RuntimeError: :meth:`add` was not called.
            ValueError: ``k < 1`` or a feature dimension different from the gallery's.
        """
        if self._index is None:
            raise RuntimeError("FaissGalleryIndex.search: call add(gallery_features) first")
        if int(k) < 1:
            raise ValueError(f"FaissGalleryIndex.search: k must be >= 1, got {k}")
        k = int(k)
        q = self._prepare(_as_float32(queries, "query features"))
        if q.shape[1] != self.dim:
            raise ValueError(
                f"Query features have dimension {q.shape[1]} but the gallery index has "
                f"dimension {self.dim}"
            )
        kk = min(k, self.ntotal)
        dist = np.full((q.shape[0], k), np.inf, dtype=np.float32)
        idx = np.full((q.shape[0], k), -1, dtype=np.int64)
        starts = range(0, q.shape[0], self.chunk_size)
        for s in tqdm(starts, desc="faiss search", disable=not self.progress, leave=False):
            sims, ids = self._index.search(q[s : s + self.chunk_size], kk)
            d = (1.0 - sims) if self.metric == "cosine" else np.maximum(sims, 0.0)
            d = np.where(ids < 0, np.inf, d).astype(np.float32)
            # Stable order: distance, then gallery index (missing entries last).
            key_idx = np.where(ids < 0, np.iinfo(np.int64).max, ids)
            order = np.lexsort((key_idx, d), axis=1)
            rows = np.arange(d.shape[0])[:, None]
            dist[s : s + self.chunk_size, :kk] = d[rows, order]
            idx[s : s + self.chunk_size, :kk] = ids[rows, order]
        return dist, idx


def _labels(x: Any, name: str, n: int) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    arr = arr.astype(np.int64).reshape(-1)
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries but {n} were expected")
    return arr


def _count_lookup(keys: np.ndarray, table: np.ndarray) -> np.ndarray:
    """For each of ``keys``, how many times it occurs in ``table`` (vectorised)."""
    uniq, counts = np.unique(table, return_counts=True)
    pos = np.clip(np.searchsorted(uniq, keys), 0, max(len(uniq) - 1, 0))
    if len(uniq) == 0:
        return np.zeros(len(keys), dtype=np.int64)
    return np.where(uniq[pos] == keys, counts[pos], 0).astype(np.int64)


def _pair_key(pids: np.ndarray, camids: np.ndarray) -> np.ndarray:
    return pids.astype(np.int64) * np.int64(1 << 20) + camids.astype(np.int64)


def evaluate_retrieved(
    indices: np.ndarray,
    distances: np.ndarray,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    max_rank: int = 50,
    *,
    topk: int = 0,
) -> Dict[str, Any]:
    """CMC / mAP / mINP from per-query top-K gallery lists (see the module docstring).

    Args:
        indices: ``(N_q, K)`` gallery indices sorted by increasing distance, ``-1`` padded.
        distances: ``(N_q, K)`` matching distances (copied into the top-k dump only).
        q_pids, g_pids, q_camids, g_camids: integer labels.
        max_rank: CMC length.
        topk: if > 0, also ``topk_indices`` / ``topk_distances`` ``(N_q, topk)``: the first
            ``topk`` remaining samples (after same-pid/same-camera and junk removal), ``-1`` /
            ``NaN`` padded, as :func:`~reid_plugins.evaluation.evaluate_rank`.

    Returns:
        The dict of :func:`~reid_plugins.evaluation.evaluate_rank` (fractions in ``[0, 1]``)
        plus ``"list_length": K``. A query is valid when the *whole* gallery holds a true match
        for it (so the number of valid queries equals the dense evaluation's).

    Raises:
        ValueError: shape mismatch, ``max_rank < 1``, or no valid query.
    """
    idx = np.asarray(indices, dtype=np.int64)
    dist = np.asarray(distances, dtype=np.float64)
    if idx.ndim != 2 or dist.shape != idx.shape:
        raise ValueError(
            f"indices and distances must be 2-D arrays of one shape, got {idx.shape} and "
            f"{dist.shape}"
        )
    if int(max_rank) < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    nq, k = idx.shape
    if k < 1:
        raise ValueError("evaluate_retrieved: the retrieved lists are empty (K = 0)")
    qp, qc = _labels(q_pids, "q_pids", nq), _labels(q_camids, "q_camids", nq)
    gp = _labels(g_pids, "g_pids", len(np.asarray(g_pids)))
    gc = _labels(g_camids, "g_camids", gp.shape[0])
    if idx.size and idx.max() >= gp.shape[0]:
        raise ValueError(f"indices refer to gallery sample {idx.max()} of only {gp.shape[0]}")
    # True matches in the whole gallery: same pid, other camera, pid not junk.
    n_good = _count_lookup(qp, gp) - _count_lookup(_pair_key(qp, qc), _pair_key(gp, gc))
    n_good[qp == -1] = 0
    valid = n_good > 0
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise ValueError(
            f"No valid query: all {nq} queries were skipped because none of them has a true "
            "match in the gallery after removing same-pid/same-camera and junk (pid -1) "
            "samples. Check that query and gallery pids overlap and the camera ids are right."
        )
    missing = idx < 0
    safe = np.where(missing, 0, idx)
    rp, rc = gp[safe], gc[safe]
    removed = missing | (rp == -1) | ((rp == qp[:, None]) & (rc == qc[:, None]))
    kept = ~removed
    match = kept & (rp == qp[:, None]) & (qp[:, None] != -1)
    rank0 = np.cumsum(kept, axis=1) - 1  # 0-based rank among remaining samples
    nth = np.cumsum(match, axis=1)  # i of the i-th true match
    found = match.sum(axis=1)
    ap_sum = (match * nth / np.maximum(rank0 + 1.0, 1.0)).sum(axis=1)
    ap = np.where(valid, ap_sum / np.maximum(n_good, 1), np.nan)
    rows = np.arange(nq)
    last_rank = rank0[rows, k - 1 - np.argmax(match[:, ::-1], axis=1)]
    inp = np.where(found == n_good, n_good / np.maximum(last_rank + 1.0, 1.0), 0.0)
    inp = np.where(valid, inp, np.nan)
    first_rank = np.where(found > 0, rank0[rows, np.argmax(match, axis=1)], max_rank)
    first = first_rank[valid]
    hist = np.bincount(np.minimum(first, max_rank), minlength=max_rank + 1)
    cmc = np.cumsum(hist[:max_rank]) / num_valid
    if num_valid < nq:
        logger.info(
            "%d of %d queries have no true match in the gallery: skipped", nq - num_valid, nq
        )
    out: Dict[str, Any] = {
        "cmc": cmc,
        "mAP": float(ap[valid].mean()),
        "mINP": float(inp[valid].mean()),
        "all_AP": ap[valid],
        "all_INP": inp[valid],
        "num_valid_queries": num_valid,
        "num_skipped_queries": nq - num_valid,
        "query_valid": valid,
        "list_length": k,
    }
    if int(topk) > 0:
        t = int(topk)
        pos = np.argsort(removed, axis=1, kind="stable")[:, : min(t, k)]  # kept first
        r = rows[:, None]
        ok = kept[r, pos]
        top_i = np.where(ok, idx[r, pos], -1)
        top_d = np.where(ok, dist[r, pos], np.nan)
        if top_i.shape[1] < t:
            pad = ((0, 0), (0, t - top_i.shape[1]))
            top_i = np.pad(top_i, pad, constant_values=-1)
            top_d = np.pad(top_d, pad, constant_values=np.nan)
        out["topk_indices"], out["topk_distances"] = top_i, top_d
    return out


def evaluate_features_faiss(
    q_feats: Union[np.ndarray, torch.Tensor],
    g_feats: Union[np.ndarray, torch.Tensor],
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    metric: str = "cosine",
    max_rank: int = 50,
    *,
    list_length: int = 100,
    topk: int = 0,
    index_type: str = "flat",
    nlist: int = 1024,
    nprobe: int = 16,
    chunk_size: int = 4096,
    progress: bool = False,
) -> Dict[str, Any]:
    """Build a :class:`FaissGalleryIndex`, retrieve ``list_length`` samples per query and
    compute :func:`evaluate_retrieved` (metrics over the top-``list_length`` lists).

    Raises:
        ValueError: empty query or gallery set, or the errors of the two functions above.
    """
    q = _as_float32(q_feats, "q_feats")
    g = _as_float32(g_feats, "g_feats")
    if q.shape[0] == 0 or g.shape[0] == 0:
        which = "query" if q.shape[0] == 0 else "gallery"
        raise ValueError(f"Empty {which} set: ReID evaluation needs at least one sample")
    if int(list_length) < 1:
        raise ValueError(f"list_length (TEST.FAISS.TOPK) must be >= 1, got {list_length}")
    index = FaissGalleryIndex(
        metric=metric,
        index_type=index_type,
        nlist=nlist,
        nprobe=nprobe,
        chunk_size=chunk_size,
        progress=progress,
    ).add(g)
    dist, idx = index.search(q, min(int(list_length), g.shape[0]))
    return evaluate_retrieved(idx, dist, q_pids, g_pids, q_camids, g_camids, max_rank, topk=topk)
