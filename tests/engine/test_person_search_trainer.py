"""PersonSearchTrainer end to end on tiny generated CUHK-SYSU- and PRW-style scenes."""

import json
import os

import pytest
import torch

from reid_plugins.config import add_all_configs, get_cfg
from reid_plugins.data.synthetic_scenes import generate_synthetic_scenes
from reid_plugins.engine import TRAINER_REGISTRY, PersonSearchTrainer, build_trainer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Tiny convolutions run faster (and robustly on a busy machine) on one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def tiny_scenes(tmp_path, monkeypatch):
    root = tmp_path / "datasets"
    monkeypatch.setenv("REID_DATASETS", str(root))
    small = dict(
        num_train_ids=4, num_test_ids=3, num_cams=2, image_size=(64, 96), appearances=(2, 3),
        unlabeled_per_image=(0, 1), progress=False,
    )  # fmt: skip
    generate_synthetic_scenes(
        str(root), fmt="cuhk_sysu", num_train_images=8, num_test_images=11, **small
    )
    generate_synthetic_scenes(str(root), fmt="prw", num_train_images=6, num_test_images=8, **small)
    return root


def _cfg(tmp_path):
    cfg = add_all_configs(get_cfg())
    cfg.merge_from_file(os.path.join(REPO, "projects", "oim", "synthetic.yaml"))
    cfg.merge_from_list([
        "MODEL.DEVICE", "cpu",
        "MODEL.BACKBONE.BASE_WIDTH", 8,
        "MODEL.PERSON_SEARCH.EMBEDDING_DIM", 16,
        "MODEL.PERSON_SEARCH.RPN.ANCHOR_SCALES", [2, 4, 8],
        "MODEL.PERSON_SEARCH.RPN.POST_NMS_TOPK_TEST", 30,
        "MODEL.PERSON_SEARCH.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 16,
        "MODEL.PERSON_SEARCH.ROI_HEADS.POOLER_RESOLUTION", [8, 4],
        "MODEL.PERSON_SEARCH.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
        "MODEL.PERSON_SEARCH.ROI_HEADS.DETECTIONS_PER_IMAGE", 10,
        "INPUT.MIN_SIZE_TRAIN", 64, "INPUT.MAX_SIZE_TRAIN", 96,
        "INPUT.MIN_SIZE_TEST", 64, "INPUT.MAX_SIZE_TEST", 96,
        "DATASETS.TEST", ["synthetic_cuhk_sysu_gallery", "synthetic_prw_query"],
        "DATALOADER.NUM_WORKERS", 0,
        "SOLVER.IMS_PER_BATCH", 2, "SOLVER.MAX_ITER", 3, "SOLVER.STEPS", [2],
        "SOLVER.WARMUP_ITERS", 1, "SOLVER.CHECKPOINT_PERIOD", 100,
        "TEST.SEARCH.GALLERY_SIZE", 10, "TEST.SEARCH.GALLERY_CURVE", [10],
        "TEST.SEARCH.DET_THRESH", 0.0, "TEST.SEARCH.IMS_PER_BATCH", 4,
        "OUTPUT_DIR", str(tmp_path / "out"),
    ])  # fmt: skip
    return cfg


def _check_results(res):
    assert set(res["search"]) == {"mAP", "top-1", "top-5", "top-10", "det_thresh"}
    assert set(res["detection"]) == {
        f"{m}@{t}" for m in ("recall", "AP", "recall_labeled", "AP_labeled") for t in ("0", "0.01")
    }
    for group in ("search", "detection"):
        for k, v in res[group].items():
            assert 0.0 <= float(v) <= 100.0, (group, k, v)
    assert res["search"]["top-1"] <= res["search"]["top-5"] <= res["search"]["top-10"]


