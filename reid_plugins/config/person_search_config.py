"""Config subtrees of the one-step person-search models (``OIMSearch``, the TDN "OIM*"
baseline; the detector keys are shared with TDN).

:func:`add_person_search_config` adds ``cfg.MODEL.PERSON_SEARCH`` and the scene-loading keys of
``cfg.TEST.SEARCH`` that :mod:`reid_plugins.config.defaults` does not define. It only adds
missing keys (never overwrites), so it is idempotent and safe to call after other adders.
"""

from __future__ import annotations

from . import register_config_adder
from .config import CfgNode as CN
from .config import add_subtree

__all__ = ["add_person_search_config"]


def _person_search_node() -> CN:
    ps = CN()
    # Last backbone stage of Part-1 (input of the RPN and of the RoIAlign), "res3" = conv1..conv3_x
    # (stride 8, 512 channels for ResNet-50). Part-2 = the stages after it up to res5, run on
    # the RoI features (TDN Sec. III-A; the OIM* baseline splits the backbone the same way).
    ps.PART1_END = "res3"
    # Padded batch height/width are multiples of this (>= the stride of Part-1).
    ps.SIZE_DIVISIBILITY = 32
    # Re-ID embedding: Part-2 -> GAP -> FC(EMBEDDING_DIM) -> BN -> L2 norm (256 in OIM).
    ps.EMBEDDING_DIM = 256

    ps.RPN = CN()
    # Anchor sizes in units of Part-1's stride (TDN Sec. IV-C: 4, 8, 16, 32 per location;
    # with stride 8 these are 32, 64, 128, 256 pixels).
    ps.RPN.ANCHOR_SCALES = [4, 8, 16, 32]
    # Anchor aspect ratios as height / width (TDN: 1, 2, 3; persons are taller than wide).
    ps.RPN.ASPECT_RATIOS = [1.0, 2.0, 3.0]
    # 3x3 convolutions of the RPN head before the objectness / delta layers.
    ps.RPN.HEAD_CONV_DEPTH = 1
    # Anchor labelling: IoU >= FG_IOU_THRESH -> foreground, < BG_IOU_THRESH -> background
    # (Faster R-CNN).
    ps.RPN.FG_IOU_THRESH = 0.7
    ps.RPN.BG_IOU_THRESH = 0.3
    # Anchors sampled per image for the RPN losses, and their foreground fraction.
    ps.RPN.BATCH_SIZE_PER_IMAGE = 256
    ps.RPN.POSITIVE_FRACTION = 0.5
    # Proposals kept before / after the RPN NMS, per image (public OIM re-implementations:
    # 12000/2000 train, 6000/300 test).
    ps.RPN.PRE_NMS_TOPK_TRAIN = 12000
    ps.RPN.POST_NMS_TOPK_TRAIN = 2000
    ps.RPN.PRE_NMS_TOPK_TEST = 6000
    ps.RPN.POST_NMS_TOPK_TEST = 300
    # IoU threshold of the RPN NMS.
    ps.RPN.NMS_THRESH = 0.7

    ps.ROI_HEADS = CN()
    # RoIs sampled per image in training (TDN: OIM* runs Part-2 on 128 RPN RoIs per image)
    # and their foreground fraction; ground-truth boxes are added to the proposals first.
    ps.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 128
    ps.ROI_HEADS.POSITIVE_FRACTION = 0.5
    # Proposal labelling: IoU >= FG_IOU_THRESH -> person (gets the pid of its box),
    # < BG_IOU_THRESH -> background, in between -> ignored.
    ps.ROI_HEADS.FG_IOU_THRESH = 0.5
    ps.ROI_HEADS.BG_IOU_THRESH = 0.5
    # RoIAlign output (height, width) on Part-1 features = Part-2 input (TDN Table VII:
    # 32 x 16 x 512 for both OIM* and TDN), and its sampling ratio.
    ps.ROI_HEADS.POOLER_RESOLUTION = [32, 16]
    ps.ROI_HEADS.POOLER_SAMPLING_RATIO = 2
    # Box-delta weights (wx, wy, ww, wh) of the RoI head (Faster R-CNN: 10, 10, 5, 5).
    ps.ROI_HEADS.BBOX_REG_WEIGHTS = [10.0, 10.0, 5.0, 5.0]
    # Smooth-L1 beta of the RoI box regression loss (torchvision's Fast R-CNN: 1/9).
    ps.ROI_HEADS.SMOOTH_L1_BETA = 1.0 / 9
    # Inference: drop detections scoring below SCORE_THRESH_TEST, NMS at NMS_THRESH_TEST (0.4,
    # as public OIM re-implementations), keep at most DETECTIONS_PER_IMAGE. The evaluator
    # applies TEST.SEARCH.DET_THRESH on top.
    ps.ROI_HEADS.SCORE_THRESH_TEST = 0.05
    ps.ROI_HEADS.NMS_THRESH_TEST = 0.4
    ps.ROI_HEADS.DETECTIONS_PER_IMAGE = 100
    return ps


# TEST.SEARCH keys added by this module (the evaluator's keys live in config/defaults.py).
_TEST_SEARCH_KEYS = {
    # Scene images per inference batch (summed over processes).
    "IMS_PER_BATCH": 2,
    # "cuhk_sysu" or "prw" to force the evaluation protocol; "" = from the dataset
    # (metadata "search_protocol", else "prw" if the name contains "prw", else "cuhk_sysu").
    "PROTOCOL": "",
}


@register_config_adder
def add_person_search_config(cfg: CN) -> CN:
    """Add ``cfg.MODEL.PERSON_SEARCH`` and ``cfg.TEST.SEARCH.{IMS_PER_BATCH, PROTOCOL}``.

    Existing keys are left unchanged (idempotent). Returns ``cfg``.
    """
    add_subtree(cfg.MODEL, "PERSON_SEARCH", _person_search_node())
    add_subtree(cfg.TEST, "SEARCH", CN(_TEST_SEARCH_KEYS))
    return cfg
