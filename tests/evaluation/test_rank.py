"""Tests of the ReID ranking metrics (CMC / mAP / mINP) and of the feature distances."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reid_plugins.evaluation.distance import GalleryDistance, compute_distance
from reid_plugins.evaluation.rank import evaluate_features, evaluate_rank, stable_argsort_rows

# Gallery shared by the hand-computed cases.
#   idx: pid, cam
#   0:   1,  0
#   1:   2,  1
#   2:   1,  1
#   3:  -1,  1   (junk)
#   4:   0,  0   (distractor)
#   5:   1,  2
G_PIDS = np.array([1, 2, 1, -1, 0, 1])
G_CAMS = np.array([0, 1, 1, 1, 0, 2])


def _hand_case():
    q_pids = np.array([1, 2, 1])
    q_cams = np.array([0, 1, 2])
    dist = np.array(
        [
            # q0 (pid 1, cam 0). Sorted: 3 (junk, removed), 0 (same pid+cam, removed), 1, 2, 4, 5.
            # Remaining ranks: 1 -> r1, 2 -> r2 (match), 4 -> r3 (distractor kept), 5 -> r4
            # (match). AP = (1/2 + 2/4) / 2 = 0.5, INP = 2/4 = 0.5, first match at rank 2.
            [0.1, 0.2, 0.3, 0.05, 0.4, 0.5],
            # q1 (pid 2, cam 1): its only pid-2 gallery sample (1) has cam 1 -> removed ->
            # no true match -> skipped.
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
            # q2 (pid 1, cam 2). Sorted: 5 (same pid+cam, removed), 1, 2 (match), 0 (match),
            # 3 (junk), 4. Remaining: 1 -> r1, 2 -> r2, 0 -> r3, 4 -> r4.
            # AP = (1/2 + 2/3) / 2 = 7/12, INP = 2/3, first match at rank 2.
            [0.3, 0.1, 0.2, 0.4, 0.5, 0.05],
        ],
        dtype=np.float32,
    )
    return dist, q_pids, q_cams


def _reference(dist, qp, gp, qc, gc, max_rank):
    """Straightforward per-query loop over the protocol's definition (independent check)."""
    aps, inps, firsts = [], [], []
    for i in range(len(qp)):
        order = np.argsort(dist[i], kind="stable")
        keep = ~(((gp[order] == qp[i]) & (gc[order] == qc[i])) | (gp[order] == -1))
        hits = (gp[order][keep] == qp[i]) & (qp[i] != -1)
        if not hits.any():
            continue
        ranks = np.flatnonzero(hits) + 1
        aps.append(np.mean(np.arange(1, len(ranks) + 1) / ranks))
        inps.append(len(ranks) / ranks[-1])
        firsts.append(ranks[0])
    cmc = np.array([np.mean(np.array(firsts) <= k + 1) for k in range(max_rank)])
    return cmc, np.array(aps), np.array(inps)


def test_hand_computed_case():
    dist, qp, qc = _hand_case()
    r = evaluate_rank(dist, qp, G_PIDS, qc, G_CAMS, max_rank=5)
    assert r["num_valid_queries"] == 2 and r["num_skipped_queries"] == 1
    np.testing.assert_allclose(r["all_AP"], [0.5, 7 / 12])
    np.testing.assert_allclose(r["all_INP"], [0.5, 2 / 3])
    assert r["mAP"] == pytest.approx((0.5 + 7 / 12) / 2)
    assert r["mINP"] == pytest.approx((0.5 + 2 / 3) / 2)
    np.testing.assert_allclose(r["cmc"], [0, 1, 1, 1, 1])
    np.testing.assert_array_equal(r["query_valid"], [True, False, True])


