"""Tiny configs, scene inputs and a forward-hook recorder shared by the one-step person-search
model tests (``OIMSearch``, ``TDN``).

Imported as ``from tests._person_search_helpers import ...`` (the repository root is
importable when pytest runs from it, as ``python -m pytest`` does).
"""

import torch

from reid_plugins.config import add_all_configs, get_cfg


def tiny_search_cfg(meta_architecture: str):
    """Full config for ``meta_architecture`` on the CPU: a width-8 ResNet-18 (stride-2 res5),
    anchors of 2 and 4 x stride, few RPN proposals, 32 sampled RoIs per image and no score
    threshold at inference."""
    cfg = add_all_configs(get_cfg())
    cfg.MODEL.META_ARCHITECTURE = meta_architecture
    cfg.MODEL.DEVICE = "cpu"
    b = cfg.MODEL.BACKBONE
    b.DEPTH, b.BASE_WIDTH, b.LAST_STRIDE = 18, 8, 2
    ps = cfg.MODEL.PERSON_SEARCH
    ps.RPN.ANCHOR_SCALES = [2, 4]
    ps.RPN.PRE_NMS_TOPK_TRAIN, ps.RPN.POST_NMS_TOPK_TRAIN = 600, 300
    ps.RPN.PRE_NMS_TOPK_TEST, ps.RPN.POST_NMS_TOPK_TEST = 300, 50
    ps.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32
    ps.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    return cfg


def merge_overrides(cfg, overrides: dict):
    """``cfg`` with ``{"KEY.PATH": value}`` overrides merged in."""
    cfg.merge_from_list(sum(([k, v] for k, v in overrides.items()), []))
    return cfg


def scene_inputs():
    """Two fresh scene inputs (fixed random pixels): image "a" (64 x 96, shown at its original
    size) with a labelled (pid 0) and an unlabelled person, image "b" (60 x 90) whose original
    is twice as large (outputs must be rescaled) with person 3."""
    g = torch.Generator().manual_seed(1)
    return [
        {
            "image": torch.rand(3, 64, 96, generator=g) * 255,
            "gt_boxes": torch.tensor([[10.0, 8.0, 30.0, 60.0], [50.0, 4.0, 70.0, 50.0]]),
            "gt_pids": torch.tensor([0, -1]),
            "height": 64,
            "width": 96,
            "image_id": "a",
        },
        {
            "image": torch.rand(3, 60, 90, generator=g) * 255,
            "gt_boxes": torch.tensor([[20.0, 10.0, 40.0, 55.0]]),
            "gt_pids": torch.tensor([3]),
            "height": 120,
            "width": 180,
            "image_id": "b",
        },
    ]


class InputShapes:
    """Forward hook recording the shape of a module's first input at each call."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.shapes = []
        self.handle = module.register_forward_hook(lambda m, i, o: self.shapes.append(i[0].shape))

    @property
    def sizes(self):
        """Batch size of each call."""
        return [s[0] for s in self.shapes]

    @property
    def total(self) -> int:
        """Inputs over all calls."""
        return sum(self.sizes)
