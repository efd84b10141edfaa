"""Tests of k-reciprocal re-ranking (Zhong et al. 2017): the authors' released rule (default)
against an independent dense restatement, and the paper-equation switch."""

import numpy as np
import pytest

from reid_plugins.evaluation.distance import compute_distance
from reid_plugins.evaluation.rank import evaluate_rank
from reid_plugins.evaluation.rerank import _Pool, k_nearest, k_reciprocal_sets, re_ranking


def _dist_1d(a, b):
    return np.abs(np.asarray(a)[:, None] - np.asarray(b)[None]).astype(np.float32)


def _released_rule(qg, qq, gg, k1, k2, lam):
    """Dense restatement of the authors' released ``re_ranking``: squared distances divided by
    their column maximum (float32) and transposed; rankings include the sample itself;
    expansion by ``R(y, round(k1/2))`` when more than 2/3 of it is in ``R(x, k1)``; row-
    normalised exp weights; query expansion = mean of the first k2 rows of the ranking;
    Jaccard ``1 - s / (2 - s)``; mix with the normalised squared distance."""
    nq, ng = qg.shape
    n = nq + ng
    full = np.block([[qq, qg], [qg.T, gg]])
    sq = np.square(full).astype(np.float32)
    big_d = (sq / sq.max(axis=0, keepdims=True)).T
    rank = np.argsort(big_d, axis=1, kind="stable")

    def recip(x, k):
        return {int(y) for y in rank[x, : k + 1] if x in rank[y, : k + 1]}

    v = np.zeros((n, n))
    for x in range(n):
        r = recip(x, k1)
        r_star = set(r)
        for y in r:
            r_half = recip(y, int(np.around(k1 / 2)))
            if len(r & r_half) > 2 / 3 * len(r_half):
                r_star |= r_half
        idx = sorted(r_star)
        w = np.exp(-big_d[x, idx].astype(np.float64))
        v[x, idx] = w / w.sum()
    if k2 > 1:
        v = np.stack([v[rank[x, :k2]].mean(axis=0) for x in range(n)])
    s = np.minimum(v[:nq, None, :], v[None, nq:, :]).sum(axis=-1)
    return (1 - lam) * (1 - s / (2 - s)) + lam * big_d[:nq, nq:]


def _dense_reference(qg, qq, gg, k1, k2, lam):
    """Direct transcription of the paper's equations with dense vectors and Python sets."""
    nq, ng = qg.shape
    n = nq + ng
    d = np.block([[qq, qg], [qg.T, gg]]).astype(np.float64)

    def nbrs(x, k):  # x itself, then its k nearest others
        row = d[x].copy()
        row[x] = np.inf
        return [x] + list(np.argsort(row, kind="stable")[:k])

    def recip(x, k):
        return {y for y in nbrs(x, k) if x in nbrs(y, k)}

    v = np.zeros((n, n))
    for x in range(n):
        r = recip(x, k1)
        r_star = set(r)
        for y in r:
            r_half = recip(y, max(1, k1 // 2))
            if len(r & r_half) >= 2 / 3 * len(r_half):
                r_star |= r_half
        for y in r_star:
            v[x, y] = np.exp(-d[x, y])
    if k2 > 0:
        v = np.stack([v[nbrs(x, k2)].mean(axis=0) for x in range(n)])
    jac = np.array(
        [
            [
                1 - np.minimum(v[p], v[nq + g]).sum() / np.maximum(v[p], v[nq + g]).sum()
                for g in range(ng)
            ]
            for p in range(nq)
        ]
    )
    return (1 - lam) * jac + lam * qg


def _cosine_problem(seed, n=40, nq=10, dim=5):
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, dim))
    q, g = f[:nq], f[nq:]
    return (
        compute_distance(q, g).numpy(),
        compute_distance(q, q).numpy(),
        compute_distance(g, g).numpy(),
    )


