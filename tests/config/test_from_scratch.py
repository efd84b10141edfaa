"""Issue 13.5: training refuses a random-weights backbone unless MODEL.BACKBONE.FROM_SCRATCH.

Every real-data config under projects/ must fail without ImageNet weights; every synthetic
config (training sets named ``synthetic_*``) sets FROM_SCRATCH True.
"""

import glob
import os

import pytest
from torch import nn

from reid_plugins.config import add_all_configs, get_cfg
from reid_plugins.modeling import META_ARCH_REGISTRY
from reid_plugins.modeling.backbone import build_backbone
from reid_plugins.modeling.backbone.build import RandomBackboneError, check_pretrained_backbone
from reid_plugins.utils.errors import UserError, one_line
from tests._testing import ToyClassifier, ToyTrainer, toy_trainer_cfg

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = sorted(glob.glob(os.path.join(REPO, "projects", "**", "*.yaml"), recursive=True))


def _load(path):
    cfg = add_all_configs(get_cfg())
    cfg.merge_from_file(path)
    return cfg


def _is_synthetic(cfg):
    train = list(cfg.DATASETS.TRAIN)
    return bool(train) and all(n.startswith("synthetic_") for n in train)


def test_configs_found():
    assert len(CONFIGS) > 50


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: os.path.relpath(p, REPO))
def test_real_configs_need_weights_synthetic_ones_train_from_scratch(path):
    cfg = _load(path)
    if _is_synthetic(cfg):
        assert cfg.MODEL.BACKBONE.FROM_SCRATCH is True
        check_pretrained_backbone(cfg)  # passes
    else:
        assert cfg.MODEL.BACKBONE.FROM_SCRATCH is False
        assert cfg.MODEL.BACKBONE.PRETRAIN_PATH == ""  # shipped without a local path
        with pytest.raises(RandomBackboneError, match=r"^MODEL\.BACKBONE\.PRETRAIN_PATH is empty"):
            check_pretrained_backbone(cfg)


def test_message_names_key_and_where_to_get_weights():
    cfg = add_all_configs(get_cfg())
    with pytest.raises(RandomBackboneError) as e:
        check_pretrained_backbone(cfg)
    msg = str(e.value)
    assert "\n" not in msg
    assert isinstance(e.value, UserError) and one_line(e.value) == msg  # the CLI's line
    assert "torchvision's ResNet50_Weights.IMAGENET1K_V1 file (resnet50-0676ba61.pth)" in msg
    assert "MODEL.BACKBONE.FROM_SCRATCH True" in msg
    cfg.MODEL.BACKBONE.WITH_IBN = True
    with pytest.raises(
        RandomBackboneError, match=r"IBN-Net release .*resnet50_ibn_a-d9d0bb7b\.pth"
    ):
        check_pretrained_backbone(cfg)


@pytest.mark.parametrize(
    "key, value",
    [
        ("MODEL.BACKBONE.PRETRAIN_PATH", "imagenet.pth"),
        ("MODEL.BACKBONE.FROM_SCRATCH", True),
        ("MODEL.WEIGHTS", "model_final.pth"),  # fine-tuning a whole checkpoint
    ],
)
def test_any_explicit_choice_passes(key, value):
    cfg = add_all_configs(get_cfg())
    cfg.merge_from_list([key, str(value)])
    check_pretrained_backbone(cfg)


class _ToyWithBackbone(ToyClassifier):
    """Toy classifier that also owns a (tiny, unused) ResNet backbone."""

    def __init__(self, *, backbone, **kw):
        super().__init__(**kw)
        self.backbone = backbone

    @classmethod
    def from_config(cls, cfg):
        return cls(backbone=build_backbone(cfg))


@pytest.fixture
def toy_backbone_cfg(tmp_path):
    if "_ToyWithBackbone" not in META_ARCH_REGISTRY:
        META_ARCH_REGISTRY.register(_ToyWithBackbone)
    cfg = toy_trainer_cfg(tmp_path, seed=0, max_iter=2, checkpoint_period=100)
    cfg.MODEL.META_ARCHITECTURE = "_ToyWithBackbone"
    cfg.MODEL.BACKBONE.DEPTH = 18
    cfg.MODEL.BACKBONE.BASE_WIDTH = 4
    return cfg


def test_trainer_refuses_random_backbone_but_evaluation_build_does_not(toy_backbone_cfg):
    cfg = toy_backbone_cfg
    with pytest.raises(RandomBackboneError, match="MODEL.BACKBONE.FROM_SCRATCH True"):
        ToyTrainer(cfg)
    # --eval-only builds the model through the trainer class without constructing a trainer
    assert isinstance(ToyTrainer.build_model(cfg), nn.Module)
    cfg.MODEL.BACKBONE.FROM_SCRATCH = True
    trainer = ToyTrainer(cfg)
    trainer.train()
    assert trainer.iter == cfg.SOLVER.MAX_ITER  # trained


def test_models_without_backbone_are_not_checked(tmp_path):
    cfg = toy_trainer_cfg(tmp_path, seed=0, max_iter=1, checkpoint_period=100)
    assert not cfg.MODEL.BACKBONE.FROM_SCRATCH
    ToyTrainer(cfg)  # the toy classifier has no Backbone: nothing to pre-train
