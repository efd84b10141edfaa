"""Config: defaults, _BASE_ inheritance, overrides and error messages."""

import glob
import os

import pytest

from reid_plugins.config import ConfigError, add_all_configs, get_cfg

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def test_defaults_have_documented_sections():
    cfg = get_cfg()
    for key in (
        "MODEL",
        "INPUT",
        "DATASETS",
        "DATALOADER",
        "SOLVER",
        "TEST",
        "OUTPUT_DIR",
        "SEED",
        "VERSION",
    ):
        assert key in cfg
    # get_cfg returns independent copies
    a, b = get_cfg(), get_cfg()
    a.SOLVER.BASE_LR = 123.0
    assert b.SOLVER.BASE_LR != 123.0


def test_base_inheritance_chain(tmp_path):
    _write(tmp_path / "Base.yaml", "SOLVER:\n  BASE_LR: 0.5\n  MAX_ITER: 10\nSEED: 3\n")
    _write(tmp_path / "mid.yaml", "_BASE_: Base.yaml\nSOLVER:\n  MAX_ITER: 20\n")
    leaf = _write(tmp_path / "leaf.yaml", "_BASE_: mid.yaml\nSEED: 7\n")
    cfg = get_cfg()
    cfg.merge_from_file(leaf)
    assert cfg.SOLVER.BASE_LR == 0.5  # from the base
    assert cfg.SOLVER.MAX_ITER == 20  # overridden by the middle file
    assert cfg.SEED == 7  # overridden by the leaf


def test_unknown_key_names_key_and_file(tmp_path):
    path = _write(tmp_path / "bad.yaml", "SOLVER:\n  BASE_LRR: 0.1\n")
    cfg = get_cfg()
    with pytest.raises(ConfigError) as e:
        cfg.merge_from_file(path)
    assert "SOLVER.BASE_LRR" in str(e.value)
    assert "bad.yaml" in str(e.value)


def test_unknown_key_in_base_names_a_file(tmp_path):
    _write(tmp_path / "Base.yaml", "MODEL:\n  BACKBON:\n    DEPTH: 18\n")
    leaf = _write(tmp_path / "leaf.yaml", "_BASE_: Base.yaml\n")
    with pytest.raises(ConfigError) as e:
        get_cfg().merge_from_file(leaf)
    assert "MODEL.BACKBON" in str(e.value) and "leaf.yaml" in str(e.value)


def test_wrong_type_is_an_error(tmp_path):
    path = _write(tmp_path / "bad.yaml", "SOLVER:\n  MAX_ITER: ten\n")
    with pytest.raises(ConfigError) as e:
        get_cfg().merge_from_file(path)
    assert "SOLVER.MAX_ITER" in str(e.value)


def test_missing_file_and_missing_base(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        get_cfg().merge_from_file(str(tmp_path / "nope.yaml"))
    leaf = _write(tmp_path / "leaf.yaml", "_BASE_: missing_base.yaml\n")
    with pytest.raises((FileNotFoundError, ConfigError), match="missing_base.yaml"):
        get_cfg().merge_from_file(leaf)


def test_merge_from_list_overrides_and_errors():
    cfg = get_cfg()
    cfg.merge_from_list(["SOLVER.BASE_LR", "0.02", "DATASETS.TRAIN", "['a','b']"])
    assert cfg.SOLVER.BASE_LR == 0.02
    assert list(cfg.DATASETS.TRAIN) == ["a", "b"]
    with pytest.raises(ConfigError, match="SOLVER.NOPE"):
        cfg.merge_from_list(["SOLVER.NOPE", "1"])
    with pytest.raises(ConfigError, match="odd"):
        cfg.merge_from_list(["SOLVER.BASE_LR"])
    with pytest.raises(ConfigError, match="SOLVER.MAX_ITER"):
        cfg.merge_from_list(["SOLVER.MAX_ITER", "abc"])


def test_every_project_config_loads():
    files = sorted(glob.glob(os.path.join(REPO, "projects", "**", "*.yaml"), recursive=True))
    assert files, "no config files found under projects/"
    for path in files:
        cfg = add_all_configs(get_cfg())
        cfg.merge_from_file(path)
        assert cfg.MODEL.META_ARCHITECTURE, path
