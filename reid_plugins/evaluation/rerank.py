"""k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification with
k-reciprocal Encoding", CVPR 2017).

Notation: the *pool* is all queries followed by all gallery samples (``N = N_q + N_g``) and
``d`` the original distance between pool samples, assembled from the three input matrices.
``R(x, k) = {y in N(x, k) : x in N(y, k)}`` are the k-reciprocal neighbours of ``x`` (Eq. 3).

``variant="authors"`` (default) computes what the authors' released ``re_ranking`` computes
(zhunzhong07/person-re-ranking, the copy shipped in torchreid and used by fast-reid-era
code), the code behind every published "+re-ranking" number; outputs agree to 1e-6:

* ``D[x, y] = d(y, x)^2 / max_z d(z, x)^2`` (squared, divided by the column maximum, then
  transposed: for symmetric inputs each row is divided by its maximum); everything below
  uses ``D``.
* ``N(x, k)``: the first ``k + 1`` entries of ``x``'s row of ``D`` in increasing order (``x``
  itself first when ``D[x, x]`` is the row's unique minimum; ties by index).
* Expansion: ``R*(x) = R(x, k1) U R(y, h)`` for every ``y in R(x, k1)`` with
  ``|R(x, k1) & R(y, h)| > 2/3 |R(y, h)|``, ``h = round(k1 / 2)`` (numpy's round half to even).
* ``V[x, y] = exp(-D[x, y]) / sum_{z in R*(x)} exp(-D[x, z])`` on ``R*(x)`` (rows sum to 1).
* Local query expansion: ``V[x] <- mean of V[y]`` over the first ``k2`` entries of ``x``'s
  ranking (``x`` included; ``k2 = 1`` disables it).
* ``d_J(p, g) = 1 - s / (2 - s)`` with ``s = sum_j min(V[p, j], V[g, j])``.
* ``d*(p, g) = (1 - lambda) d_J(p, g) + lambda D[p, g]``.

``variant="paper"`` follows the paper's equations literally: ``N(x, k)`` is ``x`` followed by
its ``k`` nearest others in ``d``; ``h = max(1, floor(k1 / 2))`` and the test is ``>= 2/3``
(Eq. 4); ``V[x, y] = exp(-d(x, y))`` unnormalised (Eq. 7); query expansion averages the
``k2 + 1`` rows of ``N(x, k2)`` (Eq. 11, ``k2 = 0`` disables it); the Jaccard distance uses
``sum max`` (Eq. 10) and the final mix the raw distance ``d`` (Eq. 12).

``V`` is kept sparse (each row has a few dozen to a few hundred non-zeros) and the pool
distance matrix is only read in row blocks, never assembled, so besides the input matrices
memory is ``O(N * k1 * k2)``. The input ``g_g_dist`` alone is ``N_g^2``: use re-ranking for
Market/Duke/CUHK03-size sets, not MSMT17.
"""

from __future__ import annotations

import logging
from typing import Tuple

import numpy as np
import scipy.sparse as sp

__all__ = ["re_ranking", "k_nearest", "k_reciprocal_sets", "RERANK_VARIANTS"]

RERANK_VARIANTS = ("authors", "paper")

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

    def rows(self, s: int, e: int, dtype=np.float64) -> np.ndarray:
        """Rows ``s:e`` of the pool matrix (a copy; ``dtype=None`` keeps the inputs' type)."""
        parts = []
        if s < self.nq:
            qe = min(e, self.nq)
            parts.append(np.concatenate([self.q_q[s:qe], self.q_g[s:qe]], axis=1))
        if e > self.nq:
            gs, ge = max(s, self.nq) - self.nq, e - self.nq
            parts.append(np.concatenate([self.q_g[:, gs:ge].T, self.g_g[gs:ge]], axis=1))
        out = np.concatenate(parts, axis=0)
        return out if dtype is None else out.astype(dtype, copy=False)

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


