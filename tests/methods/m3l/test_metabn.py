"""MetaBN (M3L Eq. 5-7): plain / meta-train / meta-test modes on small tensors."""

import pytest
import torch
from torch import nn

from reid_plugins.config import add_all_configs, get_cfg
from reid_plugins.methods.m3l import MetaBatchNorm1d, MetaBNHead
from reid_plugins.modeling.heads import GhostBatchNorm1d
from reid_plugins.modeling.heads.embedding_head import build_reid_head

EPS = 1e-5


def _bn(split=0, **kw):
    torch.manual_seed(0)
    bn = MetaBatchNorm1d(num_features=3, split=split, **kw)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.5, 0.5, 2.0]))
        bn.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    return bn


def _own_stats_bn(x, weight, bias):
    """Eq. 7 by hand: biased batch variance, shared affine."""
    mean = x.mean(0)
    var = ((x - mean) ** 2).mean(0)
    return (x - mean) / torch.sqrt(var + EPS) * weight + bias


def test_plain_mode_and_inference_equal_batchnorm():
    bn = _bn()
    ref = nn.BatchNorm1d(3)
    ref.load_state_dict(bn.state_dict())
    x = torch.randn(6, 3) * 2 + 1
    torch.testing.assert_close(bn(x), ref(x))
    torch.testing.assert_close(bn.running_mean, ref.running_mean)
    torch.testing.assert_close(bn.running_var, ref.running_var)
    bn.eval(), ref.eval()
    y = torch.randn(4, 3)
    torch.testing.assert_close(bn(y), ref(y))
    # eval ignores the meta-test mode entirely (inference = plain BN with running statistics)
    bn.set_mode("meta_train")
    bn.train(), ref.train()
    bn(x), ref(x)
    bn.eval(), ref.eval()
    bn.set_mode("meta_test")
    torch.testing.assert_close(bn(y), ref(y))


def test_meta_train_saves_per_call_statistics_and_normalises_plainly():
    bn = _bn()
    ref = nn.BatchNorm1d(3)
    ref.load_state_dict(bn.state_dict())
    bn.set_mode("meta_train")
    a, b = torch.randn(5, 3), torch.randn(4, 3) * 3 - 2
    torch.testing.assert_close(bn(a), ref(a))
    torch.testing.assert_close(bn(b), ref(b))
    assert len(bn.saved_stats) == 2  # one entry per meta-train domain (forward call)
    for saved, x in zip(bn.saved_stats, (a, b)):
        ((mean, var),) = saved
        torch.testing.assert_close(mean, x.mean(0))
        torch.testing.assert_close(var, x.var(0, unbiased=False))
        assert not mean.requires_grad and not var.requires_grad
    bn.set_mode("meta_train")  # a new meta-train pass forgets the old statistics
    assert bn.saved_stats == []


def test_meta_test_mix_equations_with_fixed_lambda_and_z():
    lam = 0.3
    zs = {}
    seen = []

    def z_sampler(mean, scale, n):
        seen.append((mean.clone(), scale.clone(), n))
        g = torch.Generator().manual_seed(len(seen))
        zs[len(seen)] = torch.randn(n, mean.shape[0], generator=g)
        return zs[len(seen)]

    # the paper's reading: sigma = std, one lambda per mix (the lambda draws are fixed here)
    bn = _bn(lam_sampler=lambda: lam, z_sampler=z_sampler, sample_scale="std")
    d0, d1 = torch.randn(6, 3) + 2, torch.randn(6, 3) * 0.5 - 1
    bn.set_mode("meta_train")
    bn(d0), bn(d1)
    bn.set_mode("meta_test")
    rm, rv = bn.running_mean.clone(), bn.running_var.clone()
    f_t = torch.randn(4, 3, requires_grad=True)
    out = bn(f_t)
    assert out.shape == (2, 4, 3)  # K = 2 saved domains
    for k, d in enumerate((d0, d1)):
        mean, scale, n = seen[k]
        assert n == 4
        torch.testing.assert_close(mean, d.mean(0))
        torch.testing.assert_close(scale, d.var(0, unbiased=False).sqrt())  # sigma = std
        mixed = lam * f_t + (1 - lam) * zs[k + 1]  # Eq. 6
        expected = _own_stats_bn(mixed, bn.weight, bn.bias)  # Eq. 7
        torch.testing.assert_close(out[k], expected)
    # running statistics untouched by the meta-test pass; gradients reach F_T and the affine
    torch.testing.assert_close(bn.running_mean, rm)
    torch.testing.assert_close(bn.running_var, rv)
    (out * torch.randn_like(out)).sum().backward()
    assert f_t.grad.abs().sum() > 0 and bn.weight.grad.abs().sum() > 0


def test_sample_scale_var_mode_uses_variance_as_scale():
    seen = []
    bn = _bn(
        sample_scale="var",
        lam_sampler=lambda: 0.5,
        z_sampler=lambda m, s, n: seen.append(s) or torch.zeros(n, 3),
    )
    d = torch.randn(6, 3) * 3
    bn.set_mode("meta_train")
    bn(d)
    bn.set_mode("meta_test")
    bn(torch.randn(4, 3))
    torch.testing.assert_close(seen[0], d.var(0, unbiased=False))
    with pytest.raises(ValueError, match="METABN_SAMPLE_SCALE"):
        MetaBatchNorm1d(num_features=3, sample_scale="bad")
    with pytest.raises(ValueError, match="METABN_MIX_BETA"):
        MetaBatchNorm1d(num_features=3, mix_beta=[1.0, 0.0])


