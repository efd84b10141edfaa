"""ReID ranking metrics (Market-1501 protocol): CMC, mAP and mINP.

Protocol (the Market-1501 CMC/mAP evaluation of the field's reference code), for every query:

1. Rank the whole gallery by increasing distance. **Ties keep gallery order**: the sort is
   stable, so of two gallery samples at the same distance the one with the smaller gallery
   index ranks first. The result is therefore deterministic and independent of chunking.
2. Remove gallery samples with the same pid **and** the same camera as the query, and junk
   samples (pid ``-1``). Distractors (pid ``0``) are kept: they are ordinary negatives.
3. A query without any remaining true match is skipped (and counted in
   ``num_skipped_queries``).
4. With the true matches at 1-based ranks ``r_1 < ... < r_m`` of the remaining list:
   ``AP = mean_i(i / r_i)`` (precision at each true match, not interpolated),
   ``INP = m / r_m`` and ``cmc[k] = 1 if r_1 <= k + 1``.
5. ``mAP``, ``mINP`` and the CMC curve are means over the valid queries.

The CMC curve always has ``max_rank`` entries. When ``max_rank`` exceeds the gallery size the
curve is padded with its last value (which is 1.0, since every valid query has a true match).

Everything is vectorised over blocks of queries (one stable sort per block, no Python loop over
queries or gallery samples). :func:`evaluate_features` streams: it computes distances for
``chunk_size`` queries at a time and ranks them, so the full ``N_q x N_g`` matrix never exists.
Metrics are fractions in ``[0, 1]`` here; :class:`~reid_plugins.evaluation.ReIDEvaluator`
reports percentages.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Union

import numpy as np
import torch
from tqdm import tqdm

from .distance import GalleryDistance, as_feature_tensor

__all__ = ["evaluate_rank", "evaluate_features", "stable_argsort_rows"]

logger = logging.getLogger(__name__)

# Ranking works on blocks of at most this many distance entries (bounds its temporaries to a
# few hundred MB whatever the chunk size; results do not depend on it).
_BLOCK_ELEMS = 1 << 22
_LOW32 = np.uint64(0xFFFFFFFF)
_SIGN32 = np.uint32(0x80000000)

ArrayLike = Union[np.ndarray, torch.Tensor, List[Any]]


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _labels(x: ArrayLike, name: str, n: Optional[int] = None) -> np.ndarray:
    arr = _to_numpy(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries but {n} were expected")
    return arr


def stable_argsort_rows(block: np.ndarray) -> np.ndarray:
    """Row-wise stable ascending argsort (ties keep column order) of a 2-D array.

    For float32 (and float16) input it sorts one uint64 key per entry: the order-preserving
    bit pattern of the value in the high 32 bits and the column index in the low 32 bits. That
    is exactly the stable order, and several times faster than ``np.argsort(kind="stable")``,
    which is used for other dtypes. ``-0.0`` and ``0.0`` compare equal, as in numpy.

    Raises:
        ValueError: the block contains NaN.
    """
    if block.dtype == np.float16:
        block = block.astype(np.float32)
    rows, cols = block.shape
    if block.dtype != np.float32 or cols >= 2**32 or block.size == 0:
        if block.dtype.kind == "f" and block.size and np.isnan(block.min()):
            raise ValueError("distance matrix contains NaN")
        return np.argsort(block, axis=1, kind="stable")
    block = np.ascontiguousarray(block)
    if block.size and np.isnan(block.min()):
        raise ValueError("distance matrix contains NaN")
    bits = block.view(np.uint32)
    if bits.max() >= _SIGN32:
        # Negative values (or -0.0): map IEEE bits to an unsigned order-preserving code.
        bits = (block + np.float32(0.0)).view(np.uint32)  # -0.0 -> +0.0
        flip = (bits.view(np.int32) >> 31).view(np.uint32)
        flip |= _SIGN32
        bits ^= flip
    # (Otherwise all values are non-negative and the raw bit pattern already sorts like them.)
    keys = np.empty((rows, cols), dtype=np.uint64)
    np.left_shift(bits, np.uint64(32), out=keys, dtype=np.uint64)
    keys |= np.arange(cols, dtype=np.uint64)
    keys.sort(axis=1)
    keys &= _LOW32
    return keys.view(np.int64)


def _rank_block(
    dist: np.ndarray,
    qp: np.ndarray,
    qc: np.ndarray,
    gp: np.ndarray,
    gc: np.ndarray,
    has_junk: bool,
    topk: int,
) -> Dict[str, np.ndarray]:
    """Per-query metrics of one block of distance rows (all arrays indexed by block row)."""
    rows, ng = dist.shape
    order = stable_argsort_rows(dist)
    order_flat = order.reshape(-1)
    spids = gp[order]  # gallery pids in ranked order
    match = spids == qp[:, None]
    flat_m = np.flatnonzero(match)
    del match
    rows_m = flat_m // ng
    same_cam = gc[order_flat[flat_m]] == qc[rows_m]
    good = flat_m[~same_cam]
    removed = flat_m[same_cam]
    if has_junk:
        good = good[qp[good // ng] != -1]  # a junk query (pid -1) has no true match
        removed = np.union1d(removed, np.flatnonzero(spids == -1))
    del spids
    rows_g = good // ng
    # 0-based rank among the remaining samples = position - removed samples before it.
    start_of_row = rows_g * ng
    rank0 = (good - start_of_row) - (
        np.searchsorted(removed, good) - np.searchsorted(removed, start_of_row)
    )
    n_good = np.bincount(rows_g, minlength=rows)
    first = np.cumsum(n_good) - n_good  # index in `good` of each row's first true match
    nth = np.arange(good.size) - first[rows_g] + 1  # i of the i-th true match of its row
    ap_sum = np.bincount(rows_g, weights=nth / (rank0 + 1.0), minlength=rows)
    valid = n_good > 0
    ap = np.full(rows, np.nan)
    inp = np.full(rows, np.nan)
    first_rank = np.full(rows, -1, dtype=np.int64)
    ap[valid] = ap_sum[valid] / n_good[valid]
    inp[valid] = n_good[valid] / (rank0[first[valid] + n_good[valid] - 1] + 1.0)
    first_rank[valid] = rank0[first[valid]]
    out = {"valid": valid, "ap": ap, "inp": inp, "first_rank": first_rank}
    if topk > 0:
        out.update(_topk_kept(dist, order, removed, rows, ng, topk))
    return out


def _topk_kept(dist, order, removed, rows, ng, topk):
    """Gallery indices / distances of the first ``topk`` remaining samples of each row."""
    rows_r, cols_r = removed // ng, removed % ng
    n_removed = np.bincount(rows_r, minlength=rows)
    width = min(ng, topk + (int(n_removed.max()) if rows else 0))
    is_removed = np.zeros((rows, width), dtype=bool)
    inside = cols_r < width
    is_removed[rows_r[inside], cols_r[inside]] = True
    k = min(topk, width)
    pos = np.argsort(is_removed, axis=1, kind="stable")[:, :k]  # kept positions first
    r = np.arange(rows)[:, None]
    ok = ~is_removed[r, pos]
    idx = np.where(ok, order[r, pos], -1)
    d = np.where(ok, dist[r, np.maximum(idx, 0)], np.nan)
    if k < topk:
        idx = np.pad(idx, ((0, 0), (0, topk - k)), constant_values=-1)
        d = np.pad(d, ((0, 0), (0, topk - k)), constant_values=np.nan)
    return {"topk_indices": idx.astype(np.int64), "topk_distances": d.astype(np.float64)}


class _RankAccumulator:
    """Ranks distance rows block by block (optionally on threads) and aggregates metrics."""

    def __init__(self, q_pids, g_pids, q_camids, g_camids, max_rank, topk, num_threads):
        if int(max_rank) < 1:
            raise ValueError(f"max_rank must be >= 1, got {max_rank}")
        if int(topk) < 0:
            raise ValueError(f"topk must be >= 0, got {topk}")
        self.qp, self.qc, self.gp, self.gc = q_pids, q_camids, g_pids, g_camids
        self.max_rank, self.topk = int(max_rank), int(topk)
        self.has_junk = bool(np.any(g_pids == -1))
        ng = g_pids.shape[0]
        self.rows_per_block = max(1, _BLOCK_ELEMS // max(ng, 1))
        if num_threads is None:
            num_threads = min(os.cpu_count() or 1, torch.get_num_threads())
        self.num_threads = max(1, int(num_threads))
        self._pool = ThreadPoolExecutor(self.num_threads) if self.num_threads > 1 else None
        self._parts: List[Dict[str, np.ndarray]] = []

    def add(self, dist: np.ndarray, q_start: int) -> None:
        """Rank rows ``q_start .. q_start + len(dist)`` of the (virtual) distance matrix."""
        n = dist.shape[0]
        starts = range(0, n, self.rows_per_block)

        def work(s: int) -> Dict[str, np.ndarray]:
            e = min(s + self.rows_per_block, n)
            qs = slice(q_start + s, q_start + e)
            return _rank_block(
                dist[s:e], self.qp[qs], self.qc[qs], self.gp, self.gc, self.has_junk, self.topk
            )

        if self._pool is None or len(starts) == 1:
            self._parts.extend(work(s) for s in starts)
        else:
            self._parts.extend(self._pool.map(work, starts))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def result(self) -> Dict[str, Any]:
        self.close()
        cat = {k: np.concatenate([p[k] for p in self._parts]) for k in self._parts[0]}
        valid = cat["valid"]
        nq, num_valid = valid.shape[0], int(valid.sum())
        if num_valid == 0:
            raise ValueError(
                f"No valid query: all {nq} queries were skipped because none of them has a true "
                "match left in the gallery after removing same-pid/same-camera samples and junk "
                "(pid -1) samples. Check that query and gallery pids overlap and that the "
                "camera ids are right."
            )
        if num_valid < nq:
            logger.info(
                "%d of %d queries have no true match in the gallery: skipped", nq - num_valid, nq
            )
        first = cat["first_rank"][valid]
        hist = np.bincount(np.minimum(first, self.max_rank), minlength=self.max_rank + 1)
        cmc = np.cumsum(hist[: self.max_rank]) / num_valid
        all_ap, all_inp = cat["ap"][valid], cat["inp"][valid]
        out: Dict[str, Any] = {
            "cmc": cmc,
            "mAP": float(all_ap.mean()),
            "mINP": float(all_inp.mean()),
            "all_AP": all_ap,
            "all_INP": all_inp,
            "num_valid_queries": num_valid,
            "num_skipped_queries": nq - num_valid,
            "query_valid": valid,
        }
        if self.topk > 0:
            out["topk_indices"] = cat["topk_indices"]
            out["topk_distances"] = cat["topk_distances"]
        return out


def _check_sizes(nq: int, ng: int) -> None:
    if nq == 0:
        raise ValueError("Empty query set: ReID evaluation needs at least one query")
    if ng == 0:
        raise ValueError("Empty gallery set: ReID evaluation needs at least one gallery sample")


def evaluate_rank(
    distmat: ArrayLike,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    max_rank: int = 50,
    *,
    chunk_size: Optional[int] = None,
    topk: int = 0,
    num_threads: Optional[int] = None,
    progress: bool = False,
) -> Dict[str, Any]:
    """CMC, mAP and mINP from a query x gallery distance matrix (lower = more similar).

    Args:
        distmat: ``(N_q, N_g)`` distances (numpy or CPU tensor). float32 uses a fast exact
            stable sort; other dtypes use ``np.argsort(kind="stable")``.
        q_pids, g_pids, q_camids, g_camids: integer labels, ``(N_q,)`` / ``(N_g,)``.
        max_rank: length of the CMC curve (padded with its last value past the gallery size).
        chunk_size: queries handed to the ranker at a time (``None`` = all at once). The
            ranker itself works on blocks of at most ~4M distance entries (~100 MB of
            temporaries per thread), so memory does not grow with it; results never depend
            on it.
        topk: if > 0, also return the first ``topk`` *remaining* gallery samples of every query
            (after same-pid/same-camera and junk removal): ``topk_indices`` (gallery indices,
            ``-1`` padded) and ``topk_distances`` (``NaN`` padded), shape ``(N_q, topk)``.
        num_threads: threads ranking blocks in parallel (default: torch's thread count).
        progress: show a tqdm bar over chunks.

    Returns:
        ``{"cmc": float64 (max_rank,), "mAP": float, "mINP": float,
        "all_AP": (num_valid,), "all_INP": (num_valid,), "num_valid_queries": int,
        "num_skipped_queries": int, "query_valid": bool (N_q,)}`` plus the top-k arrays when
        requested. All metrics are fractions in ``[0, 1]``.

    Raises:
        ValueError: shape mismatch, empty query or gallery set, NaN distances, or no query
            with a true match (the message says how many were skipped and why).
    """
    dist = _to_numpy(distmat)
    if dist.ndim != 2:
        raise ValueError(f"distmat must be 2-D (num_query, num_gallery), got shape {dist.shape}")
    nq, ng = dist.shape
    qp = _labels(q_pids, "q_pids", nq)
    gp = _labels(g_pids, "g_pids", ng)
    qc = _labels(q_camids, "q_camids", nq)
    gc = _labels(g_camids, "g_camids", ng)
    _check_sizes(nq, ng)
    if chunk_size is not None and int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1 or None, got {chunk_size}")
    acc = _RankAccumulator(qp, gp, qc, gc, max_rank, topk, num_threads)
    step = nq if chunk_size is None else int(chunk_size)
    try:
        for s in tqdm(range(0, nq, step), desc="ranking", disable=not progress, leave=False):
            acc.add(dist[s : s + step], s)
    finally:
        acc.close()
    return acc.result()


def evaluate_features(
    q_feats: ArrayLike,
    g_feats: ArrayLike,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    metric: str = "cosine",
    max_rank: int = 50,
    chunk_size: int = 1024,
    *,
    pairwise_fn: Optional[Callable[[torch.Tensor, torch.Tensor], Any]] = None,
    device: Optional[Union[str, torch.device]] = None,
    topk: int = 0,
    num_threads: Optional[int] = None,
    progress: bool = False,
) -> Dict[str, Any]:
    """Streamed :func:`evaluate_rank`: distances are computed and ranked ``chunk_size`` queries
    at a time, so memory is bounded by ``chunk_size x N_g`` (plus the features).

    Results equal ``evaluate_rank(compute_distance(q_feats, g_feats, metric), ...)`` (the
    float32 matmul is the same; BLAS may round the last bit differently for other chunk shapes,
    which only matters for distances that tie to within one ulp).

    Args:
        q_feats, g_feats: ``(N_q, D)`` / ``(N_g, D)`` features (numpy or torch), used as
            float32.
        metric: ``"cosine"`` or ``"euclidean"`` (squared), see
            :mod:`reid_plugins.evaluation.distance`. Ignored when ``pairwise_fn`` is given.
        pairwise_fn: optional model-provided distance, called as
            ``pairwise_fn(q_chunk, g_feats)`` with float32 tensors on ``device``; must return a
            ``(len(q_chunk), N_g)`` tensor/array, lower = more similar (wrap a similarity
            ``s`` as ``-s`` or ``1 - s``).
        device: where distances are computed (default: ``q_feats``'s device for tensors, CPU
            otherwise). The gallery is moved there once.
        chunk_size, max_rank, topk, num_threads, progress: see :func:`evaluate_rank`.

    Returns:
        Same dict as :func:`evaluate_rank`.

    Raises:
        ValueError: as :func:`evaluate_rank`; also feature dimension mismatch or a
            ``pairwise_fn`` returning the wrong shape.
    """
    if device is None:
        device = q_feats.device if isinstance(q_feats, torch.Tensor) else torch.device("cpu")
    q = as_feature_tensor(q_feats, "q_feats")
    g = as_feature_tensor(g_feats, "g_feats", device)
    nq, ng = q.shape[0], g.shape[0]
    qp = _labels(q_pids, "q_pids", nq)
    gp = _labels(g_pids, "g_pids", ng)
    qc = _labels(q_camids, "q_camids", nq)
    gc = _labels(g_camids, "g_camids", ng)
    _check_sizes(nq, ng)
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    chunk_size = int(chunk_size)
    if pairwise_fn is None:
        dist_fn: Callable[[torch.Tensor], Any] = GalleryDistance(g, metric)
    else:
        dist_fn = lambda qc_: pairwise_fn(qc_, g)  # noqa: E731
    acc = _RankAccumulator(qp, gp, qc, gc, max_rank, topk, num_threads)
    try:
        for s in tqdm(
            range(0, nq, chunk_size), desc="distance+rank", disable=not progress, leave=False
        ):
            q_chunk = q[s : s + chunk_size].to(device)
            with torch.no_grad():
                d = _to_numpy(dist_fn(q_chunk))
            if d.shape != (q_chunk.shape[0], ng):
                raise ValueError(
                    f"pairwise_fn returned shape {d.shape} for a chunk of {q_chunk.shape[0]} "
                    f"queries and {ng} gallery samples; expected {(q_chunk.shape[0], ng)}"
                )
            acc.add(d, s)
            del d
    finally:
        acc.close()
    return acc.result()
