"""Tests of the per-domain identity memories and the memory loss (M3L Eq. 2-3)."""

import math

import pytest
import torch
import torch.nn.functional as F

from reid_plugins.config import get_cfg
from reid_plugins.modeling.losses import MemoryBank, MemoryLoss, extract_and_initialize


def _bank(momentum=0.2, temperature=0.5, sizes=(3, 2)):
    return MemoryBank(
        num_pids_per_domain=list(sizes), feat_dim=2, momentum=momentum, temperature=temperature
    )


def _set(bank, domain, rows):
    """Initialise ``domain`` with the given (already unit-norm) rows, one feature per id."""
    rows = torch.tensor(rows)
    bank.initialize(domain, rows, torch.arange(rows.shape[0]))


def test_buffers_are_registered_per_domain_and_not_trainable():
    bank = _bank()
    keys = set(bank.state_dict())
    assert keys == {"memory_0", "initialized_0", "memory_1", "initialized_1"}
    assert list(bank.parameters()) == []
    assert bank.get_memory(0).shape == (3, 2) and bank.get_memory(1).shape == (2, 2)
    assert not bank.get_memory(0).requires_grad
    assert not bank.is_initialized(0) and not bank.is_initialized(1)


def test_initialize_averages_per_identity():
    bank = _bank()
    feats = torch.tensor([[3.0, 4.0], [0.0, 2.0], [5.0, 0.0], [0.0, -1.0], [1.0, 1.0]])
    pids = torch.tensor([0, 0, 1, 2, 1])
    bank.initialize(0, feats, pids)
    # id 0: mean of (0.6, 0.8) and (0, 1) = (0.3, 0.9); id 1: mean of (1, 0), (1, 1)/sqrt2;
    # id 2: (0, -1). Then each row L2-normalised.
    r = 1 / math.sqrt(2)
    expected = torch.tensor([[0.3, 0.9], [(1 + r) / 2, r / 2], [0.0, -1.0]])
    expected = expected / expected.norm(dim=1, keepdim=True)
    torch.testing.assert_close(bank.get_memory(0), expected)
    assert bank.is_initialized(0) and not bank.is_initialized(1)


def test_initialize_raises_for_identity_without_feature():
    bank = _bank()
    with pytest.raises(ValueError, match=r"pids \[1\]"):
        bank.initialize(0, torch.ones(2, 2), torch.tensor([0, 2]))
    assert not bank.is_initialized(0)


