"""Building blocks of one-step person search (Faster R-CNN parts on torchvision ops)."""

from .detector import (  # noqa: F401
    BACKGROUND_PID,
    PersonSearchDetector,
    ProposalSampler,
    SampledRoIs,
    batch_scene_images,
    build_rpn,
    fast_rcnn_losses,
    gt_targets,
    postprocess_detections,
    scale_factors,
    to_original,
    to_resized,
)

__all__ = [
    "BACKGROUND_PID",
    "PersonSearchDetector",
    "ProposalSampler",
    "SampledRoIs",
    "batch_scene_images",
    "build_rpn",
    "fast_rcnn_losses",
    "gt_targets",
    "postprocess_detections",
    "scale_factors",
    "to_original",
    "to_resized",
]
