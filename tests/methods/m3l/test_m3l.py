"""M3L meta-architecture: stages, MetaBN in the meta-test loss (Eq. 10), memories, switches."""

import copy
import uuid

import pytest
import torch
import torch.nn.functional as F

from reid_plugins.data.catalog import DatasetCatalog, MetadataCatalog
from reid_plugins.methods.m3l import MetaBatchNorm1d
from reid_plugins.modeling import build_model
from reid_plugins.modeling.losses import MemoryLoss, TripletLoss
from tests.methods.m3l._helpers import DOMAINS, IDS, baseline_twin, batch, tiny_cfg, tiny_m3l


@pytest.fixture
def tiny_sets():
    """Three registered training sets (records only; from_config never reads images)."""
    names = []
    for d in range(DOMAINS):
        name = f"m3l_tiny{d}_{uuid.uuid4().hex[:6]}"
        recs = [
            {
                "file_name": f"/nonexistent/{d}_{i}.png",
                "pid": i % (IDS + d),
                "camid": i % 2,
                "dataset": name,
            }
            for i in range(4 * (IDS + d))
        ]
        DatasetCatalog.register(name, lambda recs=recs: [dict(r) for r in recs])
        names.append(name)
    yield names
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


PIDS = [IDS, IDS + 1, IDS + 2]


def _m3l_cfg(names, **m3l):
    cfg = tiny_cfg()
    cfg.MODEL.META_ARCHITECTURE = "M3L"
    cfg.MODEL.HEADS.NAME = "MetaBNHead"
    cfg.MODEL.HEADS.CLS_LAYER = "none"
    cfg.DATASETS.TRAIN = list(names)
    for k, v in m3l.items():
        cfg.MODEL.M3L[k] = v
    return cfg


def _param_shapes(model):
    return {
        n: tuple(p.shape) for n, p in model.named_parameters() if not n.startswith("classifiers")
    }


def test_switches_build_exactly_what_they_name(tiny_sets):
    ref = build_model(_m3l_cfg(tiny_sets), PIDS)
    assert isinstance(ref.triplet_loss, TripletLoss) and isinstance(ref.memory_loss, MemoryLoss)
    assert ref.memory_loss.num_pids_per_domain == [IDS, IDS + 1, IDS + 2]
    assert ref.classifiers is None and ref.ce_loss is None and ref.metabn
    assert ref.memory_loss.update_rule == "sequential"  # the authors' code
    mean_rule = build_model(_m3l_cfg(tiny_sets, MEMORY_UPDATE_RULE="mean"), PIDS)
    assert mean_rule.memory_loss.update_rule == "mean"  # Eq. 2
    shapes = _param_shapes(ref)

    only_id = build_model(_m3l_cfg(tiny_sets, LOSSES=["id"]), PIDS)
    assert only_id.triplet_loss is None and only_id.memory_loss is not None
    only_tri = build_model(_m3l_cfg(tiny_sets, LOSSES=["triplet"]), PIDS)
    assert only_tri.memory_loss is None and only_tri.triplet_loss is not None
    no_bn = build_model(_m3l_cfg(tiny_sets, METABN=False), PIDS)
    assert not no_bn.metabn and no_bn.memory_loss is not None and no_bn.triplet_loss is not None
    fcg = build_model(_m3l_cfg(tiny_sets, CLASSIFIER="fc_global"), PIDS)
    assert fcg.memory_loss is None and fcg.triplet_loss is not None
    assert [fc.out_features for fc in fcg.classifiers] == [3 * IDS + 3]
    fcp = build_model(_m3l_cfg(tiny_sets, CLASSIFIER="fc_parallel"), PIDS)
    assert [fc.out_features for fc in fcp.classifiers] == [IDS, IDS + 1, IDS + 2]
    # the network itself (backbone + neck) is the same whatever the switches
    for m in (only_id, only_tri, no_bn, fcg, fcp):
        assert _param_shapes(m) == shapes
        assert isinstance(m.head.bottleneck, MetaBatchNorm1d)

    alias = build_model(_m3l_cfg(tiny_sets, LOSSES=["memory"]), PIDS)  # = ["id"] with the memory
    assert alias.triplet_loss is None and alias.memory_loss is not None
    with pytest.raises(ValueError, match="MODEL.M3L.LOSSES"):
        build_model(_m3l_cfg(tiny_sets, LOSSES=["memory"], CLASSIFIER="fc_global"), PIDS)
    with pytest.raises(ValueError, match="MODEL.M3L.LOSSES"):
        build_model(_m3l_cfg(tiny_sets, LOSSES=["ce"]), PIDS)
    with pytest.raises(ValueError, match="MODEL.M3L.CLASSIFIER"):
        build_model(_m3l_cfg(tiny_sets, CLASSIFIER="fc"), PIDS)
    cfg = _m3l_cfg(tiny_sets)
    cfg.MODEL.HEADS.NAME = "EmbeddingHead"
    with pytest.raises(ValueError, match="MetaBNHead"):
        build_model(cfg, PIDS)