def test_distractor_kept_junk_and_same_camera_removed():
    dist, qp, qc = _hand_case()
    q0 = dict(q_pids=qp[:1], q_camids=qc[:1])
    # If the distractor (pid 0) were dropped, q0's matches would sit at ranks 2 and 3.
    base = evaluate_rank(dist[:1], q0["q_pids"], G_PIDS, q0["q_camids"], G_CAMS, 5)
    assert base["mAP"] == pytest.approx(0.5)
    # Junk relabelled as a negative pid: it ranks first -> matches at 3 and 5.
    g = G_PIDS.copy()
    g[3] = 7
    r = evaluate_rank(dist[:1], q0["q_pids"], g, q0["q_camids"], G_CAMS, 5)
    assert r["mAP"] == pytest.approx((1 / 3 + 2 / 5) / 2)
    # Same-pid sample 0 moved to another camera: kept, and now the rank-1 true match.
    c = G_CAMS.copy()
    c[0] = 3
    r = evaluate_rank(dist[:1], q0["q_pids"], G_PIDS, q0["q_camids"], c, 5)
    assert r["all_AP"][0] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)  # matches at 1, 3, 5
    assert r["all_INP"][0] == pytest.approx(3 / 5)
    np.testing.assert_allclose(r["cmc"], [1, 1, 1, 1, 1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_ties_keep_gallery_order(dtype):
    gp, gc = np.array([2, 1, 3, 1]), np.array([1, 1, 1, 2])
    dist = np.full((1, 4), 5, dtype=dtype)
    # Stable order: 0, 1 (match), 2, 3 (match) -> AP = (1/2 + 2/4)/2 = 0.5, INP = 2/4.
    r = evaluate_rank(dist, [1], gp, [0], gc, max_rank=4)
    assert r["mAP"] == pytest.approx(0.5) and r["mINP"] == pytest.approx(0.5)
    np.testing.assert_allclose(r["cmc"], [0, 1, 1, 1])
    # Reversed gallery: matches at ranks 1 and 3 -> AP = (1 + 2/3)/2 = 5/6, INP = 2/3.
    r = evaluate_rank(dist, [1], gp[::-1], [0], gc[::-1], max_rank=4)
    assert r["mAP"] == pytest.approx(5 / 6) and r["mINP"] == pytest.approx(2 / 3)


def test_stable_argsort_matches_numpy_including_negatives_and_signed_zero():
    rng = np.random.default_rng(0)
    d = rng.integers(-3, 4, size=(20, 50)).astype(np.float32)
    d[0, :3] = [-0.0, 0.0, -0.0]
    d[1, 0] = np.inf
    for x in (d, np.abs(d), d.astype(np.float16)):
        np.testing.assert_array_equal(stable_argsort_rows(x), np.argsort(x, axis=1, kind="stable"))


def test_max_rank_beyond_gallery_is_padded():
    dist, qp, qc = _hand_case()
    r = evaluate_rank(dist, qp, G_PIDS, qc, G_CAMS, max_rank=10)
    assert r["cmc"].shape == (10,)
    np.testing.assert_allclose(r["cmc"], [0] + [1] * 9)


def _random_problem(seed, nq=37, ng=53, ties=True):
    rng = np.random.default_rng(seed)
    qp = rng.integers(1, 10, nq)  # pids 8, 9 are absent from the gallery -> skipped
    qp[0] = -1  # a junk query has no true match either
    gp = rng.integers(-1, 8, ng)  # includes junk -1 and distractor 0
    qc, gc = rng.integers(0, 3, nq), rng.integers(0, 3, ng)
    if ties:
        dist = rng.integers(0, 6, size=(nq, ng)).astype(np.float32)
    else:
        dist = rng.permutation(nq * ng).reshape(nq, ng).astype(np.float32)
    return dist, qp, gp, qc, gc


@pytest.mark.parametrize("chunk_size", [1, 5, 37, 100, None])
def test_chunked_equals_unchunked_and_reference(chunk_size):
    dist, qp, gp, qc, gc = _random_problem(1)
    full = evaluate_rank(dist, qp, gp, qc, gc, max_rank=20, num_threads=1)
    r = evaluate_rank(dist, qp, gp, qc, gc, max_rank=20, chunk_size=chunk_size, num_threads=2)
    for k in ("cmc", "all_AP", "all_INP", "query_valid"):
        np.testing.assert_array_equal(r[k], full[k])
    assert (r["mAP"], r["mINP"]) == (full["mAP"], full["mINP"])
    cmc, aps, inps = _reference(dist, qp, gp, qc, gc, 20)
    np.testing.assert_allclose(full["cmc"], cmc)
    np.testing.assert_allclose(full["all_AP"], aps)
    np.testing.assert_allclose(full["all_INP"], inps)
    assert full["num_skipped_queries"] == len(qp) - len(aps) > 0
    # float64 input goes through np.argsort(kind="stable"): same result.
    r64 = evaluate_rank(dist.astype(np.float64), qp, gp, qc, gc, 20, chunk_size=chunk_size)
    np.testing.assert_array_equal(r64["all_AP"], full["all_AP"])


def test_topk_lists_first_remaining_gallery_samples():
    dist, qp, qc = _hand_case()
    r = evaluate_rank(dist, qp, G_PIDS, qc, G_CAMS, max_rank=5, topk=5)
    # q0 keeps 1, 2, 4, 5 (4 samples) -> padded with -1 / NaN.
    np.testing.assert_array_equal(r["topk_indices"][0], [1, 2, 4, 5, -1])
    np.testing.assert_allclose(r["topk_distances"][0][:4], [0.2, 0.3, 0.4, 0.5], rtol=1e-6)
    assert np.isnan(r["topk_distances"][0][4])
    np.testing.assert_array_equal(r["topk_indices"][2], [1, 2, 0, 4, -1])


def test_errors_are_clear():
    dist, qp, qc = _hand_case()
    with pytest.raises(ValueError, match="q_pids"):
        evaluate_rank(dist, qp[:2], G_PIDS, qc, G_CAMS)
    with pytest.raises(ValueError, match="g_camids"):
        evaluate_rank(dist, qp, G_PIDS, qc, G_CAMS[:4])
    with pytest.raises(ValueError, match="2-D"):
        evaluate_rank(dist[0], qp, G_PIDS, qc, G_CAMS)
    with pytest.raises(ValueError, match="Empty query"):
        evaluate_rank(np.zeros((0, 6)), [], G_PIDS, [], G_CAMS)
    with pytest.raises(ValueError, match="Empty gallery"):
        evaluate_rank(np.zeros((3, 0)), qp, [], qc, [])
    with pytest.raises(ValueError, match="all 1 queries were skipped"):
        evaluate_rank(dist[1:2], qp[1:2], G_PIDS, qc[1:2], G_CAMS)
    bad = dist.copy()
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        evaluate_rank(bad, qp, G_PIDS, qc, G_CAMS)


# ----------------------------------------------------------------------------- distances


def test_compute_distance_values():
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(4, 6)), rng.normal(size=(5, 6))
    cos = (
        1
        - (q / np.linalg.norm(q, axis=1, keepdims=True))
        @ (g / np.linalg.norm(g, axis=1, keepdims=True)).T
    )
    np.testing.assert_allclose(compute_distance(q, g, "cosine").numpy(), cos, atol=1e-6)
    sq = ((q[:, None] - g[None]) ** 2).sum(-1)
    np.testing.assert_allclose(compute_distance(q, g, "euclidean").numpy(), sq, rtol=1e-5)
    plain = compute_distance(torch.tensor(q), torch.tensor(g), "euclidean", squared=False)
    assert plain.dtype == torch.float32
    np.testing.assert_allclose(plain.numpy(), np.sqrt(sq), rtol=1e-5)
    with pytest.raises(ValueError, match="Unknown ReID distance metric 'l1'"):
        compute_distance(q, g, "l1")
    with pytest.raises(ValueError, match="dimension"):
        GalleryDistance(g, "cosine")(q[:, :3])


def _features(seed=0, nq=40, ng=120, dim=16, nid=10):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(nid, dim))
    qp, gp = rng.integers(0, nid, nq), rng.integers(0, nid, ng)
    q = centers[qp] + rng.normal(size=(nq, dim))
    g = centers[gp] + rng.normal(size=(ng, dim))
    return (
        q.astype(np.float32),
        g.astype(np.float32),
        qp,
        gp,
        rng.integers(0, 3, nq),
        np.full(ng, 5),
    )


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_streamed_equals_full_matrix(metric):
    q, g, qp, gp, qc, gc = _features()
    full = evaluate_rank(compute_distance(q, g, metric), qp, gp, qc, gc, max_rank=10)
    assert 0.2 < full["mAP"] < 1.0  # a non-trivial ranking
    for chunk in (1, 7, 40, 1000):
        r = evaluate_features(q, g, qp, gp, qc, gc, metric, 10, chunk, topk=3)
        np.testing.assert_array_equal(r["all_AP"], full["all_AP"])
        np.testing.assert_array_equal(r["cmc"], full["cmc"])
        assert r["topk_indices"].shape == (len(q), 3)


