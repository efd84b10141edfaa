"""Tests of the cross-entropy (label smoothing) and batch-hard triplet losses."""

import math

import pytest
import torch
import torch.nn.functional as F

from reid_plugins.config import get_cfg
from reid_plugins.modeling.losses import CrossEntropyLoss, TripletLoss, euclidean_dist

# ----------------------------------------------------------------------------- #
# Cross-entropy
# ----------------------------------------------------------------------------- #


def test_ce_label_smoothing_hand_computed():
    # Row 0: softmax = [1/4, 1/2, 1/4], target 1; row 1: uniform softmax, target 2.
    logits = torch.log(torch.tensor([[1.0, 2.0, 1.0], [1.0, 1.0, 1.0]]))
    targets = torch.tensor([1, 2])
    # eps = 0.3, K = 3: q0 = [0.1, 0.8, 0.1] -> -(0.1 ln 1/4 + 0.8 ln 1/2 + 0.1 ln 1/4)
    # = 1.2 ln 2; row 1 is ln 3 whatever q is. Mean, times weight 2.
    expected = 2.0 * (1.2 * math.log(2.0) + math.log(3.0)) / 2
    loss = CrossEntropyLoss(epsilon=0.3, weight=2.0)(logits, targets)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_ce_no_smoothing_equals_torch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 7, generator=g)
    targets = torch.tensor([0, 6, 3, 3, 1])
    ours = CrossEntropyLoss(epsilon=0.0)(logits, targets)
    torch.testing.assert_close(ours, F.cross_entropy(logits, targets))
    # With smoothing it matches torch's own label_smoothing definition.
    smooth = CrossEntropyLoss(epsilon=0.1)(logits, targets)
    torch.testing.assert_close(smooth, F.cross_entropy(logits, targets, label_smoothing=0.1))


def test_ce_gradient_and_errors():
    logits = torch.zeros(2, 3, requires_grad=True)
    CrossEntropyLoss(epsilon=0.0)(logits, torch.tensor([0, 1])).backward()
    # d/dz of -log softmax(z)_y at z = 0: (1/3 - onehot) / batch
    expected = (torch.full((2, 3), 1 / 3) - F.one_hot(torch.tensor([0, 1]), 3)) / 2
    torch.testing.assert_close(logits.grad, expected)
    with pytest.raises(ValueError, match="targets must be in"):
        CrossEntropyLoss()(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="EPSILON"):
        CrossEntropyLoss(epsilon=1.0)


def test_ce_from_config():
    cfg = get_cfg()
    cfg.MODEL.LOSSES.CE.EPSILON = 0.2
    cfg.MODEL.LOSSES.CE.WEIGHT = 0.5
    loss = CrossEntropyLoss.from_config(cfg)
    assert (loss.epsilon, loss.weight) == (0.2, 0.5)


# ----------------------------------------------------------------------------- #
# Triplet
# ----------------------------------------------------------------------------- #

# ids A A B B at (0,0) (3,0) (0,4) (1,0): d01=3 d02=4 d03=1 d12=5 d13=2 d23=sqrt(17)
_FEATS = [[0.0, 0.0], [3.0, 0.0], [0.0, 4.0], [1.0, 0.0]]
_IDS = [0, 0, 1, 1]
_S17 = math.sqrt(17.0)
# (hardest positive, hardest negative) per anchor
_HARD = [(3.0, 1.0), (3.0, 2.0), (_S17, 4.0), (_S17, 1.0)]


def test_euclidean_dist_values():
    d = euclidean_dist(torch.tensor(_FEATS), torch.tensor(_FEATS))
    expected = torch.tensor(
        [[0, 3, 4, 1], [3, 0, 5, 2], [4, 5, 0, _S17], [1, 2, _S17, 0]], dtype=torch.float32
    )
    torch.testing.assert_close(d, expected, atol=1e-5, rtol=1e-6)


def test_triplet_batch_hard_hand_computed():
    feats = torch.tensor(_FEATS, requires_grad=True)
    loss = TripletLoss(margin=0.3)(feats, torch.tensor(_IDS))
    expected = sum(max(p - n + 0.3, 0.0) for p, n in _HARD) / 4  # = (2*sqrt17 - 0.8) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert feats.grad is not None and torch.isfinite(feats.grad).all()
    assert feats.grad.abs().sum() > 0