def test_shape_dtype_and_lambda_one_returns_original():
    qg, qq, gg = _cosine_problem(0)
    out = re_ranking(qg, qq, gg, k1=5, k2=2, lambda_value=0.3)
    assert out.shape == qg.shape and out.dtype == np.float32
    assert not np.allclose(out, qg)
    np.testing.assert_array_equal(re_ranking(qg, qq, gg, 5, 2, 1.0, variant="paper"), qg)
    # the released code mixes in the squared distance divided by the row maximum
    scale = np.maximum(np.square(qq).max(axis=0), np.square(qg).max(axis=1))
    np.testing.assert_allclose(
        re_ranking(qg, qq, gg, 5, 2, 1.0), np.square(qg) / scale[:, None], rtol=1e-6
    )


@pytest.mark.parametrize(
    "k1,k2,lam,nq",
    [(20, 6, 0.3, 10), (5, 2, 0.3, 10), (3, 1, 0.0, 4), (8, 3, 0.5, 25), (7, 4, 0.3, 1),
     (1, 2, 0.2, 10), (40, 1, 0.3, 10), (6, 50, 0.1, 10)],
)  # fmt: skip
def test_default_equals_released_code(k1, k2, lam, nq):
    qg, qq, gg = _cosine_problem(k1 + k2, nq=nq)
    np.testing.assert_allclose(
        re_ranking(qg, qq, gg, k1, k2, lam), _released_rule(qg, qq, gg, k1, k2, lam), atol=1e-6
    )


@pytest.mark.parametrize("k1,k2", [(6, 3), (10, 1), (4, 2)])
def test_default_equals_released_code_on_asymmetric_float64_distances(k1, k2):
    # A learned pairwise distance (e.g. GMN's M-Net) need not be symmetric nor zero on the
    # diagonal: the released code normalises columns and transposes, and ranks the diagonal
    # like any other entry.
    rng = np.random.default_rng(k1)
    nq, ng = 7, 30
    qg, qq, gg = (rng.uniform(0.1, 2.0, s) for s in ((nq, ng), (nq, nq), (ng, ng)))
    np.testing.assert_allclose(
        re_ranking(qg, qq, gg, k1, k2, 0.3), _released_rule(qg, qq, gg, k1, k2, 0.3), atol=1e-6
    )


def test_variants_differ_and_bad_variant():
    qg, qq, gg = _cosine_problem(3)
    a = re_ranking(qg, qq, gg, 6, 3, 0.3)
    b = re_ranking(qg, qq, gg, 6, 3, 0.3, variant="paper")
    assert np.abs(a - b).max() > 0.05
    with pytest.raises(ValueError, match="variant must be one of"):
        re_ranking(qg, qq, gg, variant="fast")
    with pytest.raises(ValueError, match="k2 >= 1"):
        re_ranking(qg, qq, gg, k2=0)
    assert re_ranking(qg, qq, gg, k2=0, variant="paper").shape == qg.shape


@pytest.mark.parametrize("k1,k2,lam", [(5, 2, 0.3), (3, 0, 0.0), (8, 3, 0.5), (40, 1, 0.3)])
def test_paper_variant_matches_dense_transcription_of_the_paper(k1, k2, lam):
    qg, qq, gg = _cosine_problem(k1 + k2)
    np.testing.assert_allclose(
        re_ranking(qg, qq, gg, k1, k2, lam, variant="paper"),
        _dense_reference(qg, qq, gg, k1, k2, lam),
        atol=1e-6,
    )


