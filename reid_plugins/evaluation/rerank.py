"""k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification with
k-reciprocal Encoding", CVPR 2017), written from the paper's description.

Notation: the *pool* is all queries followed by all gallery samples (``N = N_q + N_g``) and
``d`` the original distance between pool samples, assembled from the three input matrices.

* ``N(x, k)``: ``x`` itself followed by its ``k`` nearest other pool samples (``x`` is its own
  first neighbour, ``d(x, x) = 0``; it is placed first explicitly, whatever the diagonal holds).
* k-reciprocal neighbours (Eq. 3): ``R(x, k) = {y in N(x, k) : x in N(y, k)}``.
* Expansion (Eq. 4): ``R*(x, k) = R(x, k) U R(y, k/2)`` for every ``y in R(x, k)`` with
  ``|R(x, k) & R(y, k/2)| >= 2/3 |R(y, k/2)|`` (``k/2`` rounded down, at least 1).
* Encoding (Eq. 7): ``V[x, y] = exp(-d(x, y))`` if ``y in R*(x, k1)`` else 0.
* Local query expansion (Eq. 11): ``V[x] <- mean of V[y] over y in N(x, k2)`` (``k2 = 0``
  disables it).
* Jaccard distance (Eq. 10): ``d_J(p, g) = 1 - sum_j min(V[p,j], V[g,j]) / sum_j max(...)``.
* Final distance (Eq. 12): ``d*(p, g) = (1 - lambda) d_J(p, g) + lambda d(p, g)``.

``V`` is kept sparse (each row has a few dozen to a few hundred non-zeros), so besides the
input matrices memory is ``O(N * k1 * k2)``. The input ``g_g_dist`` alone is ``N_g^2``: use
re-ranking for Market/Duke/CUHK03-size sets, not MSMT17.
"""

from __future__ import annotations

import logging
from typing import Tuple

import numpy as np
import scipy.sparse as sp

__all__ = ["re_ranking", "k_nearest", "k_reciprocal_sets"]

logger = logging.getLogger(__name__)

_ROW_BLOCK_ELEMS = 1 << 24


def _as_matrix(x, name: str, shape: Tuple[int, int]) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {x.shape}")
    if x.dtype.kind != "f":
        x = x.astype(np.float32)
    return x


class _Pool:
    """Read access to the (virtual) pool distance matrix ``[[q_q, q_g], [q_g.T, g_g]]``."""

    def __init__(self, q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray) -> None:
        self.q_g, self.q_q, self.g_g = q_g, q_q, g_g
        self.nq, self.ng = q_g.shape
        self.n = self.nq + self.ng

    def rows(self, s: int, e: int) -> np.ndarray:
        """Rows ``s:e`` of the pool matrix (float64 copy)."""
        parts = []
        if s < self.nq:
            qe = min(e, self.nq)
            parts.append(np.concatenate([self.q_q[s:qe], self.q_g[s:qe]], axis=1))
        if e > self.nq:
            gs, ge = max(s, self.nq) - self.nq, e - self.nq
            parts.append(np.concatenate([self.q_g[:, gs:ge].T, self.g_g[gs:ge]], axis=1))
        return np.concatenate(parts, axis=0).astype(np.float64)

    def at(self, r: np.ndarray, c: np.ndarray) -> np.ndarray:
        """Entries ``d(r[i], c[i])`` (float64)."""
        out = np.empty(r.shape[0], dtype=np.float64)
        nq = self.nq
        rq, cq = r < nq, c < nq
        for rm, cm, mat, roff, coff, tr in (
            (rq, cq, self.q_q, 0, 0, False),
            (rq, ~cq, self.q_g, 0, nq, False),
            (~rq, cq, self.q_g, nq, 0, True),
            (~rq, ~cq, self.g_g, nq, nq, False),
        ):
            m = rm & cm
            if m.any():
                rr, cc = r[m] - roff, c[m] - coff
                out[m] = mat[cc, rr] if tr else mat[rr, cc]
        return out


