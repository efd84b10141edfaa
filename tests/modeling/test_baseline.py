"""ReIDBaseline: losses per domain, memory updates, inference contract, loss falls."""

import pytest
import torch

from reid_plugins.modeling.backbone.resnet import ResNet
from reid_plugins.modeling.heads import EmbeddingHead, GhostBatchNorm1d
from reid_plugins.modeling.losses import CrossEntropyLoss, MemoryLoss, TripletLoss
from reid_plugins.modeling.meta_arch import ReIDBaseline


def _model(memory=False, ce=True, num_pids=(4, 4)):
    torch.manual_seed(0)
    backbone = ResNet(depth=18, base_width=8, out_features=("res5",))
    head = EmbeddingHead(feat_dim=64, num_classes=sum(num_pids) if ce else 0)
    mem = (
        MemoryLoss(num_pids_per_domain=list(num_pids), feat_dim=64, momentum=0.2, temperature=0.05)
        if memory
        else None
    )
    return ReIDBaseline(
        backbone=backbone,
        head=head,
        pixel_mean=[120.0] * 3,
        pixel_std=[60.0] * 3,
        ce_loss=CrossEntropyLoss(epsilon=0.1) if ce else None,
        triplet_loss=TripletLoss(margin=0.3),
        memory_loss=mem,
    )


def _batch(domain, num_ids=4, k=2, seed=0):
    g = torch.Generator().manual_seed(seed + 100 * domain)
    protos = torch.rand(num_ids, 3, 1, 1, generator=g) * 255
    out = []
    for p in range(num_ids):
        for _ in range(k):
            img = (protos[p] + 20 * torch.randn(3, 32, 16, generator=g)).clamp(0, 255)
            out.append(
                {"image": img, "pid": p + 4 * domain, "domain_pid": p, "domain": domain, "camid": 0}
            )
    return out


def test_inference_returns_normalised_feature_per_input_and_keeps_inputs():
    model = _model().eval()
    batch = _batch(0)
    before = batch[0]["image"].clone()
    out = model(batch)
    assert len(out) == len(batch)
    for o in out:
        assert o["feature"].shape == (64,)
        assert torch.allclose(o["feature"].norm(), torch.tensor(1.0), atol=1e-5)
    assert torch.equal(batch[0]["image"], before)  # inputs are never modified


def test_multi_source_losses_are_domain_averages():
    model = _model(memory=False).train()
    batches = [_batch(0), _batch(1)]
    torch.manual_seed(1)
    joint = model(batches)
    # BN is in train mode: each domain forwarded separately gives the same numbers
    per = [model.domain_losses(b) for b in batches]
    for k in joint:
        assert torch.allclose(joint[k], (per[0][k] + per[1][k]) / 2, atol=1e-6), k


def test_memory_loss_updates_memory_without_gradient():
    model = _model(memory=True, ce=False).train()
    mem = model.memory_loss
    for d in range(2):
        mem.initialize(d, torch.randn(8, 64), torch.arange(4).repeat(2))
    before = [mem.get_memory(d).clone() for d in range(2)]
    losses = model([_batch(0), _batch(1)])
    assert set(losses) == {"loss_triplet", "loss_memory"}
    sum(losses.values()).backward()
    for d in range(2):
        assert not mem.get_memory(d).requires_grad
        assert not torch.equal(mem.get_memory(d), before[d])  # Eq. 2 applied to both domains
        assert torch.allclose(mem.get_memory(d).norm(dim=1), torch.ones(4), atol=1e-5)
    assert model.backbone.stem.conv1.weight.grad is not None


def test_mixed_domain_batch_is_rejected_for_memory_loss():
    model = _model(memory=True, ce=False).train()
    for d in range(2):
        model.memory_loss.initialize(d, torch.randn(8, 64), torch.arange(4).repeat(2))
    with pytest.raises(ValueError, match="mixes domains"):
        model(_batch(0)[:4] + _batch(1)[:4])


def test_loss_falls_on_a_separable_problem():
    model = _model(ce=True, num_pids=(8,)).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = _batch(0, num_ids=8, k=2)
    first = last = None
    for _ in range(15):
        loss = sum(model(batch).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
        last = loss.item()
    assert last < 0.7 * first


def test_ghost_bn_normalises_groups_separately():
    bn = GhostBatchNorm1d(3, split=2).train()
    x = torch.tensor([[0.0, 1, 2], [2, 3, 4], [10, 10, 10], [12, 14, 16]])
    y = bn(x)
    for g in (y[:2], y[2:]):
        assert torch.allclose(g.mean(0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(
        GhostBatchNorm1d(3, split=0).train()(x).mean(0), torch.zeros(3), atol=1e-5
    )


def test_initialize_from_data_fills_memories_once_and_keeps_the_mode():
    """The model owns its memory initialisation: normalised per-identity mean of L2-normalised
    eval-mode features,
    loaders built only when needed, skipped when the memories are already set (resume)."""
    model = _model(memory=True, ce=False).train()
    calls = []

    def loaders():
        calls.append(1)
        return [[_batch(0)], [_batch(1)]]

    model.initialize_from_data(loaders)
    assert model.training and len(calls) == 1
    mem = model.memory_loss
    model.eval()
    with torch.no_grad():
        feats = torch.nn.functional.normalize(model.memory_features(_batch(0)), dim=1)
    pids = torch.tensor([r["domain_pid"] for r in _batch(0)])
    want = torch.nn.functional.normalize(
        torch.stack([feats[pids == p].mean(0) for p in range(4)]), dim=1
    )
    torch.testing.assert_close(mem.get_memory(0), want, rtol=1e-4, atol=1e-5)
    model.initialize_from_data(loaders)  # already initialised (e.g. resumed): no extraction
    assert len(calls) == 1
    _model(memory=False).initialize_from_data(loaders)  # nothing to initialise
    assert len(calls) == 1
