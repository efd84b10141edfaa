"""Inference never needs TDN's training-only teacher: ``tools/train_net.py --eval-only`` and
``tools/demo.py search`` on a TDN checkpoint of ``projects/tdn/synthetic.yaml`` succeed while
the teacher checkpoint named by the config does not exist."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from reid_plugins.checkpoint import Checkpointer
from reid_plugins.config import add_all_configs, get_cfg
from reid_plugins.data.catalog import DatasetCatalog, MetadataCatalog
from reid_plugins.modeling import build_model
from tests._testing import REPO, load_tool

pytestmark = pytest.mark.usefixtures("single_thread")

CONFIG = os.path.join(REPO, "projects", "tdn", "synthetic.yaml")


def _opts(tmp_path):
    return [
        "MODEL.DEVICE", "cpu",
        "MODEL.TDN.TEACHER.WEIGHTS", str(tmp_path / "no_teacher_here.pth"),
        "MODEL.PERSON_SEARCH.ROI_HEADS.SCORE_THRESH_TEST", "0.0",  # Part-2 runs on boxes
        "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96",
    ]  # fmt: skip


def _checkpoint(tmp_path):
    cfg = add_all_configs(get_cfg())
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list(_opts(tmp_path))
    torch.manual_seed(0)
    model = build_model(cfg)  # the inference model: no teacher is opened
    assert model.teacher is None
    Checkpointer(model, str(tmp_path)).save("tdn")
    return str(tmp_path / "tdn.pth")


def _scene(path, seed):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(path)
    return str(path)


def test_eval_only_and_demo_without_the_teacher_file(tmp_path):
    weights = _checkpoint(tmp_path)
    assert not os.path.exists(tmp_path / "no_teacher_here.pth")
    box = np.array([[10, 5, 40, 60], [50, 8, 80, 60]], np.float32)
    recs = [
        dict(file_name=_scene(tmp_path / f"g{i}.jpg", i), image_id=f"g{i}.jpg", height=64,
             width=96, boxes=box, pids=np.array([1, 2 + i]), camid=i, dataset="toy")
        for i in range(2)
    ]  # fmt: skip
    query = [dict(recs[0], query_box=box[0], query_pid=1)]
    for name, records in (("toy_tdn_cli_gallery", recs), ("toy_tdn_cli_query", query)):
        if name in DatasetCatalog:
            DatasetCatalog.remove(name)
        DatasetCatalog.register(name, lambda r=records: r)
    MetadataCatalog.get("toy_tdn_cli_gallery").set(search_protocol="prw")

    train_net = load_tool("train_net")
    args = ["--config-file", CONFIG, "--eval-only", *_opts(tmp_path), "MODEL.WEIGHTS", weights,
            "DATASETS.TEST", "['toy_tdn_cli_query']", "DATALOADER.NUM_WORKERS", "0",
            "OUTPUT_DIR", str(tmp_path / "eval")]  # fmt: skip
    results = train_net.main(train_net.default_argument_parser().parse_args(args))
    assert 0.0 <= results["search"]["mAP"] <= 100.0

    demo = load_tool("demo")
    gallery = tmp_path / "scenes"
    gallery.mkdir()
    _scene(gallery / "a.jpg", 5)
    res = demo.main(
        ["search", "--config-file", CONFIG, "--query", str(tmp_path / "g0.jpg"),
         "--query-box", "10", "5", "40", "60", "--gallery", str(gallery),
         "--output", str(tmp_path / "demo"), "--det-thresh", "0.0", "MODEL.WEIGHTS", weights,
         *_opts(tmp_path)]
    )  # fmt: skip
    assert res["num_gallery_images"] == 1 and res["num_detections"] > 0
