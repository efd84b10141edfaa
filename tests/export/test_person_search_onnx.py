"""ONNX export of the person-search models: TDN's detector + Part-1 graph and re-ID graph
(glued by ``run_tdn_onnx``), OIM*'s search and query graphs; onnxruntime equals PyTorch's
``inference`` / ``extract_query`` on images other than the one traced (other numbers of
detections: the box axis is dynamic); a changed model is caught; tools/export_onnx.py end to
end on a TDN checkpoint."""

import json

import numpy as np
import pytest
import torch

import reid_plugins.methods  # noqa: F401
from reid_plugins.checkpoint import Checkpointer
from reid_plugins.export.person_search import export_person_search, verify_person_search
from reid_plugins.modeling import build_model
from tests._person_search_helpers import tiny_search_cfg
from tests._testing import load_tool

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("single_thread")

SIZE = (60, 90)  # not a multiple of SIZE_DIVISIBILITY: the graph pads like the model


def _model(arch):
    cfg = tiny_search_cfg(arch)
    cfg.MODEL.PERSON_SEARCH.ROI_HEADS.POOLER_RESOLUTION = [4, 2]
    if arch == "TDN":
        cfg.MODEL.BACKBONE.WITH_IBN = True
        cfg.MODEL.TDN.KTB.INPUT_SIZE = [32, 16]
        cfg.MODEL.TDN.BOX_HEAD.FC_DIM = 32
    torch.manual_seed(0)
    return cfg, build_model(cfg).eval()


@pytest.mark.parametrize("arch", ["TDN", "OIMSearch"])
def test_person_search_onnx_matches_pytorch(tmp_path, arch):
    _, model = _model(arch)
    paths = export_person_search(model, str(tmp_path / "m.onnx"), image_size=SIZE)
    expected = {"detector", "reid"} if arch == "TDN" else {"search", "query"}
    assert set(paths) == expected
    counts = set()
    for seed in (1, 2):  # traced on seed 0
        diffs = verify_person_search(model, paths, image_size=SIZE, seed=seed)
        assert max(diffs.values()) < 1e-4, diffs
        g = torch.Generator().manual_seed(seed)
        image = torch.rand(1, 3, *SIZE, generator=g) * 255
        with torch.no_grad():
            counts.add(len(model.inference([{"image": image[0]}])[0]["boxes"]))
    assert len(counts) == 2  # different numbers of detections through the same graph
    # a model changed after export no longer matches its graphs
    with torch.no_grad():
        model.backbone.stem.conv1.weight.mul_(1.5)
    with pytest.raises(RuntimeError, match="ONNX"):
        verify_person_search(model, paths, image_size=SIZE)


def test_export_tool_on_a_tdn_checkpoint(tmp_path):
    cfg, model = _model("TDN")
    cfg.MODEL.TDN.TEACHER.ENABLED = True  # a training-only teacher that does not exist
    cfg.MODEL.TDN.TEACHER.WEIGHTS = str(tmp_path / "no_teacher.pth")
    (tmp_path / "tdn.yaml").write_text(cfg.dump())
    Checkpointer(model, str(tmp_path)).save("tdn")
    out = str(tmp_path / "exp" / "tdn.onnx")
    summary = load_tool("export_onnx").main(
        ["--config-file", str(tmp_path / "tdn.yaml"), "--output", out, "--input-size", "60", "90",
         "MODEL.WEIGHTS", str(tmp_path / "tdn.pth")]
    )  # fmt: skip
    assert sorted(summary["onnx"]) == ["detector", "reid"]
    assert max(summary["max_abs_diff"].values()) < 1e-4
    with open(out + ".json") as f:
        assert json.load(f)["image"]["shape"] == [1, 3, 60, 90]
    import onnxruntime as ort

    sess = ort.InferenceSession(summary["onnx"]["detector"], providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    assert names == ["boxes", "scores", "part1"]
    boxes = sess.run(None, {"images": np.zeros((1, 3, 60, 90), np.float32)})[0]
    assert boxes.ndim == 2 and boxes.shape[1] == 4
