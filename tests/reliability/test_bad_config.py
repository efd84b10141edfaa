"""Bad configuration and bad dataset choices fail early with errors naming key, file or value.

Covers unknown keys, wrong types and YAML errors (file and command line), invalid values of
the main options, unregistered dataset names (the error lists the registered ones) and empty
query / gallery / training sets (the error names the dataset).
"""

import numpy as np
import pytest
import torch

from reid_plugins.config import ConfigError, add_all_configs, get_cfg
from reid_plugins.data import DatasetCatalog, build_reid_test_loader, build_reid_train_loader
from reid_plugins.data.datasets import register_market_style
from reid_plugins.data.transforms import build_reid_transforms
from reid_plugins.engine import build_trainer
from reid_plugins.evaluation import evaluate_rank
from reid_plugins.evaluation.reid_evaluation import ReIDEvaluator
from reid_plugins.modeling import build_model
from reid_plugins.solver import build_lr_scheduler, build_optimizer
from tests._testing import load_tool, write_tiny_image


def _train_net():
    return load_tool("train_net")


def _full_cfg():
    cfg = get_cfg()
    add_all_configs(cfg)
    return cfg


# ----------------------------------------------------------------------------- YAML files
BAD_YAML = [
    ("FOO: 1\n", "FOO", "Non-existent"),
    ("SOLVER:\n  MAX_ITERS: 10\n", "SOLVER.MAX_ITERS", "Non-existent"),
    ("MODEL:\n  BACKBONE:\n    DEPHT: 18\n", "MODEL.BACKBONE.DEPHT", "Non-existent"),
    ("SOLVER:\n  MAX_ITER: abc\n", "SOLVER.MAX_ITER", "Type mismatch"),
    ("SOLVER:\n  STEPS: 5\n", "SOLVER.STEPS", "Type mismatch"),
    ("MODEL:\n  BACKBONE:\n    DEPTH: 18.5\n", "MODEL.BACKBONE.DEPTH", "Type mismatch"),
    ("INPUT:\n  SIZE_TRAIN: 32\n", "INPUT.SIZE_TRAIN", "Type mismatch"),
    ("DATALOADER:\n  SKIP_CORRUPT: 'yes'\n", "DATALOADER.SKIP_CORRUPT", "Type mismatch"),
    ("DATASETS:\n  TRAIN: market1501_train\n", "DATASETS.TRAIN", "Type mismatch"),
    ("SOLVER: [\n", "line 2", "Cannot parse"),
    ("SOLVER:\n  BASE_LR: 0.1\n BAD_INDENT: 1\n", "line", "Cannot parse"),
]


@pytest.mark.parametrize("content, key, kind", BAD_YAML)
def test_bad_yaml_names_file_and_key(tmp_path, content, key, kind):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError) as e:
        _full_cfg().merge_from_file(str(path))
    msg = str(e.value)
    assert str(path) in msg and key in msg and kind in msg, msg


def test_missing_config_and_missing_base_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.yaml"):
        _full_cfg().merge_from_file(str(tmp_path / "nowhere.yaml"))
    child = tmp_path / "child.yaml"
    child.write_text("_BASE_: base_missing.yaml\nSEED: 1\n")
    with pytest.raises(FileNotFoundError) as e:
        _full_cfg().merge_from_file(str(child))
    assert "child.yaml" in str(e.value) and "base_missing.yaml" in str(e.value)


def test_bad_key_inherited_from_base_is_named(tmp_path):
    (tmp_path / "base.yaml").write_text("SOLVER:\n  MAX_ITERS: 3\n")
    child = tmp_path / "child.yaml"
    child.write_text("_BASE_: base.yaml\nSEED: 1\n")
    with pytest.raises(ConfigError, match="SOLVER.MAX_ITERS"):
        _full_cfg().merge_from_file(str(child))


BAD_OPTS = [
    (["SOLVER.MAX_ITERS", "3"], "SOLVER.MAX_ITERS"),
    (["SOLVER.MAX_ITER", "x"], "SOLVER.MAX_ITER x"),
    (["SOLVER.STEPS", "5"], "SOLVER.STEPS"),
    (["SOLVER.MAX_ITER"], "KEY VALUE pairs"),
    (["MODEL.BACKBONE.DEPTH", "18.5"], "MODEL.BACKBONE.DEPTH"),
]


