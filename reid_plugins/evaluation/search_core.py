"""Vectorised person-search core shared by the CUHK-SYSU and PRW protocols.

* :class:`SearchGallery`: all kept gallery detections concatenated image by image (built
  once, reused by every query and protocol).
* RCP, Ranking with Context Persons (TDN Eq. 6-8): :func:`rcp_rescore` on one gallery image,
  :func:`select_context` for a query's context persons, and its vectorised form used while
  ranking. RCP rescales only the candidate ``g`` (highest individual similarity) of each
  gallery image; the image's other detections keep ``S_I`` and stay in the ranking.
* :func:`rank_queries`: ranks the gallery detections of every query (in chunks; dense or
  sparse similarity products), labels the positives and computes AP and top-k. The protocol
  functions of :mod:`reid_plugins.evaluation.search_metrics` only plan each query's gallery
  (a :class:`QueryPlan`) and pass their ranking options (:class:`SearchOptions`).

Similarities are cosine (dot products of L2-normalised features); the protocol decisions
are documented in :mod:`reid_plugins.evaluation.search_metrics`.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from .detection_metrics import box_iou, iou_threshold

try:  # small per-query BLAS calls are much faster single-threaded (no thread wake-ups)
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - optional
    threadpool_limits = None

__all__ = [
    "RCPResult",
    "rcp_rescore",
    "select_context",
    "SearchGallery",
    "QueryPlan",
    "SearchOptions",
    "as_search_gallery",
    "rank_queries",
]

GalleryDets = Mapping[str, Tuple[np.ndarray, np.ndarray]]


def _l2n(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _iou_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise IoU of ``a (N,4)`` with ``b (N,4)``."""
    lt = np.maximum(a[:, :2], b[:, :2])
    rb = np.minimum(a[:, 2:], b[:, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = union - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


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
    (float32, as given; concatenated on first use), ``inv_norm (T,)`` (float32
    ``1 / ||feat||``, or None when every feature already has unit norm, within 1e-6),
    ``det_image (T,)`` image index of each detection. Similarities are
    ``feats @ q * inv_norm``: the features are never re-normalised, and not copied at all by
    the image-by-image products of :func:`rank_queries` (:meth:`image_sims`).
    """

    def __init__(self, gallery_dets: GalleryDets, det_thresh: float = 0.5) -> None:
        self.det_thresh = float(det_thresh)
        self.image_ids: List[str] = list(gallery_dets.keys())
        self.index = {k: i for i, k in enumerate(self.image_ids)}
        dets_l, feats_l, keeps = [], [], []
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
            dets_l.append(dets)
            feats_l.append(f)
            keeps.append(dets[:, 4] >= det_thresh)
        self.dim = dim or 0
        self.counts = np.fromiter((k.sum() for k in keeps), np.int64, len(keeps))
        self.starts = np.r_[0, np.cumsum(self.counts)[:-1]].astype(np.int64)
        total = int(self.counts.sum())
        self.boxes = np.zeros((total, 4))
        self.scores = np.zeros(total, np.float32)
        sq = np.empty(total, np.float32)
        # per image: the input features (not copied) and the kept rows (None = all)
        self._image_feats, self._image_keep = feats_l, []
        for d, f, k, s0, c in zip(dets_l, feats_l, keeps, self.starts, self.counts):
            all_kept = c == k.size
            self._image_keep.append(None if all_kept else k)
            if c == 0:
                continue
            self.boxes[s0 : s0 + c] = d[:, :4] if all_kept else d[k, :4]
            self.scores[s0 : s0 + c] = d[:, 4] if all_kept else d[k, 4]
            n2 = np.einsum("ij,ij->i", f, f)
            sq[s0 : s0 + c] = n2 if all_kept else n2[k]
        self.inv_norm: Optional[np.ndarray] = None
        if np.any(np.abs(sq - 1.0) > 1e-6):
            self.inv_norm = (1.0 / np.maximum(np.sqrt(sq), 1e-12)).astype(np.float32)
        self.det_image = np.repeat(np.arange(len(self.image_ids)), self.counts)
        self._feats: Optional[np.ndarray] = None

    @property
    def feats(self) -> np.ndarray:
        """``(T, D)`` float32 kept features, concatenated on first use."""
        if self._feats is None:
            out = np.empty((int(self.counts.sum()), self.dim), np.float32)
            for f, k, s0, c in zip(self._image_feats, self._image_keep, self.starts, self.counts):
                if c:
                    out[s0 : s0 + c] = f if k is None else f[k]
            self._feats = out
        return self._feats

    def image_sims(self, g: int, vectors: np.ndarray) -> np.ndarray:
        """``(counts[g], m)`` products of image ``g``'s kept features with ``vectors (m, D)``,
        without copying the features (unnormalised: multiply by ``inv_norm``)."""
        sims = self._image_feats[g] @ vectors.T
        k = self._image_keep[g]
        return sims if k is None else sims[k]

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


class QueryPlan(NamedTuple):
    """One query's gallery: sorted image indices, positive images and their gt boxes."""

    images: np.ndarray
    pos_images: np.ndarray
    pos_boxes: np.ndarray


class SearchOptions(NamedTuple):
    """Ranking options shared by the protocols (arguments of the same names of
    :func:`~reid_plugins.evaluation.search_metrics.search_cuhk_sysu`)."""

    topk: Sequence[int]
    rcp: Optional[Tuple[float, float]]
    query_context_feats: Optional[Sequence[np.ndarray]]
    query_ids: Optional[Sequence]
    record_topn: int
    chunk_size: int
    progress: bool


def as_search_gallery(gallery_dets, det_thresh: float) -> SearchGallery:
    """``gallery_dets`` if it is a prebuilt :class:`SearchGallery`, else one built from it."""
    if isinstance(gallery_dets, SearchGallery):
        return gallery_dets
    return SearchGallery(gallery_dets, det_thresh)


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


def _positives(
    gallery: SearchGallery, plan: QueryPlan, idx: np.ndarray, y: np.ndarray
) -> np.ndarray:
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


_BY_IMAGE_VALUES = 1 << 22  # similarities computed per block of queries (image by image)


def _sims_by_image(
    gallery: SearchGallery, q_all: np.ndarray, qs: range, plans: Sequence[QueryPlan]
) -> Tuple[np.ndarray, np.ndarray]:
    """Similarities of queries ``qs`` to the detections of their planned images, computed
    image by image (one ``(count, m)`` product per image for the ``m`` queries that list it).

    Returns ``(flat, bounds)``: query ``qs[i]``'s values (in the order of its detection
    indices, i.e. by image index then detection) are ``flat[bounds[i]:bounds[i + 1]]``.
    """
    n_img = np.fromiter((p.images.size for p in plans), np.int64, len(plans))
    pair_img = np.concatenate([p.images for p in plans]) if plans else np.zeros(0, np.int64)
    pair_q = np.repeat(np.arange(qs.start, qs.stop), n_img)
    pair_cnt = gallery.counts[pair_img]
    pair_off = np.cumsum(pair_cnt) - pair_cnt
    per_query = np.bincount(pair_q - qs.start, weights=pair_cnt, minlength=len(plans))
    bounds = np.r_[0, np.cumsum(per_query.astype(np.int64))]
    flat = np.empty(int(bounds[-1]), np.float32)
    nz = np.flatnonzero(pair_cnt)
    order = nz[np.argsort(pair_img[nz], kind="stable")]
    img = pair_img[order]
    if img.size == 0:
        return flat, bounds
    cut = np.r_[0, np.flatnonzero(np.diff(img)) + 1, img.size]
    rows = np.arange(int(gallery.counts.max()) if gallery.counts.size else 0)[:, None]
    for a, e in zip(cut[:-1], cut[1:]):
        g = img[a]
        sel = order[a:e]
        sims = gallery.image_sims(g, q_all[pair_q[sel]])  # (c, m)
        flat[pair_off[sel][None, :] + rows[: sims.shape[0]]] = sims
    return flat, bounds


def rank_queries(
    gallery: SearchGallery,
    query_feats,
    query_image_ids: Sequence[str],
    plan_fn: Callable[[int], QueryPlan],
    options: SearchOptions,
) -> Dict:
    """Rank the gallery planned by ``plan_fn(q)`` for every query ``q``; the result dict of
    :func:`~reid_plugins.evaluation.search_metrics.search_cuhk_sysu`."""
    topk, rcp, contexts, query_ids, record_topn, chunk_size, progress = options
    q_all = _l2n(np.asarray(query_feats, dtype=np.float32))
    nq = len(query_image_ids)
    if q_all.ndim != 2 or q_all.shape[0] != nq:
        raise ValueError(f"query_feats must be ({nq}, D), got {q_all.shape}")
    if gallery.scores.shape[0] and q_all.shape[1] != gallery.dim:
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
    T = gallery.scores.shape[0]
    aps = np.zeros(nq)
    hits = np.zeros((nq, len(topk)), dtype=bool)
    records = []
    bar = tqdm(total=nq, desc="person search", disable=not progress, leave=False)
    inv_norm = gallery.inv_norm
    c0 = 0
    while c0 < nq:
        c1 = min(nq, c0 + chunk_size)
        plans = [plan_fn(q) for q in range(c0, c1)]
        det_idx = [_expand(gallery.starts[p.images], gallery.counts[p.images]) for p in plans]
        n_det = sum(d.size for d in det_idx)
        # dense: one matmul of the chunk against every gallery detection; sparse: products
        # image by image for all the queries that list the image (no copy of gallery rows),
        # or with RCP per query on the gathered detections (small products, single-threaded)
        dense = T > 0 and n_det > 0.25 * len(plans) * T
        by_image = not dense and rcp is None
        while by_image and c1 < nq and n_det < _BY_IMAGE_VALUES:  # larger blocks amortise
            plans.append(plan_fn(c1))
            p = plans[-1]
            det_idx.append(_expand(gallery.starts[p.images], gallery.counts[p.images]))
            n_det += det_idx[-1].size
            c1 += 1
        qs = range(c0, c1)
        c0 = c1
        if dense:
            sims = q_all[qs.start : qs.stop] @ gallery.feats.T
            if inv_norm is not None:
                sims *= inv_norm
            if rcp is not None:
                ctx_rows = np.cumsum([0] + [contexts[q].shape[0] for q in qs])
                ctx_all = np.concatenate([contexts[q] for q in qs]) @ gallery.feats.T
                if inv_norm is not None:
                    ctx_all *= inv_norm
        single = threadpool_limits is not None and not dense
        with threadpool_limits(limits=1, user_api="blas") if single else nullcontext():
            if by_image:
                flat, flat_bounds = _sims_by_image(gallery, q_all, qs, plans)
            for i, q in enumerate(qs):
                plan, idx = plans[i], det_idx[i]
                f = None if dense or by_image else gallery.feats[idx]
                if dense:
                    y = sims[i, idx].astype(np.float64)
                elif by_image:
                    y = flat[flat_bounds[i] : flat_bounds[i + 1]].astype(np.float64)
                else:
                    y = (f @ q_all[q]).astype(np.float64)
                if inv_norm is not None and not dense:
                    y *= inv_norm[idx]
                if rcp is not None and y.size and contexts[q].shape[0]:
                    if dense:
                        ctx = ctx_all[ctx_rows[i] : ctx_rows[i + 1]][:, idx]
                    else:
                        ctx = (f @ contexts[q].T).T
                        if inv_norm is not None:
                            ctx = ctx * inv_norm[idx]
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