def test_k_reciprocal_sets_hand_case():
    # Points on a line at 0, 1, 3, 10 (as 1 query + 3 gallery). With k = 1, N(x, 1) is x and
    # its nearest other point: N(0)={0,1}, N(1)={1,0}, N(3)={3,1}, N(10)={10,3}.
    # Reciprocal: R(0)={0,1}, R(1)={1,0}, R(3)={3} (1's neighbour is 0), R(10)={10}.
    pts = [0.0, 1.0, 3.0, 10.0]
    pool = _Pool(_dist_1d(pts[:1], pts[1:]), _dist_1d(pts[:1], pts[:1]), _dist_1d(pts[1:], pts[1:]))
    nn = k_nearest(pool, 1)
    np.testing.assert_array_equal(nn, [[0, 1], [1, 0], [2, 1], [3, 2]])
    r = k_reciprocal_sets(nn, 1).toarray()
    expected = np.zeros((4, 4), dtype=bool)
    expected[0, [0, 1]] = expected[1, [0, 1]] = expected[2, 2] = expected[3, 3] = True
    np.testing.assert_array_equal(r, expected)


def test_reciprocal_neighbours_beat_a_closer_distractor():
    # Query (pid 1) at 0; its true matches a1..a4 at 1.0..1.3; a distractor cluster (pid 2)
    # b1..b5 at -0.9..-1.15 whose closest member b1 is nearer to the query than any match.
    # N(q, 4) = {q, b1, a1, b2, b3} but b1's 4 neighbours are b2..b5, so b1 is not k-reciprocal,
    # while a1 (neighbours a2, a3, a4, q) is: R(q, 4) = {q, a1}.
    q = [0.0]
    g = [1.0, 1.1, 1.2, 1.3, -0.9, -1.02, -1.05, -1.1, -1.15]
    gp, gc, qp, qc = np.array([1] * 4 + [2] * 5), np.ones(9, int), [1], [0]
    qg, qq, gg = _dist_1d(q, g), _dist_1d(q, q), _dist_1d(g, g)
    nn = k_nearest(_Pool(qg, qq, gg), 4)
    r = k_reciprocal_sets(nn, 4).toarray()
    assert set(np.flatnonzero(r[0])) == {0, 1}  # pool index 1 = a1
    before = evaluate_rank(qg, qp, gp, qc, gc, 5)
    rr = re_ranking(qg, qq, gg, k1=4, k2=0, lambda_value=0.3, variant="paper")
    after = evaluate_rank(rr, qp, gp, qc, gc, 5)
    assert before["cmc"][0] == 0 and after["cmc"][0] == 1  # b1 no longer ranks first
    assert after["mAP"] > before["mAP"] + 0.2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_improves_map_on_clustered_identities(seed):
    # 20 identities, 2 queries (camera 0) and 8 gallery images (camera 1) each, noisy features.
    rng = np.random.default_rng(seed)
    nid, dim = 20, 16
    c = rng.normal(size=(nid, dim))
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    qp, gp = np.repeat(np.arange(nid), 2), np.repeat(np.arange(nid), 8)
    q = c[qp] + 0.9 * rng.normal(size=(len(qp), dim)) / np.sqrt(dim)
    g = c[gp] + 0.9 * rng.normal(size=(len(gp), dim)) / np.sqrt(dim)
    qc, gc = np.zeros(len(qp), int), np.ones(len(gp), int)
    qg, qq, gg = (compute_distance(a, b).numpy() for a, b in ((q, g), (q, q), (g, g)))
    base = evaluate_rank(qg, qp, gp, qc, gc, 10)["mAP"]
    rr = evaluate_rank(re_ranking(qg, qq, gg, 8, 3, 0.3), qp, gp, qc, gc, 10)["mAP"]
    assert base < 0.9 and rr > base + 0.05


def test_bad_arguments():
    qg, qq, gg = _cosine_problem(0)
    with pytest.raises(ValueError, match="q_q_dist must have shape"):
        re_ranking(qg, gg, gg)
    with pytest.raises(ValueError, match="g_g_dist must have shape"):
        re_ranking(qg, qq, qq)
    with pytest.raises(ValueError, match="lambda_value"):
        re_ranking(qg, qq, gg, lambda_value=1.5)
    with pytest.raises(ValueError, match="k1 >= 1"):
        re_ranking(qg, qq, gg, k1=0)