def test_triplet_hinge_and_gradient_hand_computed():
    # 1-D points: A at 0 and 1, B at 10 and 2.5. Per anchor (d_p, d_n): (1, 2.5), (1, 1.5),
    # (7.5, 9), (7.5, 1.5) -> only anchor 3 is active: loss = (7.5 - 1.5 + 0.3) / 4.
    feats = torch.tensor([[0.0], [1.0], [10.0], [2.5]], requires_grad=True)
    loss = TripletLoss(margin=0.3)(feats, torch.tensor([0, 0, 1, 1]))
    assert loss.item() == pytest.approx(6.3 / 4, rel=1e-6)
    loss.backward()
    # d/dx of (|x2 - x3| - |x3 - x1|) / 4: x1 -> +1/4, x2 -> +1/4, x3 -> -2/4; x0 unused.
    torch.testing.assert_close(feats.grad, torch.tensor([[0.0], [0.25], [0.25], [-0.5]]))


def test_triplet_well_separated_batch_is_zero():
    feats = torch.tensor([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [11.0, 0.0]], requires_grad=True)
    loss = TripletLoss(margin=0.3)(feats, torch.tensor([0, 0, 1, 1]))
    assert loss.item() == 0.0  # every anchor: d_p = 1, d_n >= 9
    loss.backward()
    torch.testing.assert_close(feats.grad, torch.zeros_like(feats))


def test_triplet_soft_margin_hand_computed():
    loss = TripletLoss(margin=0.0)(torch.tensor(_FEATS), torch.tensor(_IDS))
    expected = sum(math.log1p(math.exp(p - n)) for p, n in _HARD) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss_neg = TripletLoss(margin=-1.0, weight=3.0)(torch.tensor(_FEATS), torch.tensor(_IDS))
    assert loss_neg.item() == pytest.approx(3 * expected, rel=1e-5)


def test_triplet_gradcheck_double():
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    ids = torch.tensor([0, 0, 1, 1, 2, 2])
    loss_fn = TripletLoss(margin=10.0)  # every anchor active -> differentiable everywhere
    assert torch.autograd.gradcheck(lambda f: loss_fn(f, ids), (feats,))


def test_triplet_identical_features_finite_gradient():
    feats = torch.tensor([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [0.0, 0.0]], requires_grad=True)
    loss = TripletLoss(margin=0.3)(feats, torch.tensor([0, 0, 1, 1]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(feats.grad).all()


def test_triplet_excludes_anchors_without_positive():
    # Sample 2 is the only one of its identity: excluded as an anchor (still a negative).
    feats = torch.tensor([[0.0, 0.0], [3.0, 0.0], [1.0, 0.0]])
    loss = TripletLoss(margin=0.3)(feats, torch.tensor([0, 0, 1]))
    # anchor 0: d_p = 3, d_n = 1 -> 2.3; anchor 1: d_p = 3, d_n = 2 -> 1.3
    assert loss.item() == pytest.approx((2.3 + 1.3) / 2, rel=1e-5)


@pytest.mark.parametrize("ids", [[0, 0, 0], [0, 1, 2]])
def test_triplet_no_valid_anchor_returns_connected_zero(ids):
    feats = torch.randn(3, 4, requires_grad=True)
    loss = TripletLoss(margin=0.3)(feats, torch.tensor(ids))
    assert loss.item() == 0.0 and loss.grad_fn is not None
    loss.backward()
    torch.testing.assert_close(feats.grad, torch.zeros_like(feats))


def test_triplet_norm_feat_is_scale_invariant():
    g = torch.Generator().manual_seed(2)
    feats = torch.randn(6, 5, generator=g)
    ids = torch.tensor([0, 0, 1, 1, 2, 2])
    scales = torch.tensor([[0.5], [2.0], [3.0], [1.0], [7.0], [0.1]])
    loss_fn = TripletLoss(margin=0.3, norm_feat=True)
    torch.testing.assert_close(loss_fn(feats, ids), loss_fn(feats * scales, ids))
    expected = TripletLoss(margin=0.3)(F.normalize(feats, dim=1), ids)
    torch.testing.assert_close(loss_fn(feats, ids), expected)


def test_triplet_from_config_and_errors():
    cfg = get_cfg()
    cfg.MODEL.LOSSES.TRIPLET.MARGIN = 0.5
    cfg.MODEL.LOSSES.TRIPLET.NORM_FEAT = True
    cfg.MODEL.LOSSES.TRIPLET.WEIGHT = 2.0
    loss = TripletLoss.from_config(cfg)
    assert (loss.margin, loss.norm_feat, loss.weight) == (0.5, True, 2.0)
    with pytest.raises(ValueError, match="targets must have shape"):
        loss(torch.zeros(3, 2), torch.tensor([0, 1]))
