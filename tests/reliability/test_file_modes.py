"""Files written through a temp file + rename (checkpoints, ``last_checkpoint``, ONNX
exports) get the mode the umask gives a new file, not ``mkstemp``'s 0600."""

import os

import pytest

from reid_plugins.checkpoint import Checkpointer
from reid_plugins.checkpoint.checkpointer import atomic_torch_save, new_file_mode
from reid_plugins.config import get_cfg
from reid_plugins.modeling import build_model
from tests._testing import load_tool

TINY_YAML = """
MODEL:
  DEVICE: cpu
  BACKBONE: {DEPTH: 18, BASE_WIDTH: 4}
  HEADS: {NUM_CLASSES: 4}
INPUT:
  SIZE_TEST: [32, 16]
"""


@pytest.fixture
def umask():
    old = os.umask(0o022)

    def set_mask(mask):
        os.umask(mask)

    yield set_mask
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_atomic_writes_follow_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    assert new_file_mode() == mode
    atomic_torch_save({"x": 1}, str(tmp_path / "a.pth"))
    assert os.stat(tmp_path / "a.pth").st_mode & 0o777 == mode


def test_checkpoints_and_onnx_export_through_the_tool(tmp_path, umask):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    umask(0o027)  # a stricter umask than usual: 0640, neither 0600 nor a hard-coded 0644
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(TINY_YAML)
    cfg = get_cfg()
    cfg.merge_from_file(str(cfg_file))
    Checkpointer(build_model(cfg), str(tmp_path), save_to_disk=True).save("model")
    assert os.stat(tmp_path / "model.pth").st_mode & 0o777 == 0o640
    assert os.stat(tmp_path / "last_checkpoint").st_mode & 0o777 == 0o640
    out = tmp_path / "exp" / "model.onnx"
    load_tool("export_onnx").main(
        ["--config-file", str(cfg_file), "--output", str(out), "--no-verify",
         "MODEL.WEIGHTS", str(tmp_path / "model.pth")]
    )  # fmt: skip
    assert os.stat(out).st_mode & 0o777 == 0o640
    assert not [n for n in os.listdir(out.parent) if n.endswith(".tmp") or n.startswith(".")]
