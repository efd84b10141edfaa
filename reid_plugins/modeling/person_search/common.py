"""The detector skeleton shared by the one-step person-search meta-architectures.

:class:`~reid_plugins.methods.oim.model.OIMSearch` (OIM*) and
:class:`~reid_plugins.methods.tdn.model.TDN` both run a Faster R-CNN on **Part-1** of a
staged ResNet (``stem .. part1_end``) and re-identify with **Part-2** (the following stages up
to ``res5``). :class:`OneStepSearchBase` holds what they share: the config -> backbone / RPN /
detector (:class:`PersonSearchDetector`: RPN, RoI sampler, box post-processing) wiring, input normalisation, Part-1, RoIAlign on Part-1, the training pass of the
detection branch, the per-image detection post-processing and the query-box handling. The
subclasses add their RoI heads and re-ID branch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple

import torch
from torch import nn
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import roi_align

from ..backbone import build_backbone
from ..backbone.resnet import STAGE_NAMES
from .detector import (
    PersonSearchDetector,
    SampledRoIs,
    batch_scene_images,
    gt_targets,
    to_resized,
)

__all__ = ["DetectorTrainingPass", "OneStepSearchBase"]


@dataclass
class DetectorTrainingPass:
    """What :meth:`OneStepSearchBase.detector_training_pass` computed on a training batch.

    Attributes:
        images: the normalised, padded batch (``ImageList``).
        features: Part-1 feature map of ``images.tensors``.
        gt_boxes, gt_pids: per-image ground truth (resized-image coordinates).
        proposals: per-image RPN proposals.
        sampled: per-image :class:`SampledRoIs` of the proposal sampler.
        labels: ``(R,)`` 0/1 labels of all sampled RoIs (concatenated over the images).
        head_outputs: what the RoI-head callable returned (class logits and box deltas first).
        losses: ``loss_rpn_cls``, ``loss_rpn_reg``, ``loss_box_cls``, ``loss_box_reg``.
    """

    images: ImageList
    features: torch.Tensor
    gt_boxes: List[torch.Tensor]
    gt_pids: List[torch.Tensor]
    proposals: List[torch.Tensor]
    sampled: List[SampledRoIs]
    labels: torch.Tensor
    head_outputs: Tuple[torch.Tensor, ...]
    losses: Dict[str, torch.Tensor]


class OneStepSearchBase(nn.Module):
    """Base of the one-step person-search models: Faster R-CNN on Part-1, re-ID on Part-2.

    Subclasses set ``_arch_name`` (used in error messages) and call ``super().__init__``.

    Constructor (keyword-only):
        backbone: a ResNet exposing stages ``stem, res2..res5`` as attributes plus
            ``forward_stages(x, start, end)`` and ``stage_shape(name)``
            (:class:`~reid_plugins.modeling.backbone.resnet.ResNet`).
        detector: the :class:`~reid_plugins.modeling.person_search.detector.
            PersonSearchDetector` (RPN, RoI sampler, box coder, inference settings).
        pixel_mean, pixel_std: per-channel normalisation of the 0-255 RGB input.
        part1_end: last stage of Part-1; Part-2 = the later stages to ``res5``.
        size_divisibility: padded batch size multiple.

    The detector's modules are registered on the model under their historic names ``rpn`` and
    ``proposal_sampler`` (``model.rpn is model.detector.rpn``), so checkpoint keys are those of
    earlier versions (``rpn.*``); ``model.detector`` itself is not a second registration.

    Raises:
        TypeError: the backbone is not a staged ResNet.
        ValueError: ``part1_end`` leaves no stage for Part-2.
    """

    _arch_name = "OneStepSearchBase"

    def __init__(
        self,
        *,
        backbone: nn.Module,
        detector: PersonSearchDetector,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        part1_end: str,
        size_divisibility: int,
    ) -> None:
        super().__init__()
        for attr in ("forward_stages", "stage_shape"):
            if not hasattr(backbone, attr):
                raise TypeError(
                    f"{self._arch_name} needs a staged ResNet backbone with '{attr}' "
                    f"(MODEL.BACKBONE.NAME = build_resnet_backbone), got {type(backbone).__name__}"
                )
        if part1_end not in STAGE_NAMES[:-1]:
            raise ValueError(
                f"MODEL.PERSON_SEARCH.PART1_END='{part1_end}' must be one of "
                f"{list(STAGE_NAMES[:-1])} (Part-2 needs at least res5)"
            )
        self.backbone = backbone
        object.__setattr__(self, "detector", detector)  # its modules: registered just below
        self.rpn = detector.rpn
        self.proposal_sampler = detector.proposal_sampler
        self.part1_end = part1_end
        self.part2_start = STAGE_NAMES[STAGE_NAMES.index(part1_end) + 1]
        self.part1_stride = int(backbone.stage_shape(part1_end).stride)
        self.size_divisibility = int(size_divisibility)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def detector_kwargs(cls, cfg) -> Dict:
        """Constructor arguments of :class:`OneStepSearchBase` from
        ``MODEL.{BACKBONE, PERSON_SEARCH, PIXEL_MEAN, PIXEL_STD}``: the backbone, the
        :class:`PersonSearchDetector` (built once, on Part-1's shape) and the input settings.

        Raises:
            TypeError: ``MODEL.BACKBONE.NAME`` does not build a staged ResNet.
        """
        ps = cfg.MODEL.PERSON_SEARCH
        backbone = build_backbone(cfg)
        if not hasattr(backbone, "stage_shape"):
            raise TypeError(
                f"MODEL.BACKBONE.NAME='{cfg.MODEL.BACKBONE.NAME}' does not build a staged ResNet; "
                f"{cls._arch_name} needs build_resnet_backbone"
            )
        shape = backbone.stage_shape(ps.PART1_END)
        return dict(
            backbone=backbone,
            detector=PersonSearchDetector.from_config(
                cfg, in_channels=shape.channels, stride=shape.stride
            ),
            pixel_mean=cfg.MODEL.PIXEL_MEAN,
            pixel_std=cfg.MODEL.PIXEL_STD,
            part1_end=ps.PART1_END,
            size_divisibility=ps.SIZE_DIVISIBILITY,
        )

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # ------------------------------------------------------------------ building blocks
    def preprocess(self, batched_inputs: List[Dict]) -> ImageList:
        """Normalised, padded image batch (torchvision ``ImageList``)."""
        images = [x["image"].to(self.device, non_blocking=True) for x in batched_inputs]
        return batch_scene_images(images, self.pixel_mean, self.pixel_std, self.size_divisibility)

    def part1(self, images: torch.Tensor) -> torch.Tensor:
        """Part-1 (``stem .. part1_end``) feature map of a normalised image batch."""
        return self.backbone.forward_stages(images, "stem", self.part1_end)

    def _roi_align(
        self, features: torch.Tensor, boxes: List[torch.Tensor], size, sampling_ratio: int
    ) -> torch.Tensor:
        """RoIAlign ``(R, C, *size)`` of per-image boxes (resized-image coordinates) on
        Part-1 features."""
        return roi_align(
            features,
            [b.to(features.dtype) for b in boxes],
            output_size=tuple(size),
            spatial_scale=1.0 / self.part1_stride,
            sampling_ratio=sampling_ratio,
            aligned=True,
        )

    def postprocess_batch(
        self,
        proposals: List[torch.Tensor],
        image_sizes: List[Tuple[int, int]],
        class_logits: torch.Tensor,
        box_deltas: torch.Tensor,
    ) -> List[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The detector's :meth:`PersonSearchDetector.postprocess` (inference settings)."""
        return self.detector.postprocess(proposals, image_sizes, class_logits, box_deltas)

    def query_boxes(self, batched_inputs: List[Dict]) -> List[torch.Tensor]:
        """Each input's ``"query_box"`` (original coordinates) as a ``(1, 4)`` box in the
        resized image.

        Raises:
            KeyError: an input has no ``"query_box"``.
        """
        boxes = []
        for x in batched_inputs:
            if "query_box" not in x:
                raise KeyError(
                    f"extract_query: input '{x.get('image_id', '?')}' has no 'query_box'"
                )
            box = torch.as_tensor(x["query_box"], dtype=torch.float32, device=self.device)
            boxes.append(to_resized(box.reshape(1, 4), x))
        return boxes

    # ------------------------------------------------------------------ training
    def detector_training_pass(
        self, batched_inputs: List[Dict], roi_head: Callable[..., Tuple[torch.Tensor, ...]]
    ) -> DetectorTrainingPass:
        """Training pass of the detection branch: Part-1, RPN (with its losses), RoI sampling,
        ``roi_head(features, sampled boxes per image)`` (returning class logits and box deltas
        first) and the Fast R-CNN losses of the sampled RoIs."""
        images = self.preprocess(batched_inputs)
        features = self.part1(images.tensors)
        gt_boxes, gt_pids = gt_targets(batched_inputs, self.device)
        proposals, rpn_losses = self.rpn(
            images, {"part1": features}, [{"boxes": b} for b in gt_boxes]
        )
        sampled = self.proposal_sampler(proposals, gt_boxes, gt_pids)
        head_outputs = roi_head(features, [s.boxes for s in sampled])
        labels = torch.cat([s.labels for s in sampled])
        losses = {
            "loss_rpn_cls": rpn_losses["loss_objectness"],
            "loss_rpn_reg": rpn_losses["loss_rpn_box_reg"],
        }
        losses.update(self.detector.fast_rcnn_losses(head_outputs[0], head_outputs[1], sampled))
        return DetectorTrainingPass(
            images, features, gt_boxes, gt_pids, proposals, sampled, labels, head_outputs, losses
        )
