"""Property-based tests (hypothesis) of the ReID ranking metrics and the box utilities.

Ranking (``evaluate_rank`` / ``evaluate_features`` / the faiss top-K path) is checked against
a naive per-query implementation of the Market-1501 protocol, for invariances (chunking,
gallery order without ties, query order) and for its bounds. Note on bounds: ``mINP <= mAP``
does **not** hold in general (ranks 9 and 10 give AP 0.155 < INP 0.2); what holds per query
is ``INP * (m + 1) / (2m) <= AP <= 1`` for ``m`` true matches, with ``AP == INP`` when
``m == 1`` and ``AP == 1`` iff ``INP == 1``.

Examples are derandomised (same examples on every run) and kept few (``max_examples`` 50).
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score

from reid_plugins.evaluation import (
    average_precision,
    compute_distance,
    evaluate_features,
    evaluate_rank,
    iou_threshold,
)
from reid_plugins.evaluation.faiss_index import evaluate_features_faiss, faiss_available
from reid_plugins.evaluation.search_metrics import box_iou

PROPS = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# ----------------------------------------------------------------------------- reference
def naive_rank(dist, qp, gp, qc, gc, max_rank):
    """Per-query loop over the protocol of ``rank.py`` (stable sort, ties by gallery order)."""
    aps, inps, first, valid = [], [], [], []
    for i in range(dist.shape[0]):
        order = np.argsort(dist[i], kind="stable")
        keep = ~(((gp[order] == qp[i]) & (gc[order] == qc[i])) | (gp[order] == -1))
        ranks = np.flatnonzero(gp[order][keep] == qp[i]) + 1  # 1-based
        if qp[i] == -1 or ranks.size == 0:
            valid.append(False)
            continue
        valid.append(True)
        aps.append(np.mean(np.arange(1, ranks.size + 1) / ranks))
        inps.append(ranks.size / ranks[-1])
        first.append(ranks[0])
    first = np.array(first)
    cmc = np.array([np.mean(first <= k + 1) for k in range(max_rank)]) if first.size else None
    return np.array(aps), np.array(inps), cmc, np.array(valid), first


@st.composite
def ranking_problem(draw, ties=True):
    nq = draw(st.integers(1, 6))
    ng = draw(st.integers(1, 14))
    num_pids = draw(st.integers(1, 4))
    qp = np.array(draw(st.lists(st.integers(1, num_pids), min_size=nq, max_size=nq)))
    gp = np.array(draw(st.lists(st.integers(-1, num_pids), min_size=ng, max_size=ng)))
    qc = np.array(draw(st.lists(st.integers(0, 2), min_size=nq, max_size=nq)))
    gc = np.array(draw(st.lists(st.integers(0, 2), min_size=ng, max_size=ng)))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    if ties:  # few distinct values: many exact ties
        dist = rng.integers(0, 4, size=(nq, ng)).astype(np.float32)
    else:  # all distinct
        dist = (rng.permutation(nq * ng).reshape(nq, ng) / 7.0).astype(np.float32)
    return dist, qp, gp, qc, gc


def _has_valid(qp, gp, qc, gc):
    return any(np.any((gp == p) & (gc != c)) for p, c in zip(qp, qc))


# ----------------------------------------------------------------------------- rank metrics
@PROPS
@given(ranking_problem(), st.integers(1, 12))
def test_evaluate_rank_matches_naive_protocol(problem, max_rank):
    dist, qp, gp, qc, gc = problem
    if not _has_valid(qp, gp, qc, gc):
        with pytest.raises(ValueError, match="No valid query"):
            evaluate_rank(dist, qp, gp, qc, gc, max_rank, num_threads=1)
        return
    res = evaluate_rank(dist, qp, gp, qc, gc, max_rank, num_threads=1)
    aps, inps, cmc, valid, _ = naive_rank(dist, qp, gp, qc, gc, max_rank)
    np.testing.assert_array_equal(res["query_valid"], valid)
    np.testing.assert_allclose(res["all_AP"], aps, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res["all_INP"], inps, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res["cmc"], cmc, rtol=0, atol=1e-12)
    assert res["num_valid_queries"] + res["num_skipped_queries"] == len(qp)


@PROPS
@given(ranking_problem(), st.integers(1, 12))
def test_metric_bounds(problem, max_rank):
    dist, qp, gp, qc, gc = problem
    assume(_has_valid(qp, gp, qc, gc))
    res = evaluate_rank(dist, qp, gp, qc, gc, max_rank, num_threads=1)
    cmc, ap, inp = res["cmc"], res["all_AP"], res["all_INP"]
    assert cmc.shape == (max_rank,)
    assert np.all(np.diff(cmc) >= 0) and 0 <= cmc[0] and cmc[-1] <= 1  # monotone, in [0, 1]
    assert np.all((ap > 0) & (ap <= 1)) and np.all((inp > 0) & (inp <= 1))
    assert 0 < res["mAP"] <= 1 and 0 < res["mINP"] <= 1
    _, _, _, valid, first = naive_rank(dist, qp, gp, qc, gc, max_rank)
    vq = np.flatnonzero(valid)
    m = np.array([np.sum((gp == qp[i]) & (gc != qc[i])) for i in vq])  # true matches
    assert np.all(inp * (m + 1) / (2 * m) <= ap + 1e-12)
    np.testing.assert_allclose(ap[m == 1], inp[m == 1])
    assert np.array_equal(ap == 1, inp == 1)
    assert cmc[0] == pytest.approx(np.mean(first == 1))  # Rank-1 = share of top-1 matches
    if max_rank >= len(gp):
        assert cmc[-1] == 1.0  # every valid query finds its match within the gallery


def test_minp_can_exceed_map():
    """A hand-checked counterexample to ``mINP <= mAP``: true matches at ranks 9 and 10."""
    dist = np.arange(10, dtype=np.float32)[None]
    gp = np.array([2] * 8 + [1, 1])
    res = evaluate_rank(dist, [1], gp, [0], np.ones(10, int), 10)
    assert res["mAP"] == pytest.approx((1 / 9 + 2 / 10) / 2)  # 0.1556
    assert res["mINP"] == pytest.approx(2 / 10)
    assert res["mINP"] > res["mAP"]


@PROPS
@given(ranking_problem(), st.integers(1, 7), st.integers(1, 12))
def test_chunked_equals_dense(problem, chunk, max_rank):
    dist, qp, gp, qc, gc = problem
    assume(_has_valid(qp, gp, qc, gc))
    dense = evaluate_rank(dist, qp, gp, qc, gc, max_rank, topk=3, num_threads=1)
    chunked = evaluate_rank(dist, qp, gp, qc, gc, max_rank, chunk_size=chunk, topk=3)
    for key in ("cmc", "all_AP", "all_INP", "query_valid", "topk_indices"):
        np.testing.assert_array_equal(dense[key], chunked[key])
    assert dense["mAP"] == chunked["mAP"] and dense["mINP"] == chunked["mINP"]


@PROPS
@given(ranking_problem(ties=False), st.data())
def test_gallery_order_does_not_matter_without_ties(problem, data):
    dist, qp, gp, qc, gc = problem
    assume(_has_valid(qp, gp, qc, gc))
    perm = np.array(data.draw(st.permutations(range(len(gp)))))
    a = evaluate_rank(dist, qp, gp, qc, gc, 10, num_threads=1)
    b = evaluate_rank(dist[:, perm], qp, gp[perm], qc, gc[perm], 10, num_threads=1)
    for key in ("cmc", "all_AP", "all_INP"):
        np.testing.assert_array_equal(a[key], b[key])
    assert a["mAP"] == b["mAP"] and a["mINP"] == b["mINP"]


@PROPS
@given(ranking_problem(), st.data())
def test_query_order_permutes_per_query_results(problem, data):
    dist, qp, gp, qc, gc = problem
    assume(_has_valid(qp, gp, qc, gc))
    perm = np.array(data.draw(st.permutations(range(len(qp)))))
    a = evaluate_rank(dist, qp, gp, qc, gc, 10, num_threads=1)
    b = evaluate_rank(dist[perm], qp[perm], gp, qc[perm], gc, 10, num_threads=1)
    ap_a = np.full(len(qp), np.nan)
    ap_a[a["query_valid"]] = a["all_AP"]
    ap_b = np.full(len(qp), np.nan)
    ap_b[b["query_valid"]] = b["all_AP"]
    np.testing.assert_array_equal(ap_a[perm], ap_b)
    np.testing.assert_allclose(a["cmc"], b["cmc"])
    assert a["mAP"] == pytest.approx(b["mAP"]) and a["mINP"] == pytest.approx(b["mINP"])


@st.composite
def feature_problem(draw):
    """Small integer features: squared Euclidean distances are exact in float32, so the
    streamed, dense and faiss paths must agree bit for bit (ties included)."""
    dist, qp, gp, qc, gc = draw(ranking_problem())
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    dim = draw(st.integers(1, 5))
    qf = rng.integers(-2, 3, size=(len(qp), dim)).astype(np.float32)
    gf = rng.integers(-2, 3, size=(len(gp), dim)).astype(np.float32)
    return qf, gf, qp, gp, qc, gc


@PROPS
@given(feature_problem(), st.integers(1, 7))
def test_streamed_features_equal_evaluate_rank(problem, chunk):
    qf, gf, qp, gp, qc, gc = problem
    assume(_has_valid(qp, gp, qc, gc))
    dist = compute_distance(qf, gf, "euclidean").numpy()
    dense = evaluate_rank(dist, qp, gp, qc, gc, 10, topk=4, num_threads=1)
    streamed = evaluate_features(
        qf, gf, qp, gp, qc, gc, "euclidean", 10, chunk, topk=4, num_threads=1
    )
    for key in ("cmc", "all_AP", "all_INP", "query_valid", "topk_indices"):
        np.testing.assert_array_equal(dense[key], streamed[key])
    # distances are exact: compare with a float64 reference
    ref = ((qf[:, None, :].astype(np.float64) - gf[None].astype(np.float64)) ** 2).sum(-1)
    np.testing.assert_array_equal(dist, ref.astype(np.float32))


@pytest.mark.skipif(not faiss_available(), reason="faiss is not installed")
@PROPS
@given(feature_problem(), st.integers(1, 14))
def test_faiss_topk_agrees_with_dense(problem, list_length):
    qf, gf, qp, gp, qc, gc = problem
    assume(_has_valid(qp, gp, qc, gc))
    dense = evaluate_features(qf, gf, qp, gp, qc, gc, "euclidean", 10, num_threads=1)
    full = evaluate_features_faiss(qf, gf, qp, gp, qc, gc, "euclidean", 10, list_length=len(gp))
    np.testing.assert_array_equal(dense["query_valid"], full["query_valid"])
    for key in ("cmc", "all_AP", "all_INP"):  # same ranks; sums may round in another order
        np.testing.assert_allclose(dense[key], full[key], rtol=0, atol=1e-12)
    # a shorter list can only miss matches: every metric is a lower bound of the dense one
    short = evaluate_features_faiss(
        qf, gf, qp, gp, qc, gc, "euclidean", 10, list_length=list_length
    )
    assert np.all(short["all_AP"] <= dense["all_AP"] + 1e-12)
    assert np.all(short["all_INP"] <= dense["all_INP"] + 1e-12)
    assert np.all(short["cmc"] <= dense["cmc"] + 1e-12)
    np.testing.assert_array_equal(short["query_valid"], dense["query_valid"])


@pytest.mark.skipif(not faiss_available(), reason="faiss is not installed")
def test_faiss_cosine_agrees_with_dense_on_random_features():
    rng = np.random.default_rng(0)
    qf, gf = rng.normal(size=(20, 8)), rng.normal(size=(60, 8))
    qp, gp = rng.integers(1, 8, 20), rng.integers(0, 8, 60)
    qc, gc = rng.integers(0, 3, 20), rng.integers(0, 3, 60)
    dense = evaluate_features(qf, gf, qp, gp, qc, gc, "cosine", 20, num_threads=1)
    full = evaluate_features_faiss(qf, gf, qp, gp, qc, gc, "cosine", 20, list_length=60)
    for key in ("cmc", "all_AP", "all_INP"):
        np.testing.assert_allclose(dense[key], full[key], rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------- boxes
coord = st.floats(-50, 150, allow_nan=False, width=32)
size = st.floats(0.5, 120, allow_nan=False, width=32)


@st.composite
def boxes(draw, n_max=6):
    n = draw(st.integers(1, n_max))
    out = []
    for _ in range(n):
        x, y, w, h = draw(coord), draw(coord), draw(size), draw(size)
        out.append([x, y, x + w, y + h])
    return np.array(out, np.float64)


@PROPS
@given(boxes(), boxes())
def test_iou_symmetric_bounded_and_self_one(a, b):
    iou = box_iou(a, b)
    assert iou.shape == (len(a), len(b))
    np.testing.assert_allclose(iou, box_iou(b, a).T, rtol=0, atol=1e-12)
    assert np.all(iou >= 0) and np.all(iou <= 1 + 1e-12)
    np.testing.assert_allclose(np.diag(box_iou(a, a)), 1.0, rtol=0, atol=1e-12)


@PROPS
@given(boxes(), boxes(), st.floats(0.25, 4), coord, coord)
def test_iou_invariant_to_shift_and_scale(a, b, s, dx, dy):
    shift = np.array([dx, dy, dx, dy])
    np.testing.assert_allclose(box_iou(a, b), box_iou(a * s + shift, b * s + shift), atol=1e-9)


@PROPS
@given(size, size, st.floats(0, 50), st.floats(0, 50))
def test_iou_threshold_rule_is_monotone_and_capped(w, h, dw, dh):
    t = iou_threshold(w, h)
    assert 0 < t <= 0.5
    assert iou_threshold(w + dw, h + dh) >= t  # bigger boxes never get a looser rule
    assert t == pytest.approx(min(0.5, w * h / ((w + 10) * (h + 10))))
    # the rule is only looser than IoU 0.5 for small boxes
    if w * h >= 0.5 * (w + 10) * (h + 10):
        assert t == 0.5


@PROPS
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5)), min_size=1, max_size=20))
def test_average_precision_equals_sklearn(pairs):
    y = np.array([p[0] for p in pairs])
    s = np.array([p[1] for p in pairs], np.float64)  # integer scores: many ties
    ap = average_precision(y, s)
    if not y.any():
        assert ap == 0.0
        return
    assert ap == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert 0 < ap <= 1
    assert average_precision(y, 3 * s - 7) == pytest.approx(ap)  # monotone transform
