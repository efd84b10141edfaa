"""Tests of the OIM loss: lookup table, circular queue, logits and gradients."""

import math

import pytest
import torch

from reid_plugins.config import get_cfg
from reid_plugins.methods.oim import UNLABELED_PID, OIMLoss

U = UNLABELED_PID


def _oim(num_pids=3, queue_size=3, momentum=0.5, temperature=0.5, weight=1.0):
    return OIMLoss(
        num_pids=num_pids,
        feat_dim=2,
        queue_size=queue_size,
        momentum=momentum,
        temperature=temperature,
        weight=weight,
    )


def test_buffers_in_state_dict():
    oim = _oim()
    assert set(oim.state_dict()) == {"lut", "queue", "queue_ptr", "queue_count"}
    assert list(oim.parameters()) == []
    assert oim.lut.shape == (3, 2) and oim.queue.shape == (3, 2)


def test_lookup_table_update_hand_computed():
    oim = _oim(momentum=0.25)
    # First sighting of id 1: 0.25*0 + 0.75*(0.6, 0.8), normalised -> (0.6, 0.8).
    oim.update(torch.tensor([[3.0, 4.0]]), torch.tensor([1]))
    torch.testing.assert_close(oim.lut[1], torch.tensor([0.6, 0.8]))
    # Two samples of id 1 in one batch are applied sequentially, in batch order.
    oim.update(torch.tensor([[0.0, 2.0], [-1.0, 0.0]]), torch.tensor([1, 1]))
    v = torch.tensor([0.25 * 0.6, 0.25 * 0.8 + 0.75])
    v = v / v.norm()
    v = 0.25 * v + 0.75 * torch.tensor([-1.0, 0.0])
    v = v / v.norm()
    torch.testing.assert_close(oim.lut[1], v)
    torch.testing.assert_close(oim.lut[[0, 2]], torch.zeros(2, 2))
    assert int(oim.queue_count) == 0  # labelled samples never enter the queue


def test_queue_insertion_and_wrap_around():
    oim = _oim(queue_size=3)
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    oim.update(feats[:2], torch.tensor([U, U]))
    torch.testing.assert_close(oim.queue[:2], feats[:2])
    assert (int(oim.queue_ptr), int(oim.queue_count)) == (2, 2)
    torch.testing.assert_close(oim.queue[2], torch.zeros(2))
    # Two more: slot 2 then wrap to slot 0 (overwriting the oldest); labelled one skipped.
    oim.update(torch.tensor([[0.0, -3.0], [5.0, 0.0], [-2.0, 0.0]]), torch.tensor([U, 0, U]))
    torch.testing.assert_close(oim.queue[2], torch.tensor([0.0, -1.0]))
    torch.testing.assert_close(oim.queue[0], torch.tensor([-1.0, 0.0]))
    torch.testing.assert_close(oim.queue[1], feats[1])
    assert (int(oim.queue_ptr), int(oim.queue_count)) == (1, 3)
    # More unlabelled samples than slots: only the newest 3 stay, pointer advances by 5.
    many = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    oim.update(many, torch.full((5,), U))
    # Writing 5 items from slot 1: slots 1,2,0,1,2 -> final slot 0 = item 2, 1 = item 3, 2 = 4.
    torch.testing.assert_close(oim.queue, many[[2, 3, 4]])
    assert (int(oim.queue_ptr), int(oim.queue_count)) == ((1 + 5) % 3, 3)


def test_loss_equals_hand_computed_ce_over_concatenated_logits():
    tau = 0.5
    oim = _oim(num_pids=2, queue_size=3, temperature=tau).eval()
    oim.lut.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    oim.update(torch.tensor([[-0.6, 0.8]]), torch.tensor([U]))  # one filled queue slot
    table = [[1.0, 0.0], [0.0, 1.0], [-0.6, 0.8]]  # empty slots do not take part
    feats = [[3.0, 4.0], [1.0, 1.0], [0.0, -2.0]]
    pids = [1, U, 0]
    expected, n_lab = 0.0, 0
    for f, y in zip(feats, pids):
        if y < 0:
            continue
        norm = math.hypot(*f)
        z = [(t[0] * f[0] + t[1] * f[1]) / norm / tau for t in table]
        expected += -z[y] + math.log(sum(math.exp(v) for v in z))
        n_lab += 1
    expected /= n_lab
    loss = oim(torch.tensor(feats), torch.tensor(pids))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert oim.logits(torch.tensor(feats)).shape == (3, 3)
    oim.weight = 2.0
    assert oim(torch.tensor(feats), torch.tensor(pids)).item() == pytest.approx(2 * expected)


