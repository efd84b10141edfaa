"""GMN's M-Net: sample-pair features, DP switch, chunked scoring and pair mining."""

import pytest
import torch
import torch.nn.functional as F

from reid_plugins.config import add_all_configs, get_cfg
from reid_plugins.methods.gmn import MetricNet, mine_pairs, pair_features, pair_identity_keys


def _trained_bn_mnet(in_dim=6, hidden=(5, 4), seed=0):
    """An M-Net whose BN running statistics are not the identity (a few train-mode passes)."""
    torch.manual_seed(seed)
    net = MetricNet(in_dim=in_dim, hidden_dims=hidden, dp_rate=0.5)
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(32, in_dim) * 2)
    return net.eval()


# ----------------------------------------------------------------------------- #
# Sample-pair features
# ----------------------------------------------------------------------------- #
def test_pair_features_hand_computed():
    p = torch.tensor([[1.0, 0.0, 2.0], [0.5, -1.0, 0.0]])
    q = torch.tensor([[0.0, 1.0, 2.0], [0.5, 1.0, -3.0]])
    expected = torch.tensor([[1.0, 1.0, 0.0], [0.0, 4.0, 9.0]])
    torch.testing.assert_close(pair_features(p, q), expected)
    # symmetric, and for unit vectors its sum is ||p - q||^2 = 2 - 2 cos
    torch.testing.assert_close(pair_features(q, p), expected)
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(5, 8, generator=g), dim=1)
    b = F.normalize(torch.randn(5, 8, generator=g), dim=1)
    torch.testing.assert_close(pair_features(a, b).sum(1), 2 - 2 * (a * b).sum(1))
    with pytest.raises(ValueError, match="shapes differ"):
        pair_features(p, q[:1])


def test_metric_net_layers_and_from_config():
    cfg = add_all_configs(get_cfg())
    cfg.MODEL.GMN.MNET.HIDDEN_DIMS = [16, 8]
    cfg.MODEL.GMN.DP.RATE = 0.3
    net = MetricNet.from_config(cfg, in_dim=12)
    assert net.hidden_dims == [16, 8] and net.dp_rate == 0.3 and net.embed_dim == 8
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(12, 16), (16, 8), (8, 1)]
    logits, emb = net(torch.rand(7, 12), return_embedding=True)
    assert logits.shape == (7,) and emb.shape == (7, 8) and bool((emb >= 0).all())  # ReLU
    cfg.MODEL.GMN.DP.ENABLED = False
    assert MetricNet.from_config(cfg, in_dim=12).dp_rate == 0.0
    with pytest.raises(ValueError, match="NORM"):
        MetricNet(in_dim=4, norm="LN")
    with pytest.raises(ValueError, match="DP.RATE"):
        MetricNet(in_dim=4, dp_rate=1.0)
    with pytest.raises(ValueError, match=r"\(N, 12\)"):
        net(torch.rand(3, 5))


def test_dp_changes_outputs_only_in_training_after_the_flag():
    torch.manual_seed(0)
    net = MetricNet(in_dim=32, hidden_dims=(16,), dp_rate=0.5)
    x = torch.rand(20, 32)
    net.train()
    # Flag off: training forward is deterministic (BN uses the same batch statistics).
    torch.testing.assert_close(net(x), net(x))
    net.set_dp_active(True)
    assert net.dp_enabled and bool(net.dp_active)
    assert not torch.allclose(net(x), net(x))
    # Eval mode ignores DP.
    net.eval()
    torch.testing.assert_close(net(x), net(x))
    net.set_dp_active(False)
    ref = net(x)
    net.set_dp_active(True)
    torch.testing.assert_close(net(x), ref)
    # A zero rate never perturbs, whatever the flag.
    off = MetricNet(in_dim=32, hidden_dims=(16,), dp_rate=0.0).train()
    off.set_dp_active(True)
    assert not off.dp_enabled
    torch.testing.assert_close(off(x), off(x))


def test_dp_flag_is_a_checkpointed_buffer():
    net = MetricNet(in_dim=4, hidden_dims=(3,), dp_rate=0.1)
    assert "dp_active" in net.state_dict() and not bool(net.state_dict()["dp_active"])
    net.set_dp_active(True)
    other = MetricNet(in_dim=4, hidden_dims=(3,), dp_rate=0.1)
    other.load_state_dict(net.state_dict())
    assert bool(other.dp_active)


