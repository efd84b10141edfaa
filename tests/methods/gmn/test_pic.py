"""GMN's losses: the Pair-Identity Centre loss (L_pic) and the pair BCE (L_gmn)."""

import math

import pytest
import torch

from reid_plugins.config import add_all_configs, get_cfg
from reid_plugins.methods.gmn import PairBCELoss, PairIdentityCenterLoss

# ----------------------------------------------------------------------------- #
# PIC
# ----------------------------------------------------------------------------- #
# Groups: key 7 -> (0,0), (2,0), (1,3): centre (1,1), squared distances 2, 2, 4.
#         key 3 -> (0,0), (0,2): centre (0,1), squared distances 1, 1.
#         key 5 -> a single pair: no centre to agree with, excluded.
EMB = torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, 3.0], [0.0, 0.0], [0.0, 2.0], [9.0, 9.0]])
KEYS = torch.tensor([7, 7, 7, 3, 3, 5])


def test_pic_hand_computed():
    loss = PairIdentityCenterLoss(weight=0.5, norm_feat=False)(EMB, KEYS)
    # (2 + 2 + 4 + 1 + 1) / 5 members, times lambda = 0.5
    assert loss.item() == pytest.approx(0.5 * 10.0 / 5)


def test_pic_gradient_points_to_the_centre():
    emb = EMB.clone().requires_grad_(True)
    PairIdentityCenterLoss(weight=0.5, norm_feat=False)(emb, KEYS).backward()
    centres = torch.tensor([[1.0, 1.0]] * 3 + [[0.0, 1.0]] * 2)
    expected = 2 * (EMB[:5] - centres) * 0.5 / 5
    torch.testing.assert_close(emb.grad[:5], expected)
    torch.testing.assert_close(emb.grad[5], torch.zeros(2))  # singleton: no gradient


def test_pic_normalised_is_scale_invariant_and_zero_for_identical_pairs():
    g = torch.Generator().manual_seed(0)
    emb = torch.rand(8, 4, generator=g)
    keys = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3])
    pic = PairIdentityCenterLoss(weight=1.0, norm_feat=True)
    torch.testing.assert_close(pic(emb, keys), pic(3.0 * emb, keys))
    same = emb[:1].repeat(4, 1) * torch.tensor([[1.0], [2.0], [0.5], [4.0]])
    assert pic(same, torch.zeros(4, dtype=torch.long)).item() == pytest.approx(0.0, abs=1e-7)
    # Differs from the unnormalised value on the same input.
    assert not torch.allclose(
        pic(emb, keys), PairIdentityCenterLoss(norm_feat=False, weight=1.0)(emb, keys)
    )


def test_pic_no_group_is_a_connected_zero_and_errors():
    emb = torch.rand(3, 2, requires_grad=True)
    loss = PairIdentityCenterLoss()(emb, torch.tensor([0, 1, 2]))
    assert loss.item() == 0.0
    loss.backward()
    torch.testing.assert_close(emb.grad, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="emb"):
        PairIdentityCenterLoss()(torch.rand(3, 2), torch.tensor([0, 1]))


# ----------------------------------------------------------------------------- #
# Pair BCE
# ----------------------------------------------------------------------------- #
LOGITS = torch.tensor([0.0, math.log(3.0), -math.log(3.0)])
LABELS = torch.tensor([1.0, 1.0, 0.0])
# BCE: (0, 1) -> ln 2; (ln 3, 1) -> -ln(3/4); (-ln 3, 0) -> -ln(1 - 1/4) = ln(4/3).


def test_pair_bce_hand_computed():
    ln2, ln43 = math.log(2.0), math.log(4.0 / 3.0)
    balanced = PairBCELoss(weight=2.0, balanced=True)(LOGITS, LABELS)
    assert balanced.item() == pytest.approx(2.0 * 0.5 * ((ln2 + ln43) / 2 + ln43), rel=1e-6)
    plain = PairBCELoss(weight=1.0, balanced=False)(LOGITS, LABELS)
    assert plain.item() == pytest.approx((ln2 + 2 * ln43) / 3, rel=1e-6)
    # Only positives: the balanced loss is their mean.
    only_pos = PairBCELoss(balanced=True)(LOGITS[:2], LABELS[:2])
    assert only_pos.item() == pytest.approx((ln2 + ln43) / 2, rel=1e-6)


def test_pair_bce_empty_and_errors_and_config():
    empty = torch.zeros(0, requires_grad=True)
    loss = PairBCELoss()(empty, torch.zeros(0))
    loss.backward()
    assert loss.item() == 0.0
    with pytest.raises(ValueError, match="logits and labels"):
        PairBCELoss()(LOGITS, LABELS[:2])
    cfg = add_all_configs(get_cfg())
    cfg.MODEL.GMN.LOSSES.BCE.WEIGHT = 0.7
    cfg.MODEL.GMN.LOSSES.BCE.BALANCED = False
    cfg.MODEL.GMN.LOSSES.PIC.WEIGHT = 0.25
    bce, pic = PairBCELoss.from_config(cfg), PairIdentityCenterLoss.from_config(cfg)
    assert (bce.weight, bce.balanced, pic.weight, pic.norm_feat) == (0.7, False, 0.25, True)