def test_without_data_counts_the_model_is_built_for_inference(tiny_sets):
    """build_model(cfg) without num_pids_per_domain (eval-only, export) builds no memory or
    classifier; it extracts features but refuses to train."""
    model = build_model(_m3l_cfg(tiny_sets))
    assert model.memory_loss is None and model.classifiers is None
    assert {n for n, _ in model.named_buffers() if "memory" in n} == set()
    model.eval()
    out = model([{"image": torch.rand(3, 32, 16) * 255}])
    assert out[0]["feature"].shape == (model.head.feat_dim,)
    model.train()
    data = [batch(0, 1), batch(1, 1)]
    only_id = build_model(_m3l_cfg(tiny_sets, LOSSES=["id"])).train()
    with pytest.raises(RuntimeError, match="built for inference"):
        only_id(data)


def test_metabn_switch_changes_only_the_meta_test_identification_loss():
    on, off = tiny_m3l(metabn=True), tiny_m3l(metabn=False)
    off.load_state_dict(on.state_dict())
    for m in (on, off):
        m.train()
    data = [batch(0), batch(1), batch(2)]
    torch.manual_seed(5)
    l_on = on(data[:2], stage="meta_train", update_memory=False)
    t_on = on(data[2], stage="meta_test", update_memory=False)
    torch.manual_seed(5)
    l_off = off(data[:2], stage="meta_train", update_memory=False)
    t_off = off(data[2], stage="meta_test", update_memory=False)
    for k in l_on:
        torch.testing.assert_close(l_on[k], l_off[k])
    torch.testing.assert_close(t_on["loss_triplet"], t_off["loss_triplet"])
    assert abs(t_on["loss_memory"].item() - t_off["loss_memory"].item()) > 1e-4