def test_score_matrix_chunked_equals_unchunked_and_explicit_pairs():
    net = _trained_bn_mnet()
    g = torch.Generator().manual_seed(1)
    q, gal = torch.randn(7, 6, generator=g), torch.randn(11, 6, generator=g)
    full = net.score_matrix(q, gal, pair_chunk=10**6)
    explicit = net(pair_features(q.repeat_interleave(11, 0), gal.repeat(7, 1))).view(7, 11)
    torch.testing.assert_close(full, explicit)
    for chunk in (1, 5, 11, 23):  # blocks smaller than a gallery row, rows, several rows
        torch.testing.assert_close(net.score_matrix(q, gal, pair_chunk=chunk), full)
    qi, gi = torch.tensor([0, 6, 3, 3]), torch.tensor([10, 0, 2, 2])
    torch.testing.assert_close(net.score_pairs(q, gal, qi, gi, pair_chunk=3), full[qi, gi])
    idx = torch.tensor([[3, 1, 9]] * 7) + torch.arange(7).view(7, 1) % 2
    for chunk in (1, 4, 100):
        torch.testing.assert_close(
            net.score_topk(q, gal, idx, pair_chunk=chunk), full.gather(1, idx)
        )
    # Scoring uses eval-mode semantics (running BN statistics, no DP) in any mode.
    net.train()
    net.set_dp_active(True)
    torch.testing.assert_close(net.score_matrix(q, gal, pair_chunk=5), full)


# ----------------------------------------------------------------------------- #
# Pair mining
# ----------------------------------------------------------------------------- #
PIDS = torch.tensor([0, 0, 1, 1, 2, 2])


def _pairs(ia, ib):
    return sorted(zip(ia.tolist(), ib.tolist()))


def test_mine_pairs_all():
    ia, ib, labels = mine_pairs(PIDS, torch.zeros(6, 6), "all")
    pos = _pairs(ia[labels == 1], ib[labels == 1])
    neg = _pairs(ia[labels == 0], ib[labels == 0])
    assert pos == [(0, 1), (2, 3), (4, 5)]
    assert len(neg) == 15 - 3 and all(PIDS[a] != PIDS[b] and a < b for a, b in neg)
    assert labels[:3].eq(1).all() and labels[3:].eq(0).all()  # positives first


def test_mine_pairs_hard_hand_computed():
    # Points on a line: 0:0.0 1:0.1 | 2:0.5 3:3.0 | 4:0.6 5:5.0
    x = torch.tensor([0.0, 0.1, 0.5, 3.0, 0.6, 5.0])
    dist = (x[:, None] - x[None, :]).abs()
    ia, ib, labels = mine_pairs(PIDS, dist, "hard", num_negatives=1)
    # Nearest other-identity sample: 0->2, 1->2, 2->4, 3->5 (|3-5| = 2 < |3-0.6|), 4->2, 5->3
    assert _pairs(ia[labels == 0], ib[labels == 0]) == [(0, 2), (1, 2), (2, 4), (3, 5)]
    ia2, ib2, labels2 = mine_pairs(PIDS, dist, "hard", num_negatives=2)
    # Second nearest: 0->4, 1->4, 2->1, 3->4, 4->1, 5->2
    expected = {(0, 2), (1, 2), (2, 4), (3, 5), (0, 4), (1, 4), (3, 4), (2, 5)}
    assert set(_pairs(ia2[labels2 == 0], ib2[labels2 == 0])) == expected
    assert _pairs(ia2[labels2 == 1], ib2[labels2 == 1]) == [(0, 1), (2, 3), (4, 5)]


def test_mine_pairs_random_and_errors():
    torch.manual_seed(0)
    pids = torch.arange(8).repeat_interleave(4)
    ia, ib, labels = mine_pairs(pids, torch.zeros(32, 32), "random", num_negatives=3)
    neg = _pairs(ia[labels == 0], ib[labels == 0])
    assert len(neg) == len(set(neg)) and 32 * 3 // 2 <= len(neg) <= 32 * 3
    assert all(pids[a] != pids[b] and a < b for a, b in neg)
    assert int((labels == 1).sum()) == 8 * 6
    with pytest.raises(ValueError, match="NEGATIVES"):
        mine_pairs(PIDS, torch.zeros(6, 6), "semi-hard")
    with pytest.raises(ValueError, match="NUM_NEGATIVES"):
        mine_pairs(PIDS, torch.zeros(6, 6), "hard", num_negatives=0)


def test_pair_identity_keys():
    a = torch.tensor([3, 1, 2, 2, 0])
    b = torch.tensor([1, 3, 2, 0, 2])
    k = pair_identity_keys(a, b)
    assert k[0] == k[1]  # {3, 1} == {1, 3}
    assert k[3] == k[4] and len({int(k[0]), int(k[2]), int(k[3])}) == 3