def _ranked(pool: _Pool, width: int, *, authors: bool) -> Tuple[np.ndarray, np.ndarray]:
    """``(N, width)`` indices of each pool row's ``width`` smallest entries, increasing (ties
    by index), and the per-row scale.

    ``authors``: ranks the rows of ``D = d^2 / rowmax(d^2)`` (float32, as the released code)
    including the diagonal; the scale is ``rowmax(d^2)``. Else ranks ``d`` with the sample
    itself forced first (then ``width - 1`` nearest others); the scale is 1.
    """
    n = pool.n
    width = min(width, n)
    out = np.empty((n, width), dtype=np.int64)
    scale = np.ones(n, dtype=np.float32)
    step = max(1, _ROW_BLOCK_ELEMS // n)
    for s in range(0, n, step):
        e = min(s + step, n)
        r = np.arange(e - s)
        if authors:
            d = pool.rows(s, e, dtype=None)
            d = np.square(d).astype(np.float32, copy=False)
            scale[s:e] = d.max(axis=1)
            d /= scale[s:e, None]
            k = width
        else:
            d = pool.rows(s, e)
            d[r, np.arange(s, e)] = np.inf  # self is added explicitly below
            k = width - 1
        if k <= 0:
            part = np.empty((e - s, 0), dtype=np.int64)
        elif k < d.shape[1]:
            part = np.argpartition(d, k - 1, axis=1)[:, :k]
        else:
            part = np.argsort(d, axis=1)[:, :k]
        o = np.lexsort((part, d[r[:, None], part]), axis=1) if k > 0 else part
        part = np.take_along_axis(part, o, axis=1)
        if authors:
            out[s:e] = part
        else:
            out[s:e, 0] = np.arange(s, e)
            out[s:e, 1:] = part
    return out, scale


def k_nearest(pool: _Pool, k: int) -> np.ndarray:
    """``(N, k+1)`` indices of ``N(x, k)`` of the paper form: ``x`` first, then its ``k``
    nearest others by increasing distance (ties inside the set ordered by index; which of
    several samples tied at the k-th distance gets in is up to ``np.argpartition``)."""
    return _ranked(pool, k + 1, authors=False)[0]


def k_reciprocal_sets(nn: np.ndarray, k: int) -> sp.csr_matrix:
    """Boolean CSR ``(N, N)``: row ``x`` marks ``R(x, k)`` given ``nn = k_nearest(.., K>=k)``."""
    n = nn.shape[0]
    cols = nn[:, : k + 1]
    rows = np.repeat(np.arange(n), cols.shape[1])
    cols = cols.reshape(-1)
    member = sp.csr_matrix((np.ones(rows.size, dtype=bool), (rows, cols)), shape=(n, n))
    # y in N(x) and x in N(y)  <=>  entry (x, y) of member AND member.T
    return member.multiply(member.T).tocsr().astype(bool)


def _expanded_sets(nn: np.ndarray, k1: int, authors: bool) -> sp.csr_matrix:
    """``R*(x, k1)`` as a boolean CSR matrix (see the module docstring for both variants)."""
    half = int(np.around(k1 / 2.0)) if authors else max(1, k1 // 2)
    r_full = k_reciprocal_sets(nn, k1).astype(np.float32)
    r_half = k_reciprocal_sets(nn, half).astype(np.float32)
    half_size = np.asarray(r_half.sum(axis=1)).ravel()
    # overlap[x, y] = |R(x,k1) & R(y,half)|, needed only where y in R(x, k1)
    overlap = (r_full @ r_half.T).multiply(r_full).tocoo()
    if authors:
        keep = overlap.data > (2.0 / 3.0) * half_size[overlap.col]
    else:
        keep = overlap.data >= (2.0 / 3.0) * half_size[overlap.col] - 1e-9
    n = nn.shape[0]
    chosen = sp.csr_matrix(
        (np.ones(int(keep.sum()), dtype=np.float32), (overlap.row[keep], overlap.col[keep])),
        shape=(n, n),
    )
    expanded = r_full + chosen @ r_half
    return expanded.astype(bool).tocsr()


def _final_distance(
    v: sp.csr_matrix, q_g: np.ndarray, lam: float, authors: bool, max_triples: int = 1 << 22
) -> np.ndarray:
    """``(1 - lam) d_J + lam q_g`` for query rows ``0..nq`` against gallery rows ``nq..`` of
    ``v``, ``d_J = 1 - sum min / sum max`` with ``sum max = sum_p + sum_g - sum min`` (paper)
    or ``2 - sum min`` (authors: exact for rows summing to 1; kept also for the rows of
    samples without reciprocal neighbour), computed on blocks of queries from the sparse
    non-zeros only."""
    nq, ng = q_g.shape
    vg = v[nq:].tocsc()  # column j -> gallery rows g with V[g, j] > 0
    vg.sort_indices()
    col_nnz = np.diff(vg.indptr).astype(np.float64)
    vq_all = v[:nq].tocsr()
    sums = np.ones(v.shape[0]) if authors else np.asarray(v.sum(axis=1)).ravel()
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
    *,
    variant: str = "authors",
) -> np.ndarray:
    """k-reciprocal re-ranking of a query x gallery distance matrix.

    Args:
        q_g_dist: ``(N_q, N_g)`` original distances (lower = more similar), e.g. cosine
            distance or Euclidean distance. The authors' variant squares them (see the module
            docstring).
        q_q_dist: ``(N_q, N_q)`` query-query distances.
        g_g_dist: ``(N_g, N_g)`` gallery-gallery distances.
        k1: neighbourhood size of the k-reciprocal sets (paper: 20).
        k2: local query expansion size (paper: 6). ``"authors"``: rows averaged, ``>= 1``
            (1 disables it); ``"paper"``: neighbours besides the sample, ``>= 0``.
        lambda_value: weight of the original distance in the final mix (paper: 0.3); 0 gives
            the pure Jaccard distance.
        variant: ``"authors"`` (the released code, default) or ``"paper"`` (the equations).

    Returns:
        float32 ``(N_q, N_g)`` re-ranked distances.

    Raises:
        ValueError: wrong shapes, ``k1 < 1``, ``k2`` below its minimum, ``lambda_value``
            outside [0, 1] or an unknown ``variant``.
    """
    if variant not in RERANK_VARIANTS:
        raise ValueError(f"re_ranking variant must be one of {RERANK_VARIANTS}, got '{variant}'")
    authors = variant == "authors"
    q_g = np.asarray(q_g_dist.detach().cpu() if hasattr(q_g_dist, "detach") else q_g_dist)
    if q_g.ndim != 2:
        raise ValueError(f"q_g_dist must be 2-D (num_query, num_gallery), got {q_g.shape}")
    nq, ng = q_g.shape
    q_q = _as_matrix(q_q_dist, "q_q_dist", (nq, nq))
    g_g = _as_matrix(g_g_dist, "g_g_dist", (ng, ng))
    q_g = _as_matrix(q_g, "q_g_dist", (nq, ng))
    k1, k2 = int(k1), int(k2)
    k2_min = 1 if authors else 0
    if k1 < 1 or k2 < k2_min:
        raise ValueError(
            f"re_ranking ({variant}) needs k1 >= 1 and k2 >= {k2_min}, got k1={k1}, k2={k2}"
        )
    if not 0.0 <= float(lambda_value) <= 1.0:
        raise ValueError(f"lambda_value must be in [0, 1], got {lambda_value}")
    if nq == 0 or ng == 0:
        raise ValueError(f"re_ranking needs queries and gallery samples, got {nq} and {ng}")
    lam = float(lambda_value)
    if authors:
        # the released code ranks the rows of the transposed matrix: pool^T = [[q_q^T, q_g],
        # [q_g^T, g_g^T]], i.e. the same layout with q_q and g_g transposed (views, no copy)
        pool = _Pool(q_g, q_q.T, g_g.T)
        nn, scale = _ranked(pool, max(k1 + 1, k2), authors=True)
    else:
        pool = _Pool(q_g, q_q, g_g)
        nn, scale = _ranked(pool, max(k1, k2) + 1, authors=False)
    n = pool.n
    rstar = _expanded_sets(nn, k1, authors).tocoo()
    rows, cols = rstar.row.astype(np.int64), rstar.col.astype(np.int64)
    d = pool.at(rows, cols)
    if authors:
        d = (np.square(d).astype(np.float32) / scale[rows]).astype(np.float64)
    weights = np.exp(-d)
    if authors:  # each row of V sums to 1
        weights /= np.bincount(rows, weights=weights, minlength=n)[rows]
    v = sp.csr_matrix((weights, (rows, cols)), shape=(n, n))
    n_qe = k2 if authors else (k2 + 1 if k2 > 0 else 1)
    if n_qe > 1:
        qe = nn[:, :n_qe]
        qe_rows = np.repeat(np.arange(n), qe.shape[1])
        avg = sp.csr_matrix(
            (np.full(qe_rows.size, 1.0 / qe.shape[1]), (qe_rows, qe.reshape(-1))), shape=(n, n)
        )
        v = (avg @ v).tocsr()
    if authors:
        q_g = np.square(q_g).astype(np.float32) / scale[:nq, None]
    return _final_distance(v, q_g, lam, authors)