def test_meta_test_memory_loss_is_mean_over_metabn_mixes():
    model = tiny_m3l()
    model.train()
    bn = model.head.bottleneck
    lam, zs = 0.25, []
    bn.lam_sampler = lambda: lam
    bn.z_sampler = lambda m, s, n: zs.append(m + s * torch.randn(n, m.shape[0])) or zs[-1]
    model([batch(0), batch(1)], stage="meta_train", update_memory=False)
    assert len(bn.saved_stats) == 2 and bn.mode == "plain"  # kept for the meta-test pass
    before = [m.clone() for m in (model.memory_loss.get_memory(d) for d in range(DOMAINS))]
    test = batch(2)
    captured = []
    hook = model.head.pool.register_forward_hook(lambda m, i, o: captured.append(o.flatten(1)))
    losses = model(test, stage="meta_test", update_memory=False)
    hook.remove()
    assert bn.saved_stats == []  # cleared after the meta-test pass

    # Eq. 10 by hand from the pre-BN features of that pass and the sampled z
    pre = captured[0].detach()
    pids = torch.tensor([r["domain_pid"] for r in test])
    expected = []
    for z in zs:
        mixed = lam * pre + (1 - lam) * z
        f = F.batch_norm(mixed, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
        expected.append(model.memory_loss(f, pids, 2))
    torch.testing.assert_close(
        losses["loss_memory"], torch.stack(expected).mean(), rtol=1e-4, atol=1e-5
    )
    for d in range(DOMAINS):  # update_memory=False: untouched
        torch.testing.assert_close(model.memory_loss.get_memory(d), before[d])


def test_memory_receives_no_gradient_and_is_not_a_parameter():
    model = tiny_m3l()
    model.train()
    names = {n for n, _ in model.named_parameters()}
    assert not any("memory" in n for n in names)
    losses = model([batch(0), batch(1)], stage="meta_train", update_memory=False)
    losses.update(
        {k + "_mte": v for k, v in model(batch(2), stage="meta_test", update_memory=False).items()}
    )
    sum(losses.values()).backward()
    for d in range(DOMAINS):
        mem = model.memory_loss.get_memory(d)
        assert not mem.requires_grad and mem.grad is None
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_standard_stage_equals_reid_baseline():
    m3l = tiny_m3l()
    base = baseline_twin(m3l)
    m3l.train(), base.train()
    data = [batch(0, 1), batch(1, 1), batch(2, 1)]
    out_m, out_b = m3l(data), base(data)
    assert out_m.keys() == out_b.keys() == {"loss_triplet", "loss_memory"}
    for k in out_m:
        torch.testing.assert_close(out_m[k], out_b[k])
    for d in range(DOMAINS):  # same in-forward memory update (Eq. 2) as the baseline
        torch.testing.assert_close(m3l.memory_loss.get_memory(d), base.memory_loss.get_memory(d))


def test_update_memories_from_forward_uses_batch_features_and_keeps_bn_stats():
    model = tiny_m3l()
    model.train()
    data = [batch(0, 3), batch(1, 3), batch(2, 3)]
    ref = copy.deepcopy(model)
    before = [model.memory_loss.get_memory(d).clone() for d in range(DOMAINS)]
    running = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    model.update_memories_from_forward(data)
    for k, v in running.items():
        torch.testing.assert_close(model.state_dict()[k], v)
    with torch.no_grad():  # manual Eq. 2 from train-mode (batch statistics) features
        for d, b in enumerate(data):
            feats = ref.extract(b)["post_bn"]
            ref.memory_loss.update(feats, torch.tensor([r["domain_pid"] for r in b]), d)
    for d in range(DOMAINS):
        torch.testing.assert_close(model.memory_loss.get_memory(d), ref.memory_loss.get_memory(d))
        assert not torch.allclose(model.memory_loss.get_memory(d), before[d])


def test_collector_and_inference():
    model = tiny_m3l()
    model.train()
    got = []
    model([batch(0), batch(1)], stage="meta_train", update_memory=False, collector=got)
    model(batch(2), stage="meta_test", update_memory=False, collector=got)
    assert [d for d, _, _ in got] == [0, 1, 2]
    assert all(f.shape == (6, 64) and not f.requires_grad for _, f, _ in got)
    # meta-test domain: the un-mixed feature normalised with its own statistics
    torch.testing.assert_close(got[2][1].mean(0), torch.zeros(64), atol=1e-4, rtol=0)
    model.eval()
    out = model(batch(0))
    assert len(out) == 6 and out[0]["feature"].shape == (64,)
    torch.testing.assert_close(out[0]["feature"].norm(), torch.tensor(1.0))
    with pytest.raises(ValueError, match="one domain batch"):
        model.train()
        model([batch(0), batch(1)], stage="meta_test")
    with pytest.raises(ValueError, match="stage"):
        model(batch(0), stage="meta")