def test_update_equation_hand_computed():
    bank = _bank(momentum=0.2)
    _set(bank, 0, [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    feats = torch.tensor([[3.0, 4.0], [0.0, 2.0], [-2.0, 0.0]])
    bank.update(feats, torch.tensor([0, 0, 2]), domain=0)
    # id 0: 0.2*(1,0) + 0.8*mean((0.6,0.8),(0,1)) = (0.44, 0.72), normalised.
    row0 = torch.tensor([0.44, 0.72]) / math.sqrt(0.44**2 + 0.72**2)
    # id 2: 0.2*(0.6,0.8) + 0.8*(-1,0) = (-0.68, 0.16), normalised.
    row2 = torch.tensor([-0.68, 0.16]) / math.sqrt(0.68**2 + 0.16**2)
    expected = torch.stack([row0, torch.tensor([0.0, 1.0]), row2])
    torch.testing.assert_close(bank.get_memory(0), expected)


def test_update_touches_only_its_domain_and_requires_init():
    bank = _bank()
    _set(bank, 0, [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    with pytest.raises(RuntimeError, match="domain 1 is not initialised"):
        bank.update(torch.ones(1, 2), torch.tensor([0]), domain=1)
    with pytest.raises(RuntimeError, match="not initialised"):
        bank.loss(torch.ones(1, 2), torch.tensor([0]), domain=1)
    _set(bank, 1, [[1.0, 0.0], [0.0, 1.0]])
    before0 = bank.get_memory(0).clone()
    bank.update(torch.tensor([[1.0, 1.0]]), torch.tensor([1]), domain=1)
    torch.testing.assert_close(bank.get_memory(0), before0)
    assert not torch.equal(bank.get_memory(1)[1], torch.tensor([0.0, 1.0]))


def test_loss_equals_manual_computation():
    tau = 0.5
    bank = _bank(temperature=tau)
    mem = [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]
    _set(bank, 0, mem)
    feats = [[3.0, 4.0], [1.0, -1.0]]
    pids = [1, 0]
    expected = 0.0
    for f, y in zip(feats, pids):
        n = math.hypot(*f)
        logits = [(m[0] * f[0] + m[1] * f[1]) / n / tau for m in mem]
        expected += -logits[y] + math.log(sum(math.exp(z) for z in logits))
    expected /= len(feats)
    loss = bank.loss(torch.tensor(feats), torch.tensor(pids), domain=0)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    weighted = MemoryLoss(num_pids_per_domain=[3], feat_dim=2, temperature=tau, weight=3.0)
    weighted.load_state_dict({k: v for k, v in bank.state_dict().items() if k.endswith("0")})
    out = weighted(torch.tensor(feats), torch.tensor(pids), 0)
    assert out.item() == pytest.approx(3 * expected, rel=1e-6)


def test_gradient_flows_to_features_only():
    bank = _bank()
    _set(bank, 0, [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    feats = torch.tensor([[3.0, 4.0], [1.0, -1.0]], requires_grad=True)
    pids = torch.tensor([1, 0])
    before = bank.get_memory(0).clone()
    loss = bank(feats, pids, 0)
    loss.backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0
    mem = bank.get_memory(0)
    assert not mem.requires_grad and mem.grad is None
    torch.testing.assert_close(mem, before)


def test_update_between_loss_and_backward_keeps_autograd_valid():
    bank = _bank()
    _set(bank, 0, [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    feats = torch.tensor([[3.0, 4.0], [1.0, -1.0]], requires_grad=True)
    pids = torch.tensor([1, 0])
    ref = torch.autograd.grad(bank.loss(feats, pids, 0), feats)[0]
    loss = bank.loss(feats, pids, 0)
    bank.update(feats, pids, 0)  # in-place change of the buffer before backward
    grad = torch.autograd.grad(loss, feats)[0]
    torch.testing.assert_close(grad, ref)


def test_second_order_gradient_through_memory_loss():
    # M3L's meta-test loss differentiates through an inner step (create_graph=True).
    bank = _bank()
    _set(bank, 0, [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    w = torch.tensor([[1.0, 0.5], [-0.3, 2.0]], requires_grad=True)
    x = torch.tensor([[1.0, 2.0], [0.5, -1.0]])
    pids = torch.tensor([2, 0])
    (g,) = torch.autograd.grad(bank.loss(x @ w, pids, 0), w, create_graph=True)
    (g2,) = torch.autograd.grad(g.pow(2).sum(), w)
    assert torch.isfinite(g2).all() and g2.abs().sum() > 0


def test_state_dict_round_trip():
    bank = _bank()
    _set(bank, 1, [[0.6, 0.8], [0.0, -1.0]])
    bank.update(torch.tensor([[1.0, 0.0]]), torch.tensor([0]), domain=1)
    restored = _bank()
    restored.load_state_dict(bank.state_dict())
    torch.testing.assert_close(restored.get_memory(1), bank.get_memory(1))
    assert restored.is_initialized(1) and not restored.is_initialized(0)
    with pytest.raises(RuntimeError, match="size mismatch"):
        _bank(sizes=(3, 5)).load_state_dict(bank.state_dict())


def test_extract_and_initialize_matches_initialize():
    g = torch.Generator().manual_seed(0)
    vectors = torch.randn(10, 2, generator=g)
    domain_pids = [[0, 1, 2, 0, 1, 2], [0, 1, 1, 0]]
    loaders, offset = [], 0
    for pids in domain_pids:
        recs = [{"x": offset + i, "domain_pid": p, "pid": 100 + p} for i, p in enumerate(pids)]
        offset += len(pids)
        half = len(recs) // 2
        loaders.append([recs[:half], recs[half:]])  # two batches per domain
    seen = []

    def feature_fn(batch):
        seen.append(torch.is_grad_enabled())
        return vectors[[r["x"] for r in batch]] * 5.0  # unnormalised on purpose

    bank = _bank()
    extract_and_initialize(bank, feature_fn, loaders)
    ref = _bank()
    ref.initialize(0, vectors[:6], torch.tensor(domain_pids[0]))
    ref.initialize(1, vectors[6:], torch.tensor(domain_pids[1]))
    torch.testing.assert_close(bank.get_memory(0), ref.get_memory(0))
    torch.testing.assert_close(bank.get_memory(1), ref.get_memory(1))
    assert bank.is_initialized(0) and bank.is_initialized(1)
    assert seen and not any(seen)
    with pytest.raises(ValueError, match="2 data loaders for 1"):
        extract_and_initialize(_bank(sizes=(3,)), feature_fn, loaders)


def test_errors_and_from_config():
    bank = _bank()
    _set(bank, 0, [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    with pytest.raises(ValueError, match=r"must be in \[0, 3\)"):
        bank.loss(torch.ones(1, 2), torch.tensor([3]), 0)
    with pytest.raises(ValueError, match="domain 2 out of range"):
        bank.loss(torch.ones(1, 2), torch.tensor([0]), 2)
    with pytest.raises(ValueError, match="MOMENTUM"):
        _bank(momentum=1.5)
    cfg = get_cfg()
    cfg.MODEL.LOSSES.MEMORY.TEMP = 0.1
    cfg.MODEL.LOSSES.MEMORY.MOMENTUM = 0.3
    cfg.MODEL.LOSSES.MEMORY.WEIGHT = 2.0
    m = MemoryLoss.from_config(cfg, num_pids_per_domain=[4, 5], feat_dim=8)
    assert (m.temperature, m.momentum, m.weight) == (0.1, 0.3, 2.0)
    assert m.get_memory(1).shape == (5, 8)
    b = MemoryBank.from_config(cfg, num_pids_per_domain=[4], feat_dim=8)
    assert (b.temperature, b.momentum, b.num_domains) == (0.1, 0.3, 1)
    x = F.normalize(torch.randn(3, 8), dim=1)
    m.initialize(0, torch.cat([x, x[:1]]), torch.tensor([0, 1, 2, 3]))
    assert m(x, torch.tensor([0, 1, 2]), 0).item() > 0


def test_update_uses_features_of_all_processes(monkeypatch):
    # Simulate 2 processes: the "other rank" contributes its own batch; the result must equal
    # a single-process update with both batches concatenated (memories stay in sync).
    from reid_plugins.utils import comm

    other = [torch.tensor([[0.0, 3.0], [1.0, 1.0]]), torch.tensor([0, 2])]
    mine = [torch.tensor([[2.0, 0.0]]), torch.tensor([0])]
    ref = _bank()
    _set(ref, 0, [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    ref.update(torch.cat([mine[0], other[0]]), torch.cat([mine[1], other[1]]), 0)

    bank = _bank()
    _set(bank, 0, [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    monkeypatch.setattr(comm, "get_world_size", lambda: 2)
    monkeypatch.setattr(
        comm, "all_gather", lambda data: [data, [F.normalize(other[0], dim=1), other[1]]]
    )
    bank.update(mine[0], mine[1], 0)
    torch.testing.assert_close(bank.get_memory(0), ref.get_memory(0))
