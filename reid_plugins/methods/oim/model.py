"""``OIMSearch``: the one-step person-search baseline "OIM*" of TDN (Table II).

Faster R-CNN with the whole backbone shared by detection and re-identification (Xiao et al.,
"Joint Detection and Identification Feature Learning for Person Search", CVPR 2017), as
re-implemented by TDN: ResNet50-IBN-a split after conv3_x.

* **Part-1** = ``stem .. PART1_END`` (conv1..conv3_x: stride 8, 512 channels for ResNet-50)
  on the padded image batch -> RPN (torchvision) -> proposals.
* **Part-2** = the following stages up to ``res5``, run on the RoIAlign features
  (``POOLER_RESOLUTION``, default 32 x 16 as in TDN Table VII) of **all** RoIs: the 128
  sampled RoIs per image in training, every proposal after the RPN NMS at inference
  (the cost TDN removes).
* Part-2 -> global average pooling -> person classification (2-way softmax), box regression
  (4 deltas) and the embedding FC -> BN -> L2 norm (``EMBEDDING_DIM``, 256).
* OIM loss (:class:`~reid_plugins.modeling.losses.OIMLoss`) on the embeddings of the person
  RoIs (IoU >= ``FG_IOU_THRESH`` with a box): labelled RoIs are classified against the
  lookup table, unlabelled ones (pid -1) feed the circular queue; background RoIs are
  excluded. The tables are buffers (no gradients).

Training losses: ``loss_rpn_cls``, ``loss_rpn_reg`` (torchvision RPN), ``loss_box_cls``,
``loss_box_reg``, ``loss_oim``. Inference (eval mode), one dict per input (the
:class:`~reid_plugins.evaluation.PersonSearchEvaluator` contract)::

    {"boxes": (K, 4) in ORIGINAL image coordinates, "scores": (K,), "features": (K, D)}

after ``SCORE_THRESH_TEST``, NMS (``NMS_THRESH_TEST``) and ``DETECTIONS_PER_IMAGE``; a
detection's feature is the embedding of the proposal it was regressed from.
:meth:`OIMSearch.extract_query` returns ``{"query_feature": (D,)}`` for the given
``"query_box"`` (original coordinates): Part-1 on the query image, RoIAlign of the box,
Part-2, embedding.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from reid_plugins.modeling.meta_arch.build import META_ARCH_REGISTRY
from reid_plugins.modeling.person_search import PersonSearchDetector, to_original
from reid_plugins.modeling.person_search.common import OneStepSearchBase

from .loss import OIMLoss

__all__ = ["OIMSearch"]

logger = logging.getLogger(__name__)


@META_ARCH_REGISTRY.register()
class OIMSearch(OneStepSearchBase):
    """OIM* one-step person search (see the module docstring).

    The detector skeleton (Part-1, RPN, RoI sampling, post-processing) is
    :class:`~reid_plugins.modeling.person_search.common.OneStepSearchBase`.

    Constructor (keyword-only):
        backbone: a ResNet exposing stages ``stem, res2..res5`` as attributes plus
            ``forward_stages(x, start, end)`` and ``stage_shape(name)``
            (:class:`~reid_plugins.modeling.backbone.resnet.ResNet`).
        detector: :class:`~reid_plugins.modeling.person_search.PersonSearchDetector` (RPN on
            Part-1, RoI sampler, box coder, inference score / NMS / number of boxes).
        oim_loss: :class:`OIMLoss` on ``embedding_dim`` features, or None (no re-ID loss).
        pixel_mean, pixel_std: per-channel normalisation of the 0-255 RGB input.
        part1_end: last stage of Part-1 (``"res3"``); Part-2 = the later stages to ``res5``.
        embedding_dim: re-ID feature size.
        size_divisibility: padded batch size multiple.
        pooler_resolution: RoIAlign ``(height, width)``; pooler_sampling_ratio: its sampling.
    """

    _arch_name = "OIMSearch"

    def __init__(
        self,
        *,
        backbone: nn.Module,
        detector: PersonSearchDetector,
        oim_loss: Optional[OIMLoss],
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        part1_end: str = "res3",
        embedding_dim: int = 256,
        size_divisibility: int = 32,
        pooler_resolution: Tuple[int, int] = (32, 16),
        pooler_sampling_ratio: int = 2,
    ) -> None:
        super().__init__(
            backbone=backbone,
            detector=detector,
            pixel_mean=pixel_mean,
            pixel_std=pixel_std,
            part1_end=part1_end,
            size_divisibility=size_divisibility,
        )
        if len(pooler_resolution) != 2:
            raise ValueError(
                "MODEL.PERSON_SEARCH.ROI_HEADS.POOLER_RESOLUTION must be [height, width], got "
                f"{list(pooler_resolution)}"
            )
        if oim_loss is not None and oim_loss.feat_dim != embedding_dim:
            raise ValueError(
                f"OIM loss feat_dim {oim_loss.feat_dim} != EMBEDDING_DIM {embedding_dim}"
            )
        self.oim_loss = oim_loss
        channels = int(backbone.stage_shape("res5").channels)
        self.pooler_resolution = (int(pooler_resolution[0]), int(pooler_resolution[1]))
        self.pooler_sampling_ratio = int(pooler_sampling_ratio)
        self.embedding_dim = int(embedding_dim)

        self.cls_score = nn.Linear(channels, 2)
        self.bbox_pred = nn.Linear(channels, 4)
        self.embedding = nn.Sequential(
            nn.Linear(channels, self.embedding_dim), nn.BatchNorm1d(self.embedding_dim)
        )
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.normal_(self.embedding[0].weight, std=0.01)
        for layer in (self.cls_score, self.bbox_pred, self.embedding[0]):
            nn.init.zeros_(layer.bias)

    @classmethod
    def from_config(cls, cfg, num_pids_per_domain: Optional[Sequence[int]] = None) -> "OIMSearch":
        """Build from ``MODEL.{BACKBONE, PERSON_SEARCH, LOSSES.OIM, PIXEL_MEAN, PIXEL_STD}``.

        The OIM lookup-table size is ``MODEL.LOSSES.OIM.NUM_PIDS`` if > 0, else the labelled
        identities of the training sets (``sum(num_pids_per_domain)``, from the trainer).
        Without either the model is built for inference (no OIM loss).
        """
        num_pids = None if num_pids_per_domain is None else sum(num_pids_per_domain)
        kwargs = cls.detector_kwargs(cfg)
        ps = cfg.MODEL.PERSON_SEARCH
        oim = None
        if cfg.MODEL.LOSSES.OIM.ENABLED:
            if int(cfg.MODEL.LOSSES.OIM.NUM_PIDS) > 0 or num_pids is not None:
                oim = OIMLoss.from_config(cfg, feat_dim=ps.EMBEDDING_DIM, num_pids=num_pids)
        return cls(
            **kwargs,
            oim_loss=oim,
            embedding_dim=ps.EMBEDDING_DIM,
            pooler_resolution=tuple(ps.ROI_HEADS.POOLER_RESOLUTION),
            pooler_sampling_ratio=ps.ROI_HEADS.POOLER_SAMPLING_RATIO,
        )

    # ------------------------------------------------------------------ building blocks
    def part2(self, roi_features: torch.Tensor) -> torch.Tensor:
        """Part-2 (``part2_start .. res5``) on RoI features, then global average pooling."""
        x = self.backbone.forward_stages(roi_features, self.part2_start, "res5")
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def roi_features(self, features: torch.Tensor, boxes: List[torch.Tensor]) -> torch.Tensor:
        """RoIAlign of per-image boxes (resized-image coordinates) on Part-1 features."""
        return self._roi_align(features, boxes, self.pooler_resolution, self.pooler_sampling_ratio)

    def box_head(self, features: torch.Tensor, boxes: List[torch.Tensor]):
        """``(class_logits (R, 2), box_deltas (R, 4), embeddings (R, D))`` of all ``boxes``:
        RoIAlign -> Part-2 -> GAP -> classification / regression / FC-BN-L2 embedding."""
        pooled = self.part2(self.roi_features(features, boxes))
        emb = F.normalize(self.embedding(pooled), dim=1)
        return self.cls_score(pooled), self.bbox_pred(pooled), emb

    # ------------------------------------------------------------------ forward
    def forward(self, batched_inputs: List[Dict]):
        """Losses (training) or detections (eval); see the module docstring."""
        if not self.training:
            return self.inference(batched_inputs)
        step = self.detector_training_pass(batched_inputs, self.box_head)
        losses = step.losses
        if self.oim_loss is not None:
            fg = step.labels == 1
            pids = torch.cat([s.pids for s in step.sampled])[fg]
            losses["loss_oim"] = self.oim_loss(step.head_outputs[2][fg], pids)
        return losses

    def analysis_parts(self, image_hw, num_rois: int = 128, num_boxes: int = 10):
        """Declared parts for ``tools/analyze_model.py`` (contract and counting rules:
        :mod:`reid_plugins.modeling.analysis`)."""
        from reid_plugins.modeling.analysis import person_search_parts

        return person_search_parts(self, image_hw, num_rois, num_boxes)

    @torch.no_grad()
    def inference(self, batched_inputs: List[Dict]) -> List[Dict[str, torch.Tensor]]:
        """One ``{"boxes", "scores", "features"}`` per input (boxes in original coordinates)."""
        images = self.preprocess(batched_inputs)
        features = self.part1(images.tensors)
        proposals, _ = self.rpn(images, {"part1": features})
        counts = [len(p) for p in proposals]
        if sum(counts) == 0:
            logits = features.new_zeros((0, 2))
            deltas = features.new_zeros((0, 4))
            emb = features.new_zeros((0, self.embedding_dim))
        else:
            logits, deltas, emb = self.box_head(features, proposals)
        detections = self.postprocess_batch(proposals, images.image_sizes, logits, deltas)
        return [
            {"boxes": to_original(boxes, x), "scores": scores, "features": em[keep]}
            for x, (boxes, scores, keep), em in zip(batched_inputs, detections, emb.split(counts))
        ]

    @torch.no_grad()
    def extract_query(self, batched_inputs: List[Dict]) -> List[Dict[str, torch.Tensor]]:
        """``[{"query_feature": (D,)}]``: embedding of each input's ``"query_box"`` (original
        coordinates, rescaled like the image) through Part-1, RoIAlign and Part-2.

        Raises:
            KeyError: an input has no ``"query_box"``.
        """
        boxes = self.query_boxes(batched_inputs)
        images = self.preprocess(batched_inputs)
        features = self.part1(images.tensors)
        _, _, emb = self.box_head(features, boxes)
        return [{"query_feature": e} for e in emb]
