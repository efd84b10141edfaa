"""Tests of ReIDEvaluator (end to end on tiny sets) and of the flip TTA wrapper."""

import json
import os

import numpy as np
import pytest
import torch
from torch import nn

from reid_plugins.config import get_cfg
from reid_plugins.evaluation import reid_evaluation
from reid_plugins.evaluation.rank import evaluate_rank
from reid_plugins.evaluation.reid_evaluation import ReIDEvaluator
from reid_plugins.evaluation.rerank import re_ranking
from reid_plugins.evaluation.tta import FlipTestWrapper, maybe_wrap_flip

# Tiny test set with 1-D features (the position x), squared Euclidean distance.
#   gallery g0..g5: pid, cam, x
GALLERY = [(1, 0, 0.1), (2, 1, 0.2), (1, 1, 0.3), (-1, 1, 0.05), (0, 0, 0.4), (1, 2, 0.5)]
#   queries: q0 (pid 1, cam 0, x=0): remaining ranking g1, g2*, g4, g5* -> AP 1/2*(1/2+2/4)=0.5,
#            INP 2/4, first match at rank 2 (g0 same pid+cam and junk g3 removed, distractor
#            g4 kept).
#            q1 (pid 2, cam 1, x=10): only pid-2 sample g1 is same camera -> skipped.
#            q2 (pid 1, cam 2, x=0.29): distances g2 .01, g1 .09, g4 .11, g0 .19, g5 .21 (same
#            cam, removed), g3 .24 (junk) -> g2*, g1, g4, g0* -> AP (1 + 2/4)/2 = 0.75, INP 2/4.
#   mAP = 62.5 %, mINP = 50 %, Rank-1 = 50 % (q2 only), Rank-5 = Rank-10 = 100 %.
QUERIES = [(1, 0, 0.0), (2, 1, 10.0), (1, 2, 0.29)]


def _records():
    recs = [
        {"pid": p, "camid": c, "is_query": True, "file_name": f"q{i}.jpg", "x": x}
        for i, (p, c, x) in enumerate(QUERIES)
    ]
    recs += [
        {"pid": p, "camid": c, "is_query": False, "file_name": f"g{i}.jpg", "x": x}
        for i, (p, c, x) in enumerate(GALLERY)
    ]
    return recs


def _outputs(recs):
    return [{"feature": torch.tensor([r["x"]], dtype=torch.float64)} for r in recs]


def _run(evaluator, batches):
    evaluator.reset()
    for b in batches:
        evaluator.process(b, _outputs(b))
    return evaluator.evaluate()


def _two_batches():
    recs = _records()
    # Mixed order inside batches; gallery order (g0..g5) is preserved overall.
    return [recs[0:1] + recs[3:6], recs[1:3] + recs[6:9]]


def test_end_to_end_hand_computed(tmp_path):
    ev = ReIDEvaluator(
        dataset_name="toy_test",
        metric="euclidean",
        max_rank=10,
        output_dir=str(tmp_path),
        topk_dump=3,
    )
    res = _run(ev, _two_batches())["reid"]
    assert res["mAP"] == pytest.approx(62.5)
    assert res["mINP"] == pytest.approx(50.0)
    assert res["Rank-1"] == pytest.approx(50.0)
    assert res["Rank-5"] == pytest.approx(100.0) and res["Rank-10"] == pytest.approx(100.0)
    with open(os.path.join(tmp_path, "reid_topk_toy_test.json")) as f:
        dump = json.load(f)
    assert dump["dataset"] == "toy_test" and len(dump["queries"]) == 3
    q0, q1, q2 = dump["queries"]
    assert q0["query"] == "q0.jpg" and q0["pid"] == 1 and q0["valid"] and q0["ap"] == 0.5
    assert q0["gallery"] == ["g1.jpg", "g2.jpg", "g4.jpg"]
    assert q0["gallery_pids"] == [2, 1, 0] and q0["correct"] == [False, True, False]
    np.testing.assert_allclose(q0["distances"], [0.04, 0.09, 0.16], rtol=1e-5)
    assert not q1["valid"] and q1["ap"] is None
    assert q2["gallery"] == ["g2.jpg", "g1.jpg", "g4.jpg"] and q2["ap"] == pytest.approx(0.75)