def test_default_samplers_follow_the_distributions():
    torch.manual_seed(0)
    bn = MetaBatchNorm1d(num_features=2)  # default = authors: the variance is the scale
    assert bn.sample_scale == "var" and bn.lambda_mode == "shared"
    mean, var = torch.tensor([1.0, -2.0]), torch.tensor([4.0, 0.25])
    z = bn.sample_z(mean, var, 20000)  # s.e. of the mean: 4 / sqrt(20000) = 0.028
    torch.testing.assert_close(z.mean(0), mean, atol=0.12, rtol=0)
    torch.testing.assert_close(z.std(0), var, atol=0.1, rtol=0)
    z = MetaBatchNorm1d(num_features=2, sample_scale="std").sample_z(mean, var, 20000)
    torch.testing.assert_close(z.std(0), var.sqrt(), atol=0.05, rtol=0)
    lams = torch.tensor([bn.sample_lambda() for _ in range(400)])
    assert 0 <= lams.min() and lams.max() <= 1
    assert abs(lams.mean() - 0.5) < 0.06 and abs(lams.var() - 1 / 12) < 0.02  # Beta(1, 1)


def test_ghost_split_groups_save_and_normalise_separately():
    bn = _bn(split=2, lam_sampler=lambda: 0.6, z_sampler=lambda m, s, n: m.expand(n, -1) + s)
    ghost = GhostBatchNorm1d(3, split=2)
    ghost.load_state_dict(bn.state_dict())
    x = torch.randn(4, 3)
    torch.testing.assert_close(bn(x), ghost(x))  # plain mode = GhostBatchNorm1d
    bn.set_mode("meta_train")
    d = torch.randn(4, 3)
    bn(d)
    assert len(bn.saved_stats[0]) == 2  # one (mean, var) per ghost group
    torch.testing.assert_close(bn.saved_stats[0][1][0], d[2:].mean(0))
    bn.set_mode("meta_test")
    f_t = torch.randn(4, 3)
    out = bn(f_t)[0]
    for g in range(2):
        mean, var = bn.saved_stats[0][g]
        z = mean.expand(2, -1) + var.sqrt()
        expected = _own_stats_bn(0.6 * f_t[2 * g : 2 * g + 2] + 0.4 * z, bn.weight, bn.bias)
        torch.testing.assert_close(out[2 * g : 2 * g + 2], expected)


def test_meta_test_without_statistics_raises():
    bn = _bn()
    bn.set_mode("meta_test")
    with pytest.raises(RuntimeError, match="meta-train"):
        bn(torch.randn(4, 3))
    with pytest.raises(ValueError, match="mode"):
        bn.set_mode("nope")


def test_metabn_head_from_config():
    cfg = add_all_configs(get_cfg())
    cfg.MODEL.HEADS.NAME = "MetaBNHead"
    cfg.MODEL.HEADS.BN_SPLIT = 3
    cfg.MODEL.HEADS.CLS_LAYER = "none"
    head = build_reid_head(cfg, feat_dim=8, num_classes=0)  # defaults = the authors' code
    assert isinstance(head, MetaBNHead) and isinstance(head.bottleneck, MetaBatchNorm1d)
    assert head.bottleneck.split == 3 and head.bottleneck.sample_scale == "var"
    assert head.bottleneck.lambda_mode == "shared"
    assert head.bottleneck.bias.requires_grad and head.bottleneck.weight.requires_grad
    cfg.MODEL.M3L.METABN_SAMPLE_SCALE = "std"
    cfg.MODEL.M3L.METABN_LAMBDA = "per_domain"
    cfg.MODEL.M3L.NECK_BIAS_TRAINABLE = False  # the BNNeck's frozen bias
    head = build_reid_head(cfg, feat_dim=8, num_classes=0)
    assert head.bottleneck.sample_scale == "std" and head.bottleneck.lambda_mode == "per_domain"
    assert not head.bottleneck.bias.requires_grad and head.bottleneck.weight.requires_grad
    out = head(torch.randn(5, 8, 2, 1))
    assert out["pre_bn"].shape == (5, 8) and out["post_bn"].shape == (5, 8)
    cfg.MODEL.HEADS.NECK = "none"
    with pytest.raises(ValueError, match="NECK"):
        build_reid_head(cfg, feat_dim=8, num_classes=0)


def test_lambda_shared_by_all_mixes_or_drawn_per_domain():
    """METABN_LAMBDA: "shared" (authors) draws one lambda per meta-test pass and uses it for
    every mix; "per_domain" draws one per mix. Same z for both: only the mixes' lambdas
    differ, and each output equals Eq. 6-7 with the lambda it was given."""
    z = torch.randn(4, 3, generator=torch.Generator().manual_seed(5))
    d0, d1, f_t = torch.randn(6, 3) + 2, torch.randn(6, 3) - 1, torch.randn(4, 3)
    outs = {}
    for mode in ("shared", "per_domain"):
        draws = iter([0.2, 0.7, 0.9])
        used = []
        bn = _bn(
            lambda_mode=mode,
            lam_sampler=lambda: used.append(next(draws)) or used[-1],
            z_sampler=lambda m, s, n: z[:n],
        )
        bn.set_mode("meta_train")
        bn(d0), bn(d1)
        bn.set_mode("meta_test")
        outs[mode] = bn(f_t)
        lams = [0.2, 0.2] if mode == "shared" else [0.2, 0.7]
        assert used == ([0.2] if mode == "shared" else [0.2, 0.7])
        for k, lam in enumerate(lams):
            expected = _own_stats_bn(lam * f_t + (1 - lam) * z, bn.weight, bn.bias)
            torch.testing.assert_close(outs[mode][k], expected)
    torch.testing.assert_close(outs["shared"][0], outs["per_domain"][0])
    assert not torch.allclose(outs["shared"][1], outs["per_domain"][1])
    with pytest.raises(ValueError, match="METABN_LAMBDA"):
        MetaBatchNorm1d(num_features=3, lambda_mode="bad")
