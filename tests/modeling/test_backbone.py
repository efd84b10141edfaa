"""Tests of the ResNet / IBN-Net-a backbones (tiny widths, 64x32 inputs)."""

import pytest
import torch
import torchvision
from fvcore.nn import FlopCountAnalysis
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from reid_plugins.config import get_cfg
from reid_plugins.modeling.backbone import BACKBONE_REGISTRY, build_backbone
from reid_plugins.modeling.backbone.ibn import IBN, convert_frozen_batchnorm
from reid_plugins.modeling.backbone.resnet import (
    STAGE_NAMES,
    ResNet,
    load_pretrained,
    resnet_to_torchvision_key,
    torchvision_to_resnet_key,
)

H, W = 64, 32
ALL = STAGE_NAMES


def tiny(**kw):
    kw.setdefault("depth", 18)
    kw.setdefault("base_width", 8)
    return ResNet(**kw)


def assert_close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> None:
    """Max abs difference relative to the magnitude of ``b`` (float32 re-association noise)."""
    assert a.shape == b.shape
    err = (a - b).abs().max() / b.abs().max().clamp_min(1e-12)
    assert err < tol, f"relative error {err:.2e}"


def _randomize_norms(model: nn.Module, seed: int = 0) -> None:
    """Give every BN / IN non-trivial affine parameters and running statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


@pytest.mark.parametrize("depth,expansion", [(18, 1), (34, 1), (50, 4), (101, 4)])
@pytest.mark.parametrize("last_stride", [1, 2])
def test_output_shapes_and_strides(depth, expansion, last_stride):
    model = tiny(depth=depth, last_stride=last_stride, out_features=ALL).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, H, W))
    assert list(out) == list(ALL)
    res5_stride = 16 if last_stride == 1 else 32
    expected_strides = {"stem": 4, "res2": 4, "res3": 8, "res4": 16, "res5": res5_stride}
    expected_channels = {"stem": 8, "res2": 8 * expansion, "res3": 16 * expansion}
    expected_channels.update({"res4": 32 * expansion, "res5": 64 * expansion})
    shapes = model.output_shape()
    for name, feat in out.items():
        stride = expected_strides[name]
        assert feat.shape == (2, expected_channels[name], H // stride, W // stride)
        assert shapes[name].channels == feat.shape[1] == expected_channels[name]
        assert shapes[name].stride == expected_strides[name] == H // feat.shape[2]
    n_blocks = {18: 8, 34: 16, 50: 16, 101: 33}[depth]
    assert sum(len(getattr(model, n)) for n in ALL[1:]) == n_blocks


def test_out_features_subset_and_bad_args():
    model = tiny(out_features=("res3",))
    out = model(torch.randn(1, 3, H, W))
    assert list(out) == ["res3"] and list(model.output_shape()) == ["res3"]
    for kw, key in [
        ({"depth": 42}, "DEPTH"),
        ({"last_stride": 3}, "LAST_STRIDE"),
        ({"norm": "GN"}, "NORM"),
        ({"freeze_at": 6}, "FREEZE_AT"),
        ({"out_features": ("res6",)}, "OUT_FEATURES"),
    ]:
        with pytest.raises(ValueError, match=key):
            tiny(**kw)


def test_ibn_structure_and_stage_placement():
    model = tiny(depth=50, with_ibn=True)
    for name in ("res2", "res3", "res4"):
        for block in getattr(model, name):
            assert isinstance(block.bn1, IBN)
            planes = block.conv1.out_channels
            assert isinstance(block.bn1.IN, nn.InstanceNorm2d) and block.bn1.IN.affine
            assert block.bn1.IN.num_features == planes // 2
            assert isinstance(block.bn1.BN, nn.BatchNorm2d)
            assert block.bn1.BN.num_features == planes - planes // 2
            assert isinstance(block.bn2, nn.BatchNorm2d) and isinstance(block.bn3, nn.BatchNorm2d)
    for block in model.res5:
        assert isinstance(block.bn1, nn.BatchNorm2d)
    assert not any(isinstance(m, IBN) for m in tiny(depth=50).modules())
    keys = model.state_dict().keys()
    assert "res2.0.bn1.IN.weight" in keys and "res4.5.bn1.BN.running_var" in keys


def test_ibn_forward_instance_normalises_first_half():
    model = tiny(depth=50, with_ibn=True).train()
    ibn = model.res3[1].bn1
    captured = {}
    ibn.register_forward_hook(
        lambda m, i, o: captured.update(inp=i[0].detach().clone(), out=o.detach().clone())
    )
    model(torch.randn(4, 3, H, W) * 3 + 1)
    inp, out, half = captured["inp"], captured["out"], ibn.half
    first, second = out[:, :half], out[:, half:]
    # IN half: per-sample, per-channel mean 0 / variance 1 (affine is identity at init).
    assert torch.allclose(first.mean(dim=(2, 3)), torch.zeros(4, half), atol=1e-4)
    assert torch.allclose(first.var(dim=(2, 3), unbiased=False), torch.ones(4, half), atol=1e-2)
    # BN half: normalised over the batch, not per sample.
    assert torch.allclose(second.mean(dim=(0, 2, 3)), torch.zeros(second.shape[1]), atol=1e-4)
    assert second.mean(dim=(2, 3)).abs().max() > 0.05
    expected = nn.functional.batch_norm(inp[:, half:], None, None, training=True)
    assert torch.allclose(second, expected, atol=1e-4)


@pytest.mark.parametrize("freeze_at", [0, 1, 3, 5])
def test_freeze_at(freeze_at):
    torch.manual_seed(0)
    model = tiny(depth=18, with_ibn=True, freeze_at=freeze_at).train()
    frozen = set(ALL[:freeze_at])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, H, W, requires_grad=True)
    model(x)["res5"].square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # frozen stages still pass gradients
    after = model.state_dict()
    for name in ALL:
        stage = getattr(model, name)
        params = list(stage.parameters())
        bns = [m for m in stage.modules() if isinstance(m, nn.BatchNorm2d)]
        stats_changed = [
            not torch.equal(before[k], after[k])
            for k in after
            if k.startswith(name + ".") and k.endswith("running_mean")
        ]
        assert stats_changed
        if name in frozen:
            assert all(not p.requires_grad and p.grad is None for p in params)
            assert not bns and any(isinstance(m, FrozenBatchNorm2d) for m in stage.modules())
            assert not any(stats_changed)
        else:
            assert params and all(p.requires_grad and p.grad is not None for p in params)
            assert bns and all(stats_changed)


def test_convert_frozen_batchnorm_keeps_eval_output():
    bn = nn.BatchNorm2d(6)
    _randomize_norms(bn)
    x = torch.randn(2, 6, 4, 4)
    frozen = convert_frozen_batchnorm(nn.Sequential(bn))
    assert isinstance(frozen[0], FrozenBatchNorm2d)
    assert torch.allclose(frozen.train()(x), bn.eval()(x), atol=1e-6)


def test_forward_stages_split_equals_full_forward():
    model = tiny(depth=50, with_ibn=True, last_stride=2, out_features=("res3", "res5")).eval()
    x = torch.randn(2, 3, H, W)
    x_copy = x.clone()
    with torch.no_grad():
        full = model(x)
        part1 = model.forward_stages(x, start="stem", end="res3")
        part2 = model.forward_stages(part1, start="res4", end="res5")
    assert torch.equal(x, x_copy)
    assert torch.allclose(part1, full["res3"]) and torch.allclose(part2, full["res5"])
    assert model.stage_shape("res3").channels == part1.shape[1] == 64
    with pytest.raises(ValueError, match="after"):
        model.forward_stages(x, start="res4", end="res3")
    with pytest.raises(KeyError, match="res9"):
        model.forward_stages(x, start="stem", end="res9")


@pytest.mark.parametrize(
    "ctor,depth", [(torchvision.models.resnet18, 18), (torchvision.models.resnet50, 50)]
)
def test_load_torchvision_state_dict_matches_torchvision(tmp_path, ctor, depth):
    torch.manual_seed(0)
    tv = ctor()  # random init, standard width
    _randomize_norms(tv)
    path = tmp_path / "resnet.pth"
    torch.save(tv.state_dict(), path)
    ours = ResNet(depth=depth, last_stride=2)
    ignored = load_pretrained(ours, str(path))
    assert ignored == ["fc.bias", "fc.weight"]
    x = torch.randn(2, 3, H, W)
    trunk = nn.Sequential(*list(tv.children())[:-2]).eval()
    with torch.no_grad():
        assert_close(ours.eval()(x)["res5"], trunk(x))


def test_load_wrapped_prefixed_ibn_checkpoint(tmp_path):
    torch.manual_seed(0)
    src = tiny(depth=50, with_ibn=True)
    _randomize_norms(src)
    official = {resnet_to_torchvision_key(k): v for k, v in src.state_dict().items()}
    assert "layer1.0.bn1.IN.weight" in official and "layer3.0.bn1.BN.running_mean" in official
    official["fc.weight"] = torch.randn(10, 256)
    wrapped = {"state_dict": {"module." + k: v for k, v in official.items()}, "epoch": 3}
    torch.save(wrapped, tmp_path / "ibn.pth")
    torch.save({"model": official}, tmp_path / "ibn_model.pth")
    x = torch.randn(2, 3, H, W)
    for name in ("ibn.pth", "ibn_model.pth"):
        dst = tiny(depth=50, with_ibn=True, freeze_at=2)  # frozen BNs load too
        load_pretrained(dst, str(tmp_path / name))
        with torch.no_grad():
            assert_close(dst.eval()(x)["res5"], src.eval()(x)["res5"])


def test_key_mapping_roundtrip():
    assert torchvision_to_resnet_key("conv1.weight") == "stem.conv1.weight"
    assert torchvision_to_resnet_key("layer4.2.downsample.1.bias") == "res5.2.downsample.1.bias"
    for k in tiny(depth=50, with_ibn=True).state_dict():
        assert torchvision_to_resnet_key(resnet_to_torchvision_key(k)) == k


def test_missing_file_error(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="MODEL.BACKBONE.PRETRAIN_PATH") as e:
        load_pretrained(tiny(), str(path))
    assert str(path) in str(e.value)


def test_mismatching_keys_error(tmp_path):
    state = {resnet_to_torchvision_key(k): v for k, v in tiny(depth=50).state_dict().items()}
    torch.save(state, tmp_path / "plain.pth")
    # Plain checkpoint into an IBN model: missing IN/BN keys, unexpected bn1 keys.
    with pytest.raises(ValueError) as e:
        load_pretrained(tiny(depth=50, with_ibn=True), str(tmp_path / "plain.pth"))
    msg = str(e.value)
    assert "plain.pth" in msg and "layer1.0.bn1.IN.weight" in msg
    assert "unexpected" in msg and "layer1.0.bn1.weight" in msg and "WITH_IBN=False" in msg
    # Wrong width: shape mismatch listed with shapes.
    with pytest.raises(ValueError, match=r"shape mismatch.*conv1\.weight"):
        load_pretrained(tiny(depth=50, base_width=16), str(tmp_path / "plain.pth"))
    # A dropped key is reported as missing.
    del state["layer2.0.conv2.weight"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"missing in file \(1\): layer2\.0\.conv2\.weight"):
        load_pretrained(tiny(depth=50), str(tmp_path / "partial.pth"))


def test_build_backbone_from_config(tmp_path):
    cfg = get_cfg()
    assert cfg.MODEL.BACKBONE.NAME in BACKBONE_REGISTRY
    src = tiny(depth=34)
    state = {resnet_to_torchvision_key(k): v for k, v in src.state_dict().items()}
    torch.save(state, tmp_path / "r34.pth")
    overrides = {
        "DEPTH": 34,
        "BASE_WIDTH": 8,
        "FREEZE_AT": 2,
        "NORM": "FrozenBN",
        "OUT_FEATURES": ["res4", "res5"],
        "PRETRAIN_PATH": str(tmp_path / "r34.pth"),
    }
    cfg.merge_from_list([x for k, v in overrides.items() for x in ("MODEL.BACKBONE." + k, v)])
    model = build_backbone(cfg)
    assert isinstance(model, ResNet) and model.depth == 34 and model.freeze_at == 2
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert not any(p.requires_grad for p in model.res2.parameters())
    assert all(p.requires_grad for p in model.res3.parameters())
    x = torch.randn(1, 3, H, W)
    with torch.no_grad():
        out = model(x)
        assert_close(out["res5"], src.eval()(x)["res5"])
    assert {k: (s.channels, s.stride) for k, s in model.output_shape().items()} == {
        "res4": (32, 16),
        "res5": (64, 16),
    }
    cfg.MODEL.BACKBONE.NORM = "SyncBN"
    cfg.MODEL.BACKBONE.PRETRAIN_PATH = ""
    assert any(isinstance(m, nn.SyncBatchNorm) for m in build_backbone(cfg).modules())
    cfg.MODEL.BACKBONE.PRETRAIN_PATH = str(tmp_path / "missing.pth")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_backbone(cfg)


def test_part1_flops_resnet50_256x128():
    """Spec (TDN, Table VII notes): Part-1 = stem..res3 of ResNet-50 at 256x128 = 2.39 GFLOPs."""
    model = ResNet(depth=50, last_stride=2, out_features=("res3",)).eval()
    flops = FlopCountAnalysis(model, torch.zeros(1, 3, 256, 128))
    flops.unsupported_ops_warnings(False)
    flops.uncalled_modules_warnings(False)
    gflops = 2 * flops.total() / 1e9  # fvcore counts one MAC as one flop
    assert abs(gflops - 2.39) / 2.39 < 0.05, gflops