def test_no_gradient_into_tables_and_training_update_is_autograd_safe():
    oim = _oim()
    oim.update(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), torch.tensor([0, 1, U]))
    feats = torch.tensor([[3.0, 4.0], [1.0, -1.0], [2.0, 0.5]], requires_grad=True)
    pids = torch.tensor([0, 1, U])

    oim.eval()
    before = {k: v.clone() for k, v in oim.state_dict().items()}
    (ref,) = torch.autograd.grad(oim(feats, pids), feats)
    for k, v in oim.state_dict().items():  # eval forward + backward change nothing
        torch.testing.assert_close(v, before[k])
    assert not oim.lut.requires_grad and oim.lut.grad is None and oim.queue.grad is None

    oim.train()
    loss = oim(feats, pids)  # updates the tables in place after computing the loss
    assert not torch.equal(oim.lut, before["lut"])
    assert int(oim.queue_count) == 2
    loss.backward()
    torch.testing.assert_close(feats.grad, ref)  # loss used the pre-update snapshot
    assert ref[2].abs().sum() == 0  # the unlabelled sample gets no gradient from the loss
    assert ref[:2].abs().sum() > 0
    assert oim.lut.grad is None and oim.queue.grad is None


def test_unlabelled_only_batch_gives_connected_zero_and_fills_queue():
    oim = _oim().train()
    feats = torch.tensor([[3.0, 4.0], [1.0, 0.0]], requires_grad=True)
    loss = oim(feats, torch.tensor([U, U]))
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    torch.testing.assert_close(feats.grad, torch.zeros_like(feats))
    torch.testing.assert_close(oim.queue[:2], torch.tensor([[0.6, 0.8], [1.0, 0.0]]))
    assert int(oim.queue_count) == 2


def test_state_dict_round_trip():
    oim = _oim()
    oim.update(torch.tensor([[1.0, 2.0], [2.0, -1.0]]), torch.tensor([2, U]))
    restored = _oim()
    restored.load_state_dict(oim.state_dict())
    for k, v in oim.state_dict().items():
        torch.testing.assert_close(restored.state_dict()[k], v)
    assert int(restored.queue_ptr) == 1


def test_zero_queue_and_errors():
    oim = _oim(queue_size=0).train()
    loss = oim(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, U]))
    assert torch.isfinite(loss) and int(oim.queue_count) == 0
    with pytest.raises(ValueError, match=r"pids must be in \[-1, 3\)"):
        oim(torch.ones(1, 2), torch.tensor([3]))
    with pytest.raises(ValueError, match="drop background"):
        oim(torch.ones(1, 2), torch.tensor([-2]))
    with pytest.raises(ValueError, match=r"features must be \(N, 2\)"):
        oim(torch.ones(1, 3), torch.tensor([0]))
    with pytest.raises(ValueError, match="TEMP"):
        _oim(temperature=0.0)


def test_from_config():
    cfg = get_cfg()
    c = cfg.MODEL.LOSSES.OIM
    assert 1.0 / c.TEMP == pytest.approx(30.0)
    assert (c.NUM_PIDS, c.QUEUE_SIZE, c.MOMENTUM) == (0, 5000, 0.5)
    with pytest.raises(ValueError, match="NUM_PIDS is 0"):
        OIMLoss.from_config(cfg, feat_dim=4)
    oim = OIMLoss.from_config(cfg, feat_dim=4, num_pids=7)
    assert oim.lut.shape == (7, 4) and oim.queue.shape == (5000, 4)
    cfg.MODEL.LOSSES.OIM.NUM_PIDS = 5
    cfg.MODEL.LOSSES.OIM.QUEUE_SIZE = 10
    cfg.MODEL.LOSSES.OIM.WEIGHT = 0.5
    oim = OIMLoss.from_config(cfg, feat_dim=4, num_pids=7)
    assert oim.lut.shape == (5, 4) and oim.queue.shape == (10, 4) and oim.weight == 0.5
    assert oim.temperature == pytest.approx(1 / 30)