@pytest.mark.parametrize("opts, key", BAD_OPTS)
def test_bad_command_line_override_through_train_net(tmp_path, opts, key):
    """``tools/train_net.py`` merges file then overrides; the error names the override."""
    train_net = _train_net()
    cfg_file = tmp_path / "ok.yaml"
    cfg_file.write_text(f"OUTPUT_DIR: {tmp_path / 'out'}\n")
    args = train_net.default_argument_parser().parse_args(["--config-file", str(cfg_file), *opts])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        train_net.setup(args)
    assert not (tmp_path / "out").exists()  # failed before touching the output folder


# ----------------------------------------------------------------------------- invalid values
def _tiny_cfg(**overrides):
    cfg = _full_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.HEADS.NUM_CLASSES = 4
    cfg.MODEL.BACKBONE.DEPTH = 18
    cfg.MODEL.BACKBONE.BASE_WIDTH = 4
    cfg.merge_from_list([x for kv in overrides.items() for x in kv])
    return cfg


def _model_and_optimizer():
    model = torch.nn.Linear(2, 2)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


BAD_VALUES = [
    ("MODEL.META_ARCHITECTURE", "Nope", lambda c: build_model(c), "ReIDBaseline"),
    ("MODEL.BACKBONE.NAME", "nope", lambda c: build_model(c), "build_resnet_backbone"),
    ("MODEL.BACKBONE.DEPTH", "19", lambda c: build_model(c), "DEPTH=19"),
    ("MODEL.BACKBONE.NORM", "GN2", lambda c: build_model(c), "NORM='GN2'"),
    ("MODEL.HEADS.POOL", "median", lambda c: build_model(c), "POOL"),
    ("MODEL.HEADS.NECK", "x", lambda c: build_model(c), "NECK"),
    ("TRAINER.NAME", "Foo", lambda c: build_trainer(c), "DefaultTrainer"),
    (
        "SOLVER.OPTIMIZER",
        "Adamm",
        lambda c: build_optimizer(c, _model_and_optimizer()[0]),
        "OPTIMIZER",
    ),
    (
        "SOLVER.LR_SCHEDULER_NAME",
        "Foo",
        lambda c: build_lr_scheduler(c, _model_and_optimizer()[1]),
        "LR_SCHEDULER_NAME",
    ),
    (
        "SOLVER.WARMUP_METHOD",
        "Foo",
        lambda c: build_lr_scheduler(c, _model_and_optimizer()[1]),
        "WARMUP_METHOD",
    ),
    ("TEST.METRIC", "cosin", lambda c: ReIDEvaluator.from_config(c, "x"), "TEST.METRIC"),
    ("INPUT.SIZE_TRAIN", "[32]", lambda c: build_reid_transforms(c, True), "INPUT.SIZE_TRAIN"),
    ("INPUT.FLIP.PROB", "1.5", lambda c: build_reid_transforms(c, True), "INPUT.FLIP"),
    ("INPUT.PADDING.MODE", "wrap", lambda c: build_reid_transforms(c, True), "INPUT.PADDING"),
    ("INPUT.SIZE_TEST", "[0, 16]", lambda c: build_reid_transforms(c, False), "INPUT.SIZE_TEST"),
]


@pytest.mark.parametrize(
    "key, value, build, expected", BAD_VALUES, ids=[f"{k}={v}" for k, v, _, _ in BAD_VALUES]
)
def test_invalid_values_name_the_key_or_the_choices(key, value, build, expected):
    cfg = _tiny_cfg(**{key: value})
    with pytest.raises((KeyError, ValueError)) as e:
        build(cfg)
    msg = str(e.value)
    assert expected in msg and value.strip("[]").split(",")[0] in msg, msg


# ----------------------------------------------------------------------------- dataset names
def test_unknown_dataset_lists_the_registered_names():
    with pytest.raises(KeyError) as e:
        DatasetCatalog.get("market1502_train")
    msg = str(e.value)
    assert "market1502_train" in msg
    for known in ("market1501_train", "msmt17_v2_test", "synthetic_reid_synA_test"):
        assert known in msg
    cfg = _tiny_cfg()
    cfg.DATASETS.TRAIN = ["synthetic_reid_synA_train", "dukemtmc_trian"]
    with pytest.raises(KeyError, match="dukemtmc_trian.*dukemtmc_train"):
        build_reid_train_loader(cfg)
    with pytest.raises(KeyError, match="nope_test.*market1501_test"):
        build_reid_test_loader(cfg, "nope_test")


def test_empty_dataset_list_is_rejected():
    cfg = _tiny_cfg()
    cfg.DATASETS.TRAIN = []
    with pytest.raises(ValueError, match="DATASETS.TRAIN is empty"):
        build_reid_train_loader(cfg)