def k_nearest(pool: _Pool, k: int) -> np.ndarray:
    """``(N, k+1)`` indices of ``N(x, k)``: ``x`` first, then its ``k`` nearest others by
    increasing distance (ties inside the set ordered by index; which of several samples tied
    at the k-th distance gets in is up to ``np.argpartition``)."""
    n = pool.n
    k = min(k, n - 1)
    out = np.empty((n, k + 1), dtype=np.int64)
    step = max(1, _ROW_BLOCK_ELEMS // n)
    for s in range(0, n, step):
        e = min(s + step, n)
        d = pool.rows(s, e)
        r = np.arange(e - s)
        d[r, np.arange(s, e)] = np.inf  # self is added explicitly below
        if k < n - 1:
            part = np.argpartition(d, k - 1, axis=1)[:, :k] if k > 0 else np.empty((e - s, 0), int)
        else:
            part = np.argsort(d, axis=1)[:, :k]
        dk = d[r[:, None], part]
        o = np.lexsort((part, dk), axis=1) if k > 0 else part
        out[s:e, 0] = np.arange(s, e)
        out[s:e, 1:] = np.take_along_axis(part, o, axis=1)
    return out


def k_reciprocal_sets(nn: np.ndarray, k: int) -> sp.csr_matrix:
    """Boolean CSR ``(N, N)``: row ``x`` marks ``R(x, k)`` given ``nn = k_nearest(.., K>=k)``."""
    n = nn.shape[0]
    cols = nn[:, : k + 1]
    rows = np.repeat(np.arange(n), cols.shape[1])
    cols = cols.reshape(-1)
    member = sp.csr_matrix((np.ones(rows.size, dtype=bool), (rows, cols)), shape=(n, n))
    # y in N(x) and x in N(y)  <=>  entry (x, y) of member AND member.T
    return member.multiply(member.T).tocsr().astype(bool)


def _expanded_sets(nn: np.ndarray, k1: int) -> sp.csr_matrix:
    """``R*(x, k1)`` as a boolean CSR matrix (Eq. 4)."""
    r_full = k_reciprocal_sets(nn, k1).astype(np.float32)
    r_half = k_reciprocal_sets(nn, max(1, k1 // 2)).astype(np.float32)
    half_size = np.asarray(r_half.sum(axis=1)).ravel()
    # overlap[x, y] = |R(x,k1) & R(y,k1/2)|, needed only where y in R(x, k1)
    overlap = (r_full @ r_half.T).multiply(r_full).tocoo()
    keep = overlap.data >= (2.0 / 3.0) * half_size[overlap.col] - 1e-9
    n = nn.shape[0]
    chosen = sp.csr_matrix(
        (np.ones(int(keep.sum()), dtype=np.float32), (overlap.row[keep], overlap.col[keep])),
        shape=(n, n),
    )
    expanded = r_full + chosen @ r_half
    return expanded.astype(bool).tocsr()


def _final_distance(
    v: sp.csr_matrix, q_g: np.ndarray, lam: float, max_triples: int = 1 << 22
) -> np.ndarray:
    """``(1 - lam) d_J + lam d`` for query rows ``0..nq`` against gallery rows ``nq..`` of
    ``v`` (Eq. 10 and 12), computed on blocks of queries from the sparse non-zeros only."""
    nq, ng = q_g.shape
    vg = v[nq:].tocsc()  # column j -> gallery rows g with V[g, j] > 0
    vg.sort_indices()
    col_nnz = np.diff(vg.indptr).astype(np.float64)
    vq_all = v[:nq].tocsr()
    sums = np.asarray(v.sum(axis=1)).ravel()
    # Work per query row = number of (j, g) pairs visited; split queries to bound temporaries.
    pattern = vq_all.copy()
    pattern.data = np.ones_like(pattern.data)
    cost = np.asarray(pattern @ col_nnz).ravel()
    block_id = np.cumsum(cost) // max_triples
    bounds = [0, *(np.flatnonzero(np.diff(block_id)) + 1).tolist(), nq]
    out = np.empty((nq, ng), dtype=np.float32)
    for s, e in zip(bounds[:-1], bounds[1:]):
        vq = vq_all[s:e].tocoo()
        cnt = vg.indptr[vq.col + 1] - vg.indptr[vq.col]
        total = int(cnt.sum())
        # every non-zero (p, j) of the block paired with every gallery g with V[g, j] > 0
        rep = np.repeat(np.arange(vq.nnz), cnt)
        pos = vg.indptr[vq.col[rep]] + (np.arange(total) - np.repeat(np.cumsum(cnt) - cnt, cnt))
        mins = np.minimum(vq.data[rep], vg.data[pos])
        flat = vq.row[rep].astype(np.int64) * ng + vg.indices[pos]
        inter = np.bincount(flat, weights=mins, minlength=(e - s) * ng).reshape(e - s, ng)
        union = sums[s:e, None] + sums[None, nq:] - inter
        d_j = 1.0 - inter / np.maximum(union, 1e-12)
        out[s:e] = (1.0 - lam) * d_j + lam * q_g[s:e].astype(np.float64)
    return out


def re_ranking(
    q_g_dist,
    q_q_dist,
    g_g_dist,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """k-reciprocal re-ranking of a query x gallery distance matrix.

    Args:
        q_g_dist: ``(N_q, N_g)`` original distances (lower = more similar), e.g. cosine
            distance or (squared) Euclidean distance of L2-normalised features. The Gaussian
            kernel ``exp(-d)`` uses them as given.
        q_q_dist: ``(N_q, N_q)`` query-query distances.
        g_g_dist: ``(N_g, N_g)`` gallery-gallery distances.
        k1: neighbourhood size of the k-reciprocal sets (paper: 20).
        k2: local query expansion size (paper: 6; 0 disables it).
        lambda_value: weight of the original distance in the final mix (paper: 0.3);
            1 returns ``q_g_dist`` unchanged, 0 the pure Jaccard distance.

    Returns:
        float32 ``(N_q, N_g)`` re-ranked distances.

    Raises:
        ValueError: wrong shapes, ``k1 < 1``, ``k2 < 0`` or ``lambda_value`` outside [0, 1].
    """
    q_g = np.asarray(q_g_dist.detach().cpu() if hasattr(q_g_dist, "detach") else q_g_dist)
    if q_g.ndim != 2:
        raise ValueError(f"q_g_dist must be 2-D (num_query, num_gallery), got {q_g.shape}")
    nq, ng = q_g.shape
    q_q = _as_matrix(q_q_dist, "q_q_dist", (nq, nq))
    g_g = _as_matrix(g_g_dist, "g_g_dist", (ng, ng))
    q_g = _as_matrix(q_g, "q_g_dist", (nq, ng))
    if int(k1) < 1 or int(k2) < 0:
        raise ValueError(f"re_ranking needs k1 >= 1 and k2 >= 0, got k1={k1}, k2={k2}")
    if not 0.0 <= float(lambda_value) <= 1.0:
        raise ValueError(f"lambda_value must be in [0, 1], got {lambda_value}")
    if nq == 0 or ng == 0:
        raise ValueError(f"re_ranking needs queries and gallery samples, got {nq} and {ng}")
    lam = float(lambda_value)
    pool = _Pool(q_g, q_q, g_g)
    n = pool.n
    nn = k_nearest(pool, max(int(k1), int(k2)))
    rstar = _expanded_sets(nn, int(k1)).tocoo()
    weights = np.exp(-pool.at(rstar.row.astype(np.int64), rstar.col.astype(np.int64)))
    v = sp.csr_matrix((weights, (rstar.row, rstar.col)), shape=(n, n))
    if k2 > 0:
        qe = nn[:, : int(k2) + 1]
        rows = np.repeat(np.arange(n), qe.shape[1])
        avg = sp.csr_matrix(
            (np.full(rows.size, 1.0 / qe.shape[1]), (rows, qe.reshape(-1))), shape=(n, n)
        )
        v = (avg @ v).tocsr()
    return _final_distance(v, q_g, lam)
