"""GMN test-time scoring: chunking, top-k re-scoring, fusion, and the evaluator hook-up."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reid_plugins.config import add_all_configs, get_cfg
from reid_plugins.evaluation import ReIDEvaluator, evaluate_rank
from reid_plugins.evaluation.tta import FlipTestWrapper
from reid_plugins.methods.gmn import GMNTrainer, MetricNet, pair_features
from reid_plugins.methods.gmn.model import GMN, instance_distance

DIM = 12


def _model(topk=0, w=0.5, chunk=16384, mnet=True):
    """A GMN around a stub backbone (scoring never touches it) with a BN-trained M-Net."""
    torch.manual_seed(0)
    net = None
    if mnet:
        net = MetricNet(in_dim=DIM, hidden_dims=(8, 4), dp_rate=0.3)
        with torch.no_grad():  # non-trivial BN running statistics
            for _ in range(3):
                net(torch.rand(64, DIM) * 0.3)
        net.set_dp_active(True)  # must not matter at test time
    head = torch.nn.Identity()
    head.feat_dim = DIM
    return GMN(
        backbone=torch.nn.Identity(),
        head=head,
        pixel_mean=[0.0] * 3,
        pixel_std=[1.0] * 3,
        triplet_loss=torch.nn.Identity(),
        metric_net=net,
        test_with_mnet=mnet,
        test_topk=topk,
        fusion_weight=w,
        pair_chunk=chunk,
    )


def _feats(n, seed):
    return torch.randn(n, DIM, generator=torch.Generator().manual_seed(seed))


def test_full_scoring_formula_and_chunking():
    model = _model(w=0.3)
    q, g = _feats(5, 1), _feats(9, 2)
    qn, gn = F.normalize(q, dim=1), F.normalize(g, dim=1)
    model.metric_net.eval()
    logits = model.metric_net(pair_features(qn.repeat_interleave(9, 0), gn.repeat(5, 1))).view(5, 9)
    d_inst = (1 - qn @ gn.t()) / 2
    expected = 0.7 * d_inst + 0.3 * (1 - torch.sigmoid(logits))
    model.metric_net.train()
    full = model.pairwise_distance(q, g, pair_chunk=10**6)
    torch.testing.assert_close(full, expected)
    assert model.metric_net.training  # eval mode only for the call
    for chunk in (1, 4, 9, 20):
        torch.testing.assert_close(model.pairwise_distance(q, g, pair_chunk=chunk), full)
    # w = 0 is the instance (cosine) distance; w = 1 ranks by the M-Net logit alone.
    torch.testing.assert_close(_model(w=0.0).pairwise_distance(q, g), d_inst)
    m1 = _model(w=1.0).pairwise_distance(q, g)
    assert torch.equal(m1.argsort(dim=1), (-logits).argsort(dim=1))


def test_topk_rescoring_only_changes_the_topk():
    k, q, g = 4, _feats(6, 3), _feats(15, 4)
    full = _model(topk=0).pairwise_distance(q, g)
    topk = _model(topk=k, chunk=5).pairwise_distance(q, g)
    d_inst = instance_distance(q, g)
    inst_rank = d_inst.argsort(dim=1, stable=True)
    new_rank = topk.argsort(dim=1, stable=True)
    # Same top-k set, the rest in exactly the instance order.
    for i in range(6):
        assert set(new_rank[i, :k].tolist()) == set(inst_rank[i, :k].tolist())
    assert torch.equal(new_rank[:, k:], inst_rank[:, k:])
    # Inside the top-k, the order is the fused order of the full scoring.
    for i in range(6):
        top = inst_rank[i, :k]
        assert new_rank[i, :k].tolist() == top[full[i, top].argsort(stable=True)].tolist()
    torch.testing.assert_close(
        topk.gather(1, inst_rank[:, :k]) + 2.0, full.gather(1, inst_rank[:, :k])
    )
    torch.testing.assert_close(topk.gather(1, inst_rank[:, k:]), d_inst.gather(1, inst_rank[:, k:]))
    # The re-scoring does change the order somewhere (otherwise the test proves nothing).
    assert not torch.equal(new_rank[:, :k], inst_rank[:, :k])
    # k >= gallery size is the full scoring.
    torch.testing.assert_close(_model(topk=15).pairwise_distance(q, g), full)


def _labels(nq, ng, seed):
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 5, nq),
        rng.integers(0, 5, ng),
        rng.integers(0, 2, nq),
        rng.integers(0, 3, ng),
    )


@pytest.mark.parametrize("topk", [0, 3])
def test_evaluator_with_model_scores_equals_evaluate_rank(topk):
    model = _model(topk=topk)
    q, g = _feats(7, 5), _feats(20, 6)
    qp, gp, qc, gc = _labels(7, 20, 0)
    ev = ReIDEvaluator(
        dataset_name="toy", pairwise_fn=model.pairwise_distance, chunk_size=3, max_rank=10
    )
    inputs = [
        {"pid": int(p), "camid": int(c), "is_query": True, "file_name": f"q{i}"}
        for i, (p, c) in enumerate(zip(qp, qc))
    ]
    inputs += [
        {"pid": int(p), "camid": int(c), "is_query": False, "file_name": f"g{i}"}
        for i, (p, c) in enumerate(zip(gp, gc))
    ]
    feats = torch.cat([q, g])
    for s in range(0, len(inputs), 8):  # batches as the loader would give them
        ev.process(inputs[s : s + 8], [{"feature": f} for f in feats[s : s + 8]])
    res = ev.evaluate()["reid"]
    ref = evaluate_rank(model.pairwise_distance(q, g).numpy(), qp, gp, qc, gc, max_rank=10)
    assert res["mAP"] == pytest.approx(100 * ref["mAP"])
    assert res["mINP"] == pytest.approx(100 * ref["mINP"])
    for r in (1, 5, 10):
        assert res[f"Rank-{r}"] == pytest.approx(100 * ref["cmc"][r - 1])


def test_trainer_builds_pairwise_or_cosine_evaluator():
    cfg = add_all_configs(get_cfg())
    model = _model()
    ev = GMNTrainer.build_evaluator(cfg, "toy", None, model=model)
    assert ev.pairwise_fn == model.pairwise_distance
    # found through test-time wrappers too
    wrapped = GMNTrainer.build_evaluator(cfg, "toy", None, model=FlipTestWrapper(model=model))
    assert wrapped.pairwise_fn == model.pairwise_distance
    # M-Net switched off at test time (config switch) or absent: plain cosine evaluation
    model.test_with_mnet = False
    assert GMNTrainer.build_evaluator(cfg, "toy", None, model=model).pairwise_fn is None
    assert (
        GMNTrainer.build_evaluator(cfg, "toy", None, model=_model(mnet=False)).pairwise_fn is None
    )
    assert GMNTrainer.build_evaluator(cfg, "toy", None).pairwise_fn is None


def test_pairwise_distance_errors():
    with pytest.raises(ValueError, match="N_q, D"):
        _model().pairwise_distance(_feats(3, 0), torch.rand(4, DIM + 1))