def test_train_and_evaluate_end_to_end(tiny_scenes, tmp_path):
    cfg = _cfg(tmp_path)
    assert TRAINER_REGISTRY.get("PersonSearchTrainer") is PersonSearchTrainer
    trainer = build_trainer(cfg)
    assert isinstance(trainer, PersonSearchTrainer)
    assert trainer.model_without_ddp.oim_loss.num_pids == 4  # the train set's labelled ids
    trainer.resume_or_load(resume=False)
    oim = trainer.model_without_ddp.oim_loss
    results = trainer.train()

    assert set(results) == {"synthetic_cuhk_sysu_gallery", "synthetic_prw_query"}
    cuhk, prw = results["synthetic_cuhk_sysu_gallery"], results["synthetic_prw_query"]
    _check_results(cuhk)
    _check_results(prw)
    assert set(cuhk["search_gallery_curve"]) == {10}
    assert "search_gallery_curve" not in prw
    # training ran 3 steps: weights checkpointed, OIM tables filled
    assert os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "model_final.pth"))
    assert int(oim.queue_count) > 0 or oim.lut.abs().sum() > 0
    with open(os.path.join(cfg.OUTPUT_DIR, "eval_results.json")) as f:
        saved = json.load(f)
    assert saved["synthetic_prw_query"]["search"]["mAP"] == pytest.approx(prw["search"]["mAP"])
    # per-query dump of the evaluator
    dump = os.path.join(cfg.OUTPUT_DIR, "inference", "synthetic_cuhk_sysu_gallery")
    assert os.path.isfile(os.path.join(dump, "search_results_cuhk_sysu.json"))

    # evaluation alone (eval-only path) reproduces the numbers: inference is deterministic
    cfg.defrost()
    cfg.DATASETS.TEST = ["synthetic_cuhk_sysu_query"]  # either split names the test set
    again = PersonSearchTrainer.test(cfg, trainer.model_without_ddp)
    assert again["search"]["mAP"] == pytest.approx(cuhk["search"]["mAP"])
    assert again["detection"] == pytest.approx(cuhk["detection"])


def test_protocol_override_is_checked(tiny_scenes, tmp_path):
    cfg = _cfg(tmp_path)
    cfg.TEST.SEARCH.PROTOCOL = "market"
    with pytest.raises(ValueError, match="TEST.SEARCH.PROTOCOL"):
        PersonSearchTrainer.build_evaluator(cfg, "synthetic_prw_gallery")


def test_images_without_detections(tiny_scenes, tmp_path):
    cfg = _cfg(tmp_path)
    cfg.MODEL.PERSON_SEARCH.ROI_HEADS.SCORE_THRESH_TEST = 1.01  # nothing survives
    cfg.DATASETS.TEST = ["synthetic_prw_query"]
    model = PersonSearchTrainer.build_model(cfg)
    res = PersonSearchTrainer.test(cfg, model)
    assert res["search"]["mAP"] == 0.0 and res["search"]["top-1"] == 0.0
    assert res["detection"]["recall@0.01"] == 0.0


def test_exact_resume(tiny_scenes, tmp_path):
    """4 iterations straight == 2 iterations, checkpoint, resume, 2 more (data stream, RoI
    sampling RNG, optimizer and OIM tables all restored)."""
    cfg = _cfg(tmp_path)
    cfg.merge_from_list(["DATASETS.TEST", [], "SOLVER.MAX_ITER", 4, "SOLVER.CHECKPOINT_PERIOD", 2])
    cfg.INPUT.FLIP.PROB = 0.5
    torch.manual_seed(0)
    straight = build_trainer(cfg)
    straight.resume_or_load(resume=False)
    straight.train()
    final = {k: v.clone() for k, v in straight.model_without_ddp.state_dict().items()}
    assert os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "model_0000001.pth"))
    straight.checkpointer.tag_last_checkpoint("model_0000001.pth")

    torch.manual_seed(123)  # the resumed run must not depend on the fresh process' RNG
    resumed = build_trainer(cfg)
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 2
    resumed.train()
    state = resumed.model_without_ddp.state_dict()
    assert set(state) == set(final)
    for k, v in final.items():
        assert torch.equal(state[k], v), k
