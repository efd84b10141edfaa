"""faiss gallery index: identical rankings to the dense computation, top-K metrics checked by
hand, and ReIDEvaluator with TEST.FAISS equal to the dense evaluator when K >= gallery size."""

import json

import numpy as np
import pytest
import torch

from reid_plugins.config import get_cfg
from reid_plugins.evaluation import compute_distance, evaluate_features
from reid_plugins.evaluation.faiss_index import (
    FaissGalleryIndex,
    evaluate_features_faiss,
    evaluate_retrieved,
)
from reid_plugins.evaluation.reid_evaluation import ReIDEvaluator

pytest.importorskip("faiss")


def _random_set(seed=0, nq=25, ng=70, dim=12, num_ids=8):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(nq, dim)).astype(np.float32)
    g = rng.normal(size=(ng, dim)).astype(np.float32)
    qp = rng.integers(0, num_ids, nq)
    gp = rng.integers(-1, num_ids, ng)  # includes junk (-1) and distractors (0)
    qc = rng.integers(0, 3, nq)
    gc = rng.integers(0, 3, ng)
    return q, g, qp, gp, qc, gc


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_flat_index_ranking_equals_dense(metric):
    q, g, *_ = _random_set()
    dense = compute_distance(q, g, metric).numpy()
    dist, idx = FaissGalleryIndex(metric=metric, chunk_size=7).add(g).search(q, g.shape[0])
    np.testing.assert_array_equal(idx, np.argsort(dense, axis=1, kind="stable"))
    np.testing.assert_allclose(dist, np.sort(dense, axis=1), atol=2e-5)
    # Top-k is the prefix of the full ranking.
    d5, i5 = FaissGalleryIndex(metric=metric).add(torch.from_numpy(g)).search(q, 5)
    np.testing.assert_array_equal(i5, idx[:, :5])


def test_ties_follow_gallery_order_and_padding():
    g = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [2.0, 0.0]], np.float32)
    index = FaissGalleryIndex(metric="cosine").add(g)
    dist, idx = index.search(np.array([[3.0, 0.0]], np.float32), 6)
    # g0, g2, g3 have cosine 1 (tie -> gallery order), then g1; k > gallery -> -1 / inf.
    np.testing.assert_array_equal(idx[0], [0, 2, 3, 1, -1, -1])
    np.testing.assert_allclose(dist[0, :4], [0.0, 0.0, 0.0, 1.0], atol=1e-6)
    assert np.isinf(dist[0, 4:]).all()


def test_ivf_with_all_cells_probed_is_exact():
    q, g, *_ = _random_set(seed=1, ng=200)
    flat = FaissGalleryIndex(metric="cosine").add(g).search(q, 20)[1]
    ivf = FaissGalleryIndex(metric="cosine", index_type="ivf", nlist=4, nprobe=4).add(g)
    np.testing.assert_array_equal(ivf.search(q, 20)[1], flat)
    # Fewer probes: approximate but still returns sorted, valid indices.
    d1, i1 = (
        FaissGalleryIndex(metric="cosine", index_type="ivf", nlist=8, nprobe=1).add(g).search(q, 10)
    )
    assert (np.diff(d1, axis=1)[np.isfinite(d1[:, 1:])] >= 0).all()
    assert ((i1 >= -1) & (i1 < g.shape[0])).all()


def test_index_errors():
    with pytest.raises(ValueError, match="index_type"):
        FaissGalleryIndex(index_type="hnsw")
    with pytest.raises(ValueError, match="metric"):
        FaissGalleryIndex(metric="dot")
    index = FaissGalleryIndex()
    with pytest.raises(RuntimeError, match="add"):
        index.search(np.zeros((1, 4), np.float32), 1)
    index.add(np.ones((3, 4), np.float32))
    with pytest.raises(ValueError, match="dimension 5"):
        index.search(np.zeros((1, 5), np.float32), 1)
    with pytest.raises(ValueError, match="NaN"):
        FaissGalleryIndex().add(np.full((2, 3), np.nan, np.float32))