def test_cosine_and_euclidean_rank_alike_on_normalised_features():
    q, g, qp, gp, qc, gc = _features(seed=3)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    a = evaluate_features(q, g, qp, gp, qc, gc, "cosine", 10, 16)
    b = evaluate_features(torch.from_numpy(q), torch.from_numpy(g), qp, gp, qc, gc, "euclidean", 10)
    np.testing.assert_array_equal(a["all_AP"], b["all_AP"])
    np.testing.assert_array_equal(a["cmc"], b["cmc"])


def test_evaluate_features_pairwise_fn_and_errors():
    q, g, qp, gp, qc, gc = _features(seed=4)
    mat = compute_distance(q, g, "euclidean")
    r = evaluate_features(q, g, qp, gp, qc, gc, pairwise_fn=lambda a, b: -(a @ b.T), chunk_size=9)
    ref = evaluate_rank(-(torch.from_numpy(q) @ torch.from_numpy(g).T), qp, gp, qc, gc)
    np.testing.assert_array_equal(r["all_AP"], ref["all_AP"])
    assert not np.array_equal(ref["all_AP"], evaluate_rank(mat, qp, gp, qc, gc)["all_AP"])
    with pytest.raises(ValueError, match="pairwise_fn returned shape"):
        evaluate_features(q, g, qp, gp, qc, gc, pairwise_fn=lambda a, b: a @ a.T)
    with pytest.raises(ValueError, match="dimension"):
        evaluate_features(q[:, :4], g, qp, gp, qc, gc)
    with pytest.raises(ValueError, match="Empty gallery"):
        evaluate_features(q, g[:0], qp, gp[:0], qc, gc[:0])


# ----------------------------------------------------------------------------- properties


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), nq=st.integers(1, 6), ng=st.integers(1, 30))
def test_properties_permutation_invariance_and_range(seed, nq, ng):
    rng = np.random.default_rng(seed)
    qp, gp = rng.integers(0, 4, nq), rng.integers(-1, 4, ng)
    qc, gc = rng.integers(0, 2, nq), rng.integers(0, 2, ng)
    dist = rng.permutation(nq * ng).reshape(nq, ng).astype(np.float32)  # no ties
    try:
        r = evaluate_rank(dist, qp, gp, qc, gc, max_rank=5)
    except ValueError as e:
        assert "skipped" in str(e)
        return
    for k in ("mAP", "mINP"):
        assert 0.0 < r[k] <= 1.0
    assert np.all((r["cmc"] >= 0) & (r["cmc"] <= 1)) and np.all(np.diff(r["cmc"]) >= 0)
    perm = rng.permutation(ng)
    p = evaluate_rank(dist[:, perm], qp, gp[perm], qc, gc[perm], max_rank=5)
    assert p["mAP"] == pytest.approx(r["mAP"]) and p["mINP"] == pytest.approx(r["mINP"])
    np.testing.assert_allclose(p["cmc"], r["cmc"])