def test_reset_clears_state_and_max_rank_limits_reported_ranks():
    ev = ReIDEvaluator(dataset_name="toy_test", metric="euclidean", max_rank=5)
    batches = _two_batches()
    ev.process(batches[0], _outputs(batches[0]))  # discarded by the reset in _run
    res = _run(ev, batches)["reid"]
    assert set(res) == {"Rank-1", "Rank-5", "mAP", "mINP"}
    assert res["mAP"] == pytest.approx(62.5)


def test_pairwise_fn_equals_evaluate_rank_on_the_same_matrix():
    rng = np.random.default_rng(0)
    nq, ng = 7, 25
    mat = rng.random((nq, ng)).astype(np.float32)
    qp, gp = rng.integers(0, 4, nq), rng.integers(0, 4, ng)
    qc, gc = rng.integers(0, 2, nq), rng.integers(0, 2, ng)
    # Feature = [sample index]; the "model" looks the score up in the matrix.
    recs = [
        {"pid": int(qp[i]), "camid": int(qc[i]), "is_query": True, "file_name": f"q{i}"}
        for i in range(nq)
    ] + [
        {"pid": int(gp[j]), "camid": int(gc[j]), "is_query": False, "file_name": f"g{j}"}
        for j in range(ng)
    ]
    feats = [float(i) for i in range(nq)] + [float(j) for j in range(ng)]
    calls = []

    def pairwise_fn(q_chunk, g_all):
        calls.append(q_chunk.shape[0])
        return torch.from_numpy(mat)[q_chunk[:, 0].long()][:, g_all[:, 0].long()]

    ev = ReIDEvaluator(dataset_name="toy", pairwise_fn=pairwise_fn, chunk_size=3, max_rank=10)
    ev.process(recs[:15], [{"feature": torch.tensor([f])} for f in feats[:15]])
    ev.process(recs[15:], [{"feature": torch.tensor([f])} for f in feats[15:]])
    res = ev.evaluate()["reid"]
    ref = evaluate_rank(mat, qp, gp, qc, gc, max_rank=10)
    assert calls == [3, 3, 1]  # chunk by chunk
    assert res["mAP"] == pytest.approx(100 * ref["mAP"])
    assert res["mINP"] == pytest.approx(100 * ref["mINP"])
    for k in (1, 5, 10):
        assert res[f"Rank-{k}"] == pytest.approx(100 * ref["cmc"][k - 1])


@pytest.mark.parametrize("variant", ["authors", "paper"])
def test_rerank_path_equals_functions(variant):
    rng = np.random.default_rng(1)
    recs, outs = [], []
    for i in range(30):
        pid = i % 6
        recs.append({"pid": pid, "camid": int(i < 12), "is_query": i < 12, "file_name": str(i)})
        outs.append({"feature": torch.tensor(rng.normal(size=8) + 2 * np.eye(8)[pid])})
    ev = ReIDEvaluator(
        dataset_name="toy", rerank=True, rerank_k1=5, rerank_k2=2, rerank_variant=variant
    )
    ev.process(recs, outs)
    res = ev.evaluate()["reid"]
    f = torch.stack([o["feature"] for o in outs]).float()
    fn = f / f.norm(dim=1, keepdim=True)
    q, g = fn[:12], fn[12:]
    dist = re_ranking(1 - q @ g.T, 1 - q @ q.T, 1 - g @ g.T, 5, 2, 0.3, variant=variant)
    pids, cams = np.array([r["pid"] for r in recs]), np.array([r["camid"] for r in recs])
    ref = evaluate_rank(dist, pids[:12], pids[12:], cams[:12], cams[12:])
    assert res["mAP"] == pytest.approx(100 * ref["mAP"], abs=1e-4)
    with pytest.raises(ValueError, match="TEST.RERANK.VARIANT"):
        ReIDEvaluator(dataset_name="toy", rerank=True, rerank_variant="fast")


def test_gathers_from_all_processes_and_non_main_returns_empty(monkeypatch):
    b1, b2 = _two_batches()
    other = ReIDEvaluator(dataset_name="toy_test", metric="euclidean")
    other.process(b2, _outputs(b2))
    other_local = other._local_state()
    main = ReIDEvaluator(dataset_name="toy_test", metric="euclidean")
    main.process(b1, _outputs(b1))
    monkeypatch.setattr(reid_evaluation.comm, "gather", lambda data, dst=0: [data, other_local])
    assert main.evaluate()["reid"]["mAP"] == pytest.approx(62.5)
    monkeypatch.setattr(reid_evaluation.comm, "gather", lambda data, dst=0: [])
    monkeypatch.setattr(reid_evaluation.comm, "is_main_process", lambda: False)
    assert main.evaluate() == {}


