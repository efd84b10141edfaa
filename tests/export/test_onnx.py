"""ONNX export: the ReIDBaseline wrapper equals the model's eval path, onnxruntime matches
PyTorch (< 1e-4) with a dynamic batch axis, the generic crop-wrapper hook, the registry,
the verification catching a mismatch, and tools/export_onnx.py end to end."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from reid_plugins.checkpoint import Checkpointer
from reid_plugins.config import get_cfg
from reid_plugins.export import (
    EXPORT_WRAPPERS,
    CropFeatureWrapper,
    ReIDBaselineExportWrapper,
    build_export_wrapper,
    export_onnx,
    register_export_wrapper,
    verify_onnx,
)
from reid_plugins.export.onnx import OnnxVerificationError
from reid_plugins.modeling import build_model
from tests._testing import load_tool

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

TINY_YAML = """
MODEL:
  DEVICE: cpu
  BACKBONE:
    DEPTH: 18
    BASE_WIDTH: 8
  HEADS:
    NUM_CLASSES: 4
INPUT:
  SIZE_TEST: [32, 16]
"""


def tiny_model(ibn=False, pool="avg", depth=18, seed=0):
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.DEPTH = depth
    cfg.MODEL.BACKBONE.BASE_WIDTH = 8
    cfg.MODEL.BACKBONE.WITH_IBN = ibn
    cfg.MODEL.HEADS.POOL = pool
    cfg.MODEL.HEADS.NUM_CLASSES = 4
    torch.manual_seed(seed)
    model = build_model(cfg)
    # Non-trivial BN statistics, so that eval-mode normalisation matters.
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def crops(n, seed=0):
    return torch.rand(n, 3, 32, 16, generator=torch.Generator().manual_seed(seed)) * 255


@pytest.mark.parametrize("ibn,pool,depth", [(False, "avg", 18), (True, "gem", 18)])
def test_reid_baseline_export_matches_pytorch(tmp_path, ibn, pool, depth):
    model = tiny_model(ibn, pool, depth)
    wrapper = build_export_wrapper(model)
    assert isinstance(wrapper, ReIDBaselineExportWrapper)
    x = crops(3)
    with torch.no_grad():
        ref = torch.stack([o["feature"] for o in model([{"image": im} for im in x])])
        torch.testing.assert_close(wrapper(x), ref, rtol=0, atol=0)
    path = export_onnx(wrapper, str(tmp_path / "m.onnx"), input_size=(32, 16), batch_size=2)
    proto = onnx.load(path)
    dim0 = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param == "batch"  # dynamic batch axis
    meta = {p.key: p.value for p in proto.metadata_props}
    assert "0-255" in meta["input"]
    # Batches of 3 and 1 on a graph traced with a batch of 2.
    diff, out = verify_onnx(wrapper, path, inputs=x, atol=1e-4)
    assert diff < 1e-4 and out.shape == (3, ref.shape[1])
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert verify_onnx(wrapper, path, batch_size=1)[1].shape[0] == 1


def test_verification_detects_a_mismatch(tmp_path):
    model = tiny_model()
    wrapper = build_export_wrapper(model)
    path = export_onnx(wrapper, str(tmp_path / "m.onnx"), input_size=(32, 16))
    with torch.no_grad():
        model.head.bottleneck.running_mean.add_(3.0)  # PyTorch now differs from the file
    with pytest.raises(OnnxVerificationError, match="max"):
        verify_onnx(wrapper, path, batch_size=2)


class CropModel(nn.Module):
    """A person-search-like model exposing its re-ID head on crops."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6).eval()
        self.fc = nn.Linear(6, 5)

    def reid_head_on_crops(self, x):
        f = self.bn(self.conv(x / 255.0)).relu().mean((2, 3))
        return {"features": self.fc(f), "extra": f}


def test_generic_crop_wrapper_export(tmp_path):
    model = CropModel().eval()
    wrapper = build_export_wrapper(model)
    assert isinstance(wrapper, CropFeatureWrapper) and wrapper.method == "reid_head_on_crops"
    path = export_onnx(wrapper, str(tmp_path / "c.onnx"), input_size=(32, 16))
    diff, out = verify_onnx(wrapper, path, batch_size=4)
    assert diff < 1e-4 and out.shape == (4, 5)
    # Explicit method name + normalisation in the graph.
    norm = CropFeatureWrapper(model, "reid_head_on_crops", output_key="extra", normalize=True)
    path2 = export_onnx(norm, str(tmp_path / "n.onnx"), input_size=(32, 16))
    out2 = verify_onnx(norm, path2, batch_size=2)[1]
    np.testing.assert_allclose(np.linalg.norm(out2, axis=1), 1.0, atol=1e-5)
    with pytest.raises(TypeError, match="reid_head_on_crops"):
        build_export_wrapper(nn.Linear(2, 2))
    with pytest.raises(AttributeError, match="no method 'missing'"):
        build_export_wrapper(model, method="missing")


def test_registered_factory_is_found_along_the_mro():
    class Base(nn.Module):
        pass

    class Derived(Base):
        pass

    made = []

    @register_export_wrapper(Base)
    def factory(model):
        made.append(model)
        return nn.Identity()

    try:
        m = Derived()
        assert isinstance(build_export_wrapper(m), nn.Identity) and made == [m]
    finally:
        EXPORT_WRAPPERS.pop(Base)


def _load_tool():
    return load_tool("export_onnx")


def test_export_tool_end_to_end(tmp_path):
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(TINY_YAML)
    model = tiny_model()
    Checkpointer(model, str(tmp_path), save_to_disk=True).save("model")
    out = str(tmp_path / "exp" / "model.onnx")
    tool = _load_tool()
    summary = tool.main(
        [
            "--config-file",
            str(cfg_file),
            "--output",
            out,
            "MODEL.WEIGHTS",
            str(tmp_path / "model.pth"),
        ]
    )
    assert summary["wrapper"] == "ReIDBaselineExportWrapper"
    assert summary["max_abs_diff"] < 1e-4 and summary["output"]["dim"] == 64
    with open(out + ".json") as f:
        assert json.load(f)["input"]["shape"] == ["batch", 3, 32, 16]
    # The exported file reproduces the *loaded* weights (not a fresh random init).
    sess = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    x = crops(2, seed=5)
    with torch.no_grad():
        ref = torch.stack([o["feature"] for o in model([{"image": im} for im in x])]).numpy()
    np.testing.assert_allclose(sess.run(None, {"images": x.numpy()})[0], ref, atol=1e-4)
    with pytest.raises(SystemExit, match="MODEL.WEIGHTS"):
        tool.main(["--config-file", str(cfg_file), "--output", out])