def test_evaluate_retrieved_hand_computed():
    # Query pid 1 camera 0. Gallery: g0 pid 2, g1 pid 1 cam 0 (same camera: removed),
    # g2 pid 1 cam 1, g3 pid 3, g4 pid 1 cam 2, g5 pid 4, g6 pid 1 cam 1, g7 junk.
    gp = np.array([2, 1, 1, 3, 1, 4, 1, -1])
    gc = np.array([0, 0, 1, 0, 2, 0, 1, 1])
    qp, qc = np.array([1]), np.array([0])
    full = np.array([[0, 1, 2, 3, 4, 7, 5, 6]])  # remaining ranks: g0 1, g2* 2, g3 3, g4* 4,
    #                                              g5 5, g6* 6 -> m = 3 true matches
    res = evaluate_retrieved(full, np.zeros(full.shape), qp, gp, qc, gc, max_rank=4, topk=3)
    assert res["mAP"] == pytest.approx((1 / 2 + 2 / 4 + 3 / 6) / 3)
    assert res["mINP"] == pytest.approx(3 / 6)
    np.testing.assert_allclose(res["cmc"], [0, 1, 1, 1])
    np.testing.assert_array_equal(res["topk_indices"], [[0, 2, 3]])
    # Only the top-5 retrieved: g6 is missed -> AP counts it as missed, INP = 0.
    res5 = evaluate_retrieved(full[:, :5], np.zeros((1, 5)), qp, gp, qc, gc, max_rank=4, topk=6)
    assert res5["mAP"] == pytest.approx((1 / 2 + 2 / 4) / 3)
    assert res5["mINP"] == 0.0
    assert res5["num_valid_queries"] == 1 and res5["list_length"] == 5
    np.testing.assert_array_equal(res5["topk_indices"], [[0, 2, 3, 4, -1, -1]])
    # A list without any true match: valid query (the gallery has matches), CMC 0, AP 0.
    res0 = evaluate_retrieved(np.array([[0, 1, 3]]), np.zeros((1, 3)), qp, gp, qc, gc, 2)
    assert res0["mAP"] == 0.0 and res0["cmc"].tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="No valid query"):
        evaluate_retrieved(full, np.zeros(full.shape), [5], gp, qc, gc)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_metrics_equal_dense_when_k_covers_gallery(metric):
    q, g, qp, gp, qc, gc = _random_set(seed=2)
    dense = evaluate_features(q, g, qp, gp, qc, gc, metric, 20, chunk_size=8, topk=10)
    fa = evaluate_features_faiss(
        q, g, qp, gp, qc, gc, metric, 20, list_length=g.shape[0], topk=10, chunk_size=8
    )
    assert fa["mAP"] == pytest.approx(dense["mAP"], abs=1e-12)
    assert fa["mINP"] == pytest.approx(dense["mINP"], abs=1e-12)
    np.testing.assert_allclose(fa["cmc"], dense["cmc"])
    np.testing.assert_array_equal(fa["query_valid"], dense["query_valid"])
    np.testing.assert_array_equal(fa["topk_indices"], dense["topk_indices"])
    # A shorter list can only lose matches: per-query AP never increases.
    short = evaluate_features_faiss(q, g, qp, gp, qc, gc, metric, 20, list_length=10)
    assert (short["all_AP"] <= dense["all_AP"] + 1e-12).all()
    assert short["mAP"] < dense["mAP"]


def _records_and_outputs(seed=3):
    q, g, qp, gp, qc, gc = _random_set(seed=seed, nq=12, ng=40, dim=6, num_ids=5)
    recs, outs = [], []
    for i in range(len(q)):
        recs.append({"pid": qp[i], "camid": qc[i], "is_query": True, "file_name": f"q{i}.jpg"})
        outs.append({"feature": torch.from_numpy(q[i])})
    for i in range(len(g)):
        recs.append({"pid": gp[i], "camid": gc[i], "is_query": False, "file_name": f"g{i}.jpg"})
        outs.append({"feature": torch.from_numpy(g[i])})
    return recs, outs


def test_evaluator_with_faiss_equals_dense(tmp_path):
    recs, outs = _records_and_outputs()
    results, dumps = [], []
    for name, topk in (("dense", 0), ("faiss", 40)):
        ev = ReIDEvaluator(
            dataset_name=name, max_rank=10, output_dir=str(tmp_path), topk_dump=5, faiss_topk=topk
        )
        ev.process(recs[:20], outs[:20])
        ev.process(recs[20:], outs[20:])
        results.append(ev.evaluate()["reid"])
        with open(tmp_path / f"reid_topk_{name}.json") as f:
            dumps.append(json.load(f))
    assert results[0].keys() == results[1].keys()
    for k in results[0]:
        assert results[1][k] == pytest.approx(results[0][k], abs=1e-9), k
    assert dumps[1]["faiss_topk"] == 40 and dumps[0]["faiss_topk"] is None
    for a, b in zip(dumps[0]["queries"], dumps[1]["queries"]):
        assert a["gallery"] == b["gallery"] and a["correct"] == b["correct"]
        np.testing.assert_allclose(a["distances"], b["distances"], atol=1e-5)
    # K smaller than the gallery: a lower mAP (matches beyond K are missed).
    ev = ReIDEvaluator(dataset_name="short", max_rank=10, faiss_topk=3)
    ev.process(recs, outs)
    assert ev.evaluate()["reid"]["mAP"] < results[0]["mAP"]


def test_evaluator_from_config_and_conflicts():
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.TEST.FAISS.ENABLED = True
    cfg.TEST.FAISS.TOPK = 7
    cfg.TEST.FAISS.INDEX = "ivf"
    cfg.TEST.FAISS.NLIST = 4
    ev = ReIDEvaluator.from_config(cfg, "x")
    assert ev.faiss_topk == 7 and ev.faiss_options == {
        "index_type": "ivf",
        "nlist": 4,
        "nprobe": 16,
    }
    cfg.TEST.FAISS.ENABLED = False
    assert ReIDEvaluator.from_config(cfg, "x").faiss_topk == 0
    with pytest.raises(ValueError, match="TEST.RERANK"):
        ReIDEvaluator(dataset_name="x", rerank=True, faiss_topk=5)
    with pytest.raises(ValueError, match="pairwise_fn"):
        ReIDEvaluator(dataset_name="x", pairwise_fn=lambda a, b: a @ b.T, faiss_topk=5)