def test_empty_sets_and_bad_outputs_raise_naming_the_dataset():
    recs = _records()
    ev = ReIDEvaluator(dataset_name="market1501_test")
    ev.process(recs[3:], _outputs(recs[3:]))
    with pytest.raises(ValueError, match="market1501_test.*empty query set"):
        ev.evaluate()
    ev.reset()
    ev.process(recs[:3], _outputs(recs[:3]))
    with pytest.raises(ValueError, match="market1501_test.*empty gallery set"):
        ev.evaluate()
    with pytest.raises(ValueError, match="1-D tensor under 'feature'"):
        ev.process(recs[:1], [{"feature": torch.zeros(2, 3)}])
    with pytest.raises(KeyError, match="camid"):
        ev.process([{"pid": 1, "is_query": True, "file_name": "a"}], [{"feature": torch.ones(2)}])
    ev.reset()
    ev.process(recs[1:2] + recs[3:], _outputs(recs[1:2] + recs[3:]))  # only the skipped query
    with pytest.raises(ValueError, match="market1501_test.*all 1 queries were skipped"):
        ev.evaluate()


def test_from_config():
    cfg = get_cfg()
    cfg.TEST.METRIC = "euclidean"
    cfg.TEST.MAX_RANK = 20
    cfg.TEST.CHUNK_SIZE = 8
    cfg.TEST.RERANK.ENABLED = True
    cfg.TEST.RERANK.K1 = 7
    cfg.MODEL.DEVICE = "cpu"
    ev = ReIDEvaluator.from_config(cfg, "toy_test", output_dir="/tmp/x")
    assert (ev.metric, ev.max_rank, ev.chunk_size, ev.rerank, ev.rerank_k1) == (
        "euclidean",
        20,
        8,
        True,
        7,
    )
    assert ev.output_dir == "/tmp/x" and ev.topk_dump == cfg.TEST.TOPK_DUMP
    cfg.TEST.METRIC = "hamming"
    with pytest.raises(ValueError, match="hamming"):
        ReIDEvaluator.from_config(cfg, "toy_test")


# ----------------------------------------------------------------------------- flip TTA


class _LeftRightModel(nn.Module):
    """feature = [mean of left half, mean of right half] of the image (left/right asymmetric)."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, inputs):
        self.calls += 1
        outs = []
        for d in inputs:
            w = d["image"].shape[-1]
            left, right = d["image"][..., : w // 2].mean(), d["image"][..., w // 2 :].mean()
            outs.append({"feature": torch.stack([left, right]), "extra": d["file_name"]})
        return outs


def test_flip_wrapper_averages_flipped_features_without_touching_inputs():
    img = torch.zeros(3, 8, 4)
    img[..., :2], img[..., 2:] = 1.0, 3.0
    inputs = [
        {"image": img, "file_name": "a.jpg"},
        {"image": torch.ones(3, 8, 4), "file_name": "b"},
    ]
    before = img.clone()
    model = _LeftRightModel()
    wrapper = FlipTestWrapper(model=model).eval()
    out = wrapper(inputs)
    assert model.calls == 2
    # a: f = [1, 3], flipped f = [3, 1] -> mean [2, 2] -> normalised [1/sqrt2, 1/sqrt2].
    torch.testing.assert_close(out[0]["feature"], torch.full((2,), 2**-0.5))
    torch.testing.assert_close(out[1]["feature"], torch.full((2,), 2**-0.5))
    assert out[0]["extra"] == "a.jpg"
    assert inputs[0]["image"] is img and torch.equal(img, before)  # inputs untouched
    # Without the wrapper the asymmetric feature differs.
    assert not torch.allclose(model(inputs)[0]["feature"], out[0]["feature"])
    wrapper.train()
    assert model.training and torch.equal(wrapper(inputs)[0]["feature"], torch.tensor([1.0, 3.0]))


def test_maybe_wrap_flip():
    cfg = get_cfg()
    model = _LeftRightModel()
    assert maybe_wrap_flip(cfg, model) is model
    cfg.TEST.FLIP_AUG = True
    assert isinstance(maybe_wrap_flip(cfg, model), FlipTestWrapper)
