"""``check_config``: mistakes found before anything is built; detectron2's leniency for
``SOLVER.STEPS`` beyond ``SOLVER.MAX_ITER``; every shipped config passes."""

import glob
import logging
import os

import pytest

from reid_plugins.config import ConfigError, add_all_configs, get_cfg
from reid_plugins.engine.config_check import check_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYNTHETIC_DG = os.path.join(REPO, "projects", "baseline", "synthetic_dg.yaml")


def _cfg(path=SYNTHETIC_DG, opts=()):
    cfg = add_all_configs(get_cfg())
    cfg.merge_from_file(path)
    cfg.merge_from_list(list(opts))
    return cfg


def test_steps_beyond_max_iter_are_dropped_with_a_warning(caplog):
    """``synthetic_dg.yaml SOLVER.MAX_ITER 20`` (STEPS [180]) is a valid smoke test."""
    cfg = _cfg(opts=["SOLVER.MAX_ITER", "20"])
    with caplog.at_level(logging.WARNING, logger="reid_plugins.engine.config_check"):
        check_config(cfg, SYNTHETIC_DG)
    assert list(cfg.SOLVER.STEPS) == []
    assert any("SOLVER.STEPS [180]" in r.getMessage() and "MAX_ITER=20" in r.getMessage()
               for r in caplog.records)  # fmt: skip
    cfg = _cfg(opts=["SOLVER.MAX_ITER", "200", "SOLVER.STEPS", "[100, 200, 300]"])
    cfg.freeze()
    check_config(cfg)  # works on a frozen config too
    assert list(cfg.SOLVER.STEPS) == [100] and cfg.is_frozen()  # 200 = MAX_ITER never acts


BAD = [
    (["SOLVER.MAX_ITER", "0"], "SOLVER.MAX_ITER=0"),
    (["SOLVER.STEPS", "[50, 10]"], "must be non-negative and increasing"),
    (["SOLVER.BASE_LR", "0.0"], "SOLVER.BASE_LR=0.0"),
    (["SOLVER.OPTIMIZER", "Adamm"], "SOLVER.OPTIMIZER 'Adamm'"),
    (["SOLVER.WARMUP_METHOD", "cos"], "SOLVER.WARMUP_METHOD"),
    (["DATALOADER.NUM_WORKERS", "-1"], "DATALOADER.NUM_WORKERS=-1"),
    (["INPUT.SIZE_TRAIN", "[32]"], "INPUT.SIZE_TRAIN"),
    (["MODEL.META_ARCHITECTURE", "ReIDBaselin"], "did you mean 'ReIDBaseline'"),
    (["MODEL.BACKBONE.NAME", "build_resnet"], "MODEL.BACKBONE.NAME='build_resnet'"),
    (["TRAINER.NAME", "MetaTrainr"], "TRAINER.NAME='MetaTrainr'"),
    (["DATASETS.TEST", "['synthetic_reid_synD_tset']"], "did you mean 'synthetic_reid_synD_test'"),
    (["MODEL.BACKBONE.PRETRAIN_PATH", "/nowhere/r50.pth"], "/nowhere/r50.pth"),
]


@pytest.mark.parametrize("opts, expected", BAD, ids=[o[0] for o, _ in BAD])
def test_bad_values_name_key_value_and_file(opts, expected):
    with pytest.raises(ConfigError) as e:
        check_config(_cfg(opts=opts), SYNTHETIC_DG)
    assert expected in str(e.value) and "synthetic_dg.yaml" in str(e.value), str(e.value)


SHIPPED = sorted(
    glob.glob(os.path.join(REPO, "projects", "*", "synthetic*.yaml"))
    + glob.glob(os.path.join(REPO, "projects", "*", "teacher_synthetic.yaml"))
    + [os.path.join(REPO, "projects", p) for p in (
        "baseline/market1501.yaml", "baseline/dg_to_market1501.yaml", "m3l/r50_to_market1501.yaml",
        "gmn/p2_to_market1501.yaml", "oim/prw.yaml", "tdn/cuhk_sysu.yaml", "tdn/teacher_prw.yaml")]
)  # fmt: skip


@pytest.mark.parametrize("path", SHIPPED, ids=[os.path.relpath(p, REPO) for p in SHIPPED])
def test_shipped_configs_pass(path):
    cfg = _cfg(path)
    steps = list(cfg.SOLVER.STEPS)
    check_config(cfg, path)
    assert list(cfg.SOLVER.STEPS) == steps  # nothing dropped from a shipped config