# ----------------------------------------------------------------------------- empty sets
@pytest.fixture
def registered():
    names = []

    def register(name, records):
        if name in DatasetCatalog:
            DatasetCatalog.remove(name)
        DatasetCatalog.register(name, lambda: [dict(r) for r in records])
        names.append(name)
        return name

    yield register
    for n in names:
        DatasetCatalog.remove(n)


def _records(tmp_path, n, is_query=None):
    out = []
    for i in range(n):
        r = {
            "file_name": write_tiny_image(tmp_path / f"{i}.jpg", seed=i),
            "pid": i % 2 + 1,
            "camid": i % 2,
            "dataset": "x",
        }
        if is_query is not None:
            r["is_query"] = is_query(i)
        out.append(r)
    return out


@pytest.mark.parametrize(
    "is_query, which",
    [(lambda i: False, "0 query"), (lambda i: True, "0 gallery")],
    ids=["no-query", "no-gallery"],
)
def test_empty_query_or_gallery_names_the_dataset(tmp_path, registered, is_query, which):
    name = registered("reliability_empty_split_test", _records(tmp_path, 4, is_query))
    with pytest.raises(ValueError) as e:
        build_reid_test_loader(_tiny_cfg(), name)
    assert name in str(e.value) and which in str(e.value)


def test_empty_test_set_and_missing_is_query(tmp_path, registered):
    name = registered("reliability_no_records_test", [])
    with pytest.raises(ValueError, match="reliability_no_records_test.*0 query and 0 gallery"):
        build_reid_test_loader(_tiny_cfg(), name)
    name = registered("reliability_no_flag_test", _records(tmp_path, 2))
    with pytest.raises(ValueError, match="reliability_no_flag_test.*is_query"):
        build_reid_test_loader(_tiny_cfg(), name)


def test_empty_training_set_names_the_dataset(registered):
    name = registered("reliability_empty_train", [])
    cfg = _tiny_cfg()
    cfg.DATASETS.TRAIN = [name]
    with pytest.raises(ValueError, match="reliability_empty_train.*empty"):
        build_reid_train_loader(cfg)


def test_market_layout_with_an_empty_query_folder(tmp_path):
    """A Market-layout folder whose query folder is empty registers and loads, and the test
    loader then refuses it, naming the dataset."""
    root = tmp_path / "mydata"
    for folder in ("bounding_box_train", "bounding_box_test", "query"):
        (root / folder).mkdir(parents=True)
    for i, name in enumerate(["0001_c1s1_000001_00.jpg", "0002_c2s1_000001_00.jpg"]):
        write_tiny_image(root / "bounding_box_train" / name, seed=i)
        write_tiny_image(root / "bounding_box_test" / name, seed=i + 5)
    names = register_market_style("reliability_mydata", str(root), max_cam=6)
    try:
        with pytest.raises(ValueError, match="reliability_mydata_test.*0 query"):
            build_reid_test_loader(_tiny_cfg(), "reliability_mydata_test")
    finally:
        for n in names:
            DatasetCatalog.remove(n)


def test_evaluator_and_metrics_reject_empty_sets():
    ev = ReIDEvaluator(dataset_name="reliability_ds")
    ev.process(
        [{"pid": 1, "camid": 0, "is_query": False, "file_name": "g.jpg"}],
        [{"feature": torch.ones(4)}],
    )
    with pytest.raises(ValueError, match="reliability_ds.*empty query set"):
        ev.evaluate()
    ev.reset()
    ev.process(
        [{"pid": 1, "camid": 0, "is_query": True, "file_name": "q.jpg"}],
        [{"feature": torch.ones(4)}],
    )
    with pytest.raises(ValueError, match="reliability_ds.*empty gallery set"):
        ev.evaluate()
    ev.process(  # a gallery whose only sample has the query's pid and camera: no valid query
        [{"pid": 1, "camid": 0, "is_query": False, "file_name": "g.jpg"}],
        [{"feature": torch.ones(4)}],
    )
    with pytest.raises(ValueError, match="reliability_ds.*No valid query"):
        ev.evaluate()
    with pytest.raises(ValueError, match="Empty query set"):
        evaluate_rank(np.zeros((0, 3)), [], [1, 2, 3], [], [0, 0, 0])
    with pytest.raises(ValueError, match="Empty gallery set"):
        evaluate_rank(np.zeros((2, 0)), [1, 2], [], [0, 0], [])
