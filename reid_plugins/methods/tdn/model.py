"""``TDN``: Teacher-guided Disentangling Networks for one-step person search.

Liu et al., "Making Person Search Enjoy the Merits of Person Re-identification" (TDN).
ResNet50-IBN-a split after conv3_x:

* **Part-1** = ``stem .. PART1_END`` (conv1..conv3_x, stride 8, 512 channels), shared by the
  detection and the re-ID branch.
* **Detection branch**: torchvision RPN on Part-1 (anchor sizes 4, 8, 16, 32 x stride, aspect
  ratios 1, 2, 3 as height / width), RoIAlign 7 x 7 x 512, :class:`TDNBoxHead` (2 FC of 1024
  -> person score + box deltas), NMS.
* **Re-ID branch**, run **only on the final boxes** (inference: detections with score >=
  ``SCORE_THRESH_TEST`` (0.5) after NMS; training, ``MODEL.TDN.REID.TRAIN_ROIS``: by default
  the same final boxes of the detection branch, kept when they match a labelled or unlabelled
  person with IoU >= ``TRAIN_DETECTION_IOU``; or ``gt_and_proposals``: the ground-truth boxes
  plus RPN proposals matched to them): RoIAlign of Part-1 to 32 x 16 x 512 **plus** the
  :class:`KnowledgeTransferBridge` (RoIAlign of the input image to 256 x 128 x 3 through an
  unshared copy of Part-1), then **Part-2** (conv4_x..conv5_x with the standard stride-2
  conv5) -> GAP -> BN -> feature (2048-d) -> softmax identity classifier (labelled boxes).
* **Teacher branch** (training only): a frozen ReID model fed with the same 0-255 crops;
  ``L_t = mean_RoIs ||f_s - f_t||^2`` of L2-normalised features over all re-ID RoIs
  (labelled and unlabelled) (Eq. 2).

Losses: ``loss_rpn_cls``, ``loss_rpn_reg``, ``loss_box_cls``, ``loss_box_reg`` (L_det),
``loss_reid_ce`` (L_ce, labelled RoIs) and ``loss_teacher`` (``w * L_t``; ``w`` is
:attr:`TDN.teacher_weight`, set every iteration by
:class:`~reid_plugins.methods.tdn.trainer.TeacherWeightHook` from Eq. 4).

The teacher is **not** a sub-module: it is not returned by ``parameters()`` (so never in the
optimizer nor DDP), not in ``state_dict()`` (student checkpoints do not carry it), stays in eval mode when
``model.train()`` is called and runs under ``torch.no_grad()``; ``model.to(device)`` moves it. It
exists only in training: ``TDN.from_config`` never builds it (evaluation, demo, export,
benchmarks and analysis never read ``MODEL.TDN.TEACHER.WEIGHTS``);
:class:`~reid_plugins.methods.tdn.trainer.TDNTrainer` builds it from
``MODEL.TDN.TEACHER.{CONFIG_FILE, WEIGHTS}`` and attaches it with :meth:`TDN.set_teacher`.

Inference (eval mode), one dict per input (the PersonSearchEvaluator contract)::

    {"boxes": (K, 4) ORIGINAL image coordinates, "scores": (K,), "features": (K, D)}

features L2-normalised. :meth:`TDN.extract_query` returns ``{"query_feature": (D,)}`` of
``"query_box"`` and, with ``MODEL.TDN.REID.QUERY_CONTEXT``, the query image's detections
(``"boxes"``, ``"scores"``, ``"features"``): the context persons of RCP ranking
(``TEST.SEARCH.RCP``).
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import box_iou

from reid_plugins.modeling.losses import CrossEntropyLoss
from reid_plugins.modeling.meta_arch.build import META_ARCH_REGISTRY
from reid_plugins.modeling.person_search import PersonSearchDetector, to_original
from reid_plugins.modeling.person_search.common import OneStepSearchBase

from .heads import (
    KnowledgeTransferBridge,
    ReIDNeck,
    TDNBoxHead,
    crop_boxes,
)
from .teacher import freeze_teacher, teacher_feature_dim, teacher_features

__all__ = ["TDN", "TRAIN_ROIS"]

#: Choices of ``MODEL.TDN.REID.TRAIN_ROIS`` (see :meth:`TDN.reid_training_rois`).
TRAIN_ROIS = ("detections", "gt_and_proposals")

logger = logging.getLogger(__name__)


@META_ARCH_REGISTRY.register()
class TDN(OneStepSearchBase):
    """TDN one-step person search (see the module docstring).

    The detector skeleton (Part-1, RPN, RoI sampling, post-processing) is
    :class:`~reid_plugins.modeling.person_search.common.OneStepSearchBase`.

    Constructor (keyword-only):
        backbone: staged ResNet (``stem, res2..res5``, ``forward_stages``, ``stage_shape``);
            Part-1 = ``stem..part1_end``, Part-2 = the following stages to ``res5``.
        detector: :class:`~reid_plugins.modeling.person_search.PersonSearchDetector` (RPN on
            Part-1, RoI sampler, box coder, inference score / NMS / number of boxes).
        box_head: :class:`TDNBoxHead` (its ``resolution`` is the RoIAlign size).
        neck: :class:`ReIDNeck` on the Part-2 output (classifier = identities; 0 = no L_ce).
        pixel_mean, pixel_std: normalisation of the 0-255 RGB input.
        ktb: :class:`KnowledgeTransferBridge` or None (TDN w/o KTB).
        teacher: frozen ReID model or None (no L_t); ``teacher_input_size`` = its crop size.
        projection: optional ``nn.Linear`` from the student to the teacher feature size.
        part1_end: last stage of Part-1 (``"res3"``).
        size_divisibility: padded batch size multiple.
        box_sampling_ratio: RoIAlign sampling of the RoI head.
        reid_resolution, reid_sampling_ratio: RoIAlign of Part-1 for the re-ID branch
            (32 x 16; must equal the KTB output).
        ce_weight, ce_epsilon: L_ce multiplier and label smoothing.
        train_rois: re-ID training RoIs, ``"detections"`` (the detection branch's final boxes
            matched to persons, :meth:`detection_rois`; the paper's rule) or
            ``"gt_and_proposals"`` (:meth:`gt_and_proposal_rois`).
        train_detection_iou: IoU with a person for a detection to be a re-ID training RoI.
        train_proposals_per_image, train_proposal_iou: ``gt_and_proposals``: matched RPN
            proposals added to the ground-truth boxes.
        query_context: ``extract_query`` also runs the detector on the query image and returns
            its detections (RCP's context persons); from the config only when
            ``MODEL.TDN.REID.QUERY_CONTEXT`` and ``TEST.SEARCH.RCP.ENABLED`` (without RCP the
            query pass is Part-1 + the re-ID branch on the query box, no detector).
        teacher_weight: initial ``w`` of ``w * L_t``.
    """

    _arch_name = "TDN"

    def __init__(
        self,
        *,
        backbone: nn.Module,
        detector: PersonSearchDetector,
        box_head: TDNBoxHead,
        neck: ReIDNeck,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        ktb: Optional[KnowledgeTransferBridge] = None,
        teacher: Optional[nn.Module] = None,
        teacher_input_size: Optional[Sequence[int]] = None,
        projection: Optional[nn.Module] = None,
        part1_end: str = "res3",
        size_divisibility: int = 32,
        box_sampling_ratio: int = 2,
        reid_resolution: Sequence[int] = (32, 16),
        reid_sampling_ratio: int = 2,
        ce_weight: float = 1.0,
        ce_epsilon: float = 0.0,
        train_rois: str = "detections",
        train_detection_iou: float = 0.5,
        train_proposals_per_image: int = 8,
        train_proposal_iou: float = 0.5,
        query_context: bool = True,
        teacher_weight: float = 5.0,
    ) -> None:
        super().__init__(
            backbone=backbone,
            detector=detector,
            pixel_mean=pixel_mean,
            pixel_std=pixel_std,
            part1_end=part1_end,
            size_divisibility=size_divisibility,
        )
        self.reid_resolution = (int(reid_resolution[0]), int(reid_resolution[1]))
        if ktb is not None and tuple(ktb.output_size) != self.reid_resolution:
            raise ValueError(
                f"KTB output {ktb.output_size} (MODEL.TDN.KTB.INPUT_SIZE / Part-1 stride) must "
                f"equal the re-ID RoIAlign size {self.reid_resolution} "
                "(MODEL.PERSON_SEARCH.ROI_HEADS.POOLER_RESOLUTION)"
            )
        if ktb is not None and any(p is q for p in ktb.parameters() for q in backbone.parameters()):
            raise ValueError("The KTB must not share parameters with Part-1: build a new backbone")
        self.box_head = box_head
        self.neck = neck
        self.ktb = ktb
        self.projection = projection
        self.feature_dim = int(backbone.stage_shape("res5").channels)
        self.box_sampling_ratio = int(box_sampling_ratio)
        self.reid_sampling_ratio = int(reid_sampling_ratio)
        self.ce_loss = (
            CrossEntropyLoss(epsilon=ce_epsilon, weight=ce_weight)
            if neck.num_classes > 0 and ce_weight > 0
            else None
        )
        if train_rois not in TRAIN_ROIS:
            raise ValueError(
                f"MODEL.TDN.REID.TRAIN_ROIS='{train_rois}' must be one of {list(TRAIN_ROIS)}"
            )
        self.train_rois = str(train_rois)
        self.train_detection_iou = float(train_detection_iou)
        self.train_proposals_per_image = int(train_proposals_per_image)
        self.train_proposal_iou = float(train_proposal_iou)
        self.query_context = bool(query_context)
        self.teacher_weight = float(teacher_weight)
        # The teacher lives outside the module tree (see the module docstring).
        object.__setattr__(self, "_teacher", None)
        self.teacher_input_size: Optional[Tuple[int, int]] = None
        if teacher is not None:
            self.set_teacher(teacher, teacher_input_size or (ktb.input_size if ktb else None))

    # ------------------------------------------------------------------ config
    @classmethod
    def from_config(cls, cfg, num_pids_per_domain: Optional[Sequence[int]] = None) -> "TDN":
        """Build from ``MODEL.{BACKBONE, PERSON_SEARCH, TDN, PIXEL_MEAN, PIXEL_STD}``.

        The classifier size is ``MODEL.TDN.REID.NUM_PIDS`` if > 0, else the labelled
        identities of the training sets (``sum(num_pids_per_domain)``, from the trainer; None:
        no classifier). The teacher is never built here (inference never needs it):
        :class:`~reid_plugins.methods.tdn.trainer.TDNTrainer` builds it from
        ``MODEL.TDN.TEACHER`` and attaches it with :meth:`set_teacher` for training.
        """
        kwargs = cls.detector_kwargs(cfg)
        ps, t = cfg.MODEL.PERSON_SEARCH, cfg.MODEL.TDN
        backbone = kwargs["backbone"]
        shape = backbone.stage_shape(ps.PART1_END)
        box_head = TDNBoxHead.from_config(cfg, in_channels=shape.channels)
        if int(t.REID.NUM_PIDS) > 0:
            num_pids = int(t.REID.NUM_PIDS)
        elif num_pids_per_domain is not None and t.REID.CE_WEIGHT > 0:
            num_pids = sum(int(n) for n in num_pids_per_domain)
        else:
            num_pids = 0
        neck = ReIDNeck.from_config(
            cfg, feat_dim=backbone.stage_shape("res5").channels, num_classes=num_pids
        )
        # the KTB: a second backbone cut after Part-1 (same initialisation, own tensors)
        ktb = KnowledgeTransferBridge.from_config(cfg) if t.KTB.ENABLED else None
        return cls(
            **kwargs,
            box_head=box_head,
            neck=neck,
            ktb=ktb,
            box_sampling_ratio=t.BOX_HEAD.POOLER_SAMPLING_RATIO,
            reid_resolution=ps.ROI_HEADS.POOLER_RESOLUTION,
            reid_sampling_ratio=ps.ROI_HEADS.POOLER_SAMPLING_RATIO,
            ce_weight=t.REID.CE_WEIGHT,
            ce_epsilon=t.REID.CE_EPSILON,
            train_rois=t.REID.TRAIN_ROIS,
            train_detection_iou=t.REID.TRAIN_DETECTION_IOU,
            train_proposals_per_image=t.REID.TRAIN_PROPOSALS_PER_IMAGE,
            train_proposal_iou=t.REID.TRAIN_PROPOSAL_IOU,
            query_context=bool(t.REID.QUERY_CONTEXT and cfg.TEST.SEARCH.RCP.ENABLED),
            teacher_weight=t.TEACHER.W_INIT,
        )

    # ------------------------------------------------------------------ teacher handling
    @property
    def teacher(self) -> Optional[nn.Module]:
        """The frozen teacher (not a sub-module), or None."""
        return self._teacher

    def set_teacher(
        self, teacher: Optional[nn.Module], input_size=None, *, projection: bool = False
    ) -> None:
        """Attach (or, with None, remove) the frozen teacher; ``input_size`` = its crops'
        ``(h, w)``.

        When the teacher's feature size differs from the student's, ``projection=True`` adds a
        trainable ``nn.Linear`` (student -> teacher size) for ``L_t`` as the sub-module
        ``projection`` (call before building the optimizer); otherwise that is an error.

        Raises:
            ValueError: no ``input_size``, or feature sizes differ without ``projection``.
        """
        if teacher is not None:
            if input_size is None:
                raise ValueError("set_teacher: give the teacher's input size (h, w)")
            freeze_teacher(teacher).to(self.device)
            size = (int(input_size[0]), int(input_size[1]))
            dim = teacher_feature_dim(teacher, size, self.device)
            if projection and self.projection is None:
                self.projection = nn.Linear(self.neck.feat_dim, dim).to(self.device)
            elif not projection and self.projection is None and dim != self.neck.feat_dim:
                raise ValueError(
                    f"Teacher feature size {dim} != student feature size {self.neck.feat_dim}: "
                    "use a teacher of the same size or set MODEL.TDN.TEACHER.PROJECTION True"
                )
            self.teacher_input_size = size
        object.__setattr__(self, "_teacher", teacher)

    def set_teacher_weight(self, weight: float) -> None:
        """Set ``w`` of ``w * L_t`` (called by ``TeacherWeightHook`` every iteration)."""
        self.teacher_weight = float(weight)

    def train(self, mode: bool = True) -> "TDN":
        super().train(mode)
        if self._teacher is not None:
            self._teacher.eval()  # the teacher never trains (BN statistics included)
        return self

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        if self._teacher is not None:
            self._teacher._apply(fn, *args, **kwargs)
        return self

    # ------------------------------------------------------------------ building blocks
    def part2(self, x: torch.Tensor) -> torch.Tensor:
        """Part-2 (``part2_start .. res5``) of re-ID RoI feature maps."""
        return self.backbone.forward_stages(x, self.part2_start, "res5")

    def box_predictions(self, features: torch.Tensor, boxes: List[torch.Tensor]):
        """``(class_logits, box_deltas)`` of the RoI head for per-image ``boxes``."""
        pooled = self._roi_align(features, boxes, self.box_head.resolution, self.box_sampling_ratio)
        return self.box_head(pooled)

    def detect(self, images, features: torch.Tensor) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Inference detection branch: RPN -> RoI head -> score threshold, NMS; per image
        ``(boxes (K, 4) resized-image coordinates, scores (K,))``."""
        proposals, _ = self.rpn(images, {"part1": features})
        counts = [len(p) for p in proposals]
        if sum(counts) == 0:
            return [(p.new_zeros((0, 4)), p.new_zeros((0,))) for p in proposals]
        logits, deltas = self.box_predictions(features, proposals)
        detections = self.postprocess_batch(proposals, images.image_sizes, logits, deltas)
        return [(boxes, scores) for boxes, scores, _ in detections]

    def image_crops(self, images: torch.Tensor, boxes: List[torch.Tensor], size) -> torch.Tensor:
        """Normalised image crops ``(R, 3, h, w)`` of the boxes (RoIAlign of the image)."""
        sampling = self.ktb.sampling_ratio if self.ktb is not None else 2
        return crop_boxes(images, boxes, size, sampling)

    def reid_branch(
        self, images: torch.Tensor, features: torch.Tensor, boxes: List[torch.Tensor]
    ) -> Dict[str, torch.Tensor]:
        """Re-ID branch on per-image ``boxes`` (resized-image coordinates).

        Returns the :class:`ReIDNeck` outputs (``"feature"`` post-BN, ``"pre_bn"``,
        ``"logits"``) plus ``"crops"`` (the normalised KTB crops, when the KTB is on).
        """
        x = self._roi_align(features, boxes, self.reid_resolution, self.reid_sampling_ratio)
        crops = None
        if self.ktb is not None:
            crops = self.ktb.crop(images, boxes)
            x = x + self.ktb(crops)
        out = self.neck(self.part2(x))
        if crops is not None:
            out["crops"] = crops
        return out

    def embed(
        self, images: torch.Tensor, features: torch.Tensor, boxes: List[torch.Tensor]
    ) -> torch.Tensor:
        """L2-normalised re-ID features ``(sum K_i, D)`` of the boxes (inference)."""
        if sum(len(b) for b in boxes) == 0:
            return features.new_zeros((0, self.feature_dim))
        return F.normalize(self.reid_branch(images, features, boxes)["feature"], dim=1)

    # ------------------------------------------------------------------ training
    def reid_training_rois(self, step) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """Re-ID training RoIs of a :class:`DetectorTrainingPass` per ``train_rois``:
        ``"detections"`` -> :meth:`detection_rois` of :meth:`training_detections` (the paper's
        rule), ``"gt_and_proposals"`` -> :meth:`gt_and_proposal_rois`. Returns ``(boxes per
        image, pids (sum R_i,))``."""
        if self.train_rois == "detections":
            dets = self.training_detections(step.images, step.features, step.proposals)
            return self.detection_rois(dets, step.gt_boxes, step.gt_pids)
        return self.gt_and_proposal_rois(step.proposals, step.gt_boxes, step.gt_pids)

    @torch.no_grad()
    def training_detections(self, images, features, proposals) -> List[torch.Tensor]:
        """The detection branch's final boxes on a training batch, exactly as at inference
        (RoI head on the RPN proposals, score >= the detector's
        ``score_thresh_test``, NMS ``nms_thresh_test``, ``detections_per_image``), detached."""
        if sum(len(p) for p in proposals) == 0:
            return [p.new_zeros((0, 4)) for p in proposals]
        props = [p.detach() for p in proposals]
        logits, deltas = self.box_predictions(features.detach(), props)
        dets = self.postprocess_batch(props, images.image_sizes, logits, deltas)
        return [boxes for boxes, _, _ in dets]

    def detection_rois(
        self, detections: List[torch.Tensor], gt_boxes: List[torch.Tensor], gt_pids
    ) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """Re-ID training RoIs = the detections that find a person: detection ``d`` takes the
        pid (labelled >= 0 or unlabelled -1) of its highest-IoU ground-truth box ``g`` when
        ``IoU(d, g) >= train_detection_iou``; other detections (background) are dropped.
        Several detections may take the same person. Returns ``(boxes per image, pids)``."""
        boxes, pids = [], []
        for dets, gt, p in zip(detections, gt_boxes, gt_pids):
            if len(dets) == 0 or len(gt) == 0:
                boxes.append(dets.new_zeros((0, 4)))
                pids.append(p.new_zeros((0,)))
                continue
            best, idx = box_iou(dets, gt).max(dim=1)
            keep = best >= self.train_detection_iou
            boxes.append(dets[keep])
            pids.append(p[idx[keep]])
        return boxes, torch.cat(pids)

    def gt_and_proposal_rois(
        self,
        proposals: List[torch.Tensor],
        gt_boxes: List[torch.Tensor],
        gt_pids: List[torch.Tensor],
    ) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """``TRAIN_ROIS: gt_and_proposals``: all ground-truth boxes + at most
        ``train_proposals_per_image`` random RPN proposals with IoU >= ``train_proposal_iou``
        with a ground-truth box (detached; each takes the pid of its best box: labelled >= 0
        or unlabelled -1). Returns ``(boxes per image, pids (sum R_i,))``."""
        boxes, pids = [], []
        k = self.train_proposals_per_image
        for props, gt, p in zip(proposals, gt_boxes, gt_pids):
            b, q = [gt], [p]
            if k > 0 and len(gt) and len(props):
                props = props.detach()
                best, idx = box_iou(props, gt).max(dim=1)
                cand = torch.where(best >= self.train_proposal_iou)[0]
                if len(cand) > k:
                    cand = cand[torch.randperm(len(cand), device=cand.device)[:k]]
                b.append(props[cand])
                q.append(p[idx[cand]])
            boxes.append(torch.cat(b))
            pids.append(torch.cat(q))
        return boxes, torch.cat(pids)

    def reid_losses(
        self, images: torch.Tensor, features: torch.Tensor, boxes: List[torch.Tensor], pids
    ) -> Dict[str, torch.Tensor]:
        """``loss_reid_ce`` (labelled RoIs) and ``loss_teacher`` (``w * L_t``, all RoIs)."""
        out = self.reid_branch(images, features, boxes)
        losses: Dict[str, torch.Tensor] = {}
        if self.ce_loss is not None:
            labelled = pids >= 0
            if bool(labelled.any()):
                top = int(pids[labelled].max())
                if top >= self.neck.num_classes:
                    raise ValueError(
                        f"Training pid {top} >= MODEL.TDN.REID.NUM_PIDS ({self.neck.num_classes})"
                    )
                losses["loss_reid_ce"] = self.ce_loss(out["logits"][labelled], pids[labelled])
            else:
                losses["loss_reid_ce"] = out["logits"].sum() * 0.0
        if self._teacher is not None:
            size = self.teacher_input_size
            crops = out.get("crops")
            if crops is None or tuple(crops.shape[-2:]) != tuple(size):
                crops = self.image_crops(images, boxes, size)
            raw = crops.detach() * self.pixel_std + self.pixel_mean  # back to 0-255 RGB
            f_t = teacher_features(self._teacher, raw)
            f_s = out["feature"] if self.projection is None else self.projection(out["feature"])
            f_s = F.normalize(f_s, dim=1)
            l_t = (f_s - f_t).pow(2).sum(dim=1).mean()
            losses["loss_teacher"] = self.teacher_weight * l_t
        return losses

    def forward(self, batched_inputs: List[Dict]):
        """Losses (training) or detections (eval); see the module docstring."""
        if not self.training:
            return self.inference(batched_inputs)
        step = self.detector_training_pass(batched_inputs, self.box_predictions)
        losses = step.losses
        boxes, pids = self.reid_training_rois(step)
        if sum(len(b) for b in boxes) > 0:
            losses.update(self.reid_losses(step.images.tensors, step.features, boxes, pids))
        else:  # no person RoI in the batch (e.g. no detection yet): the same keys, zero
            zero = step.features.sum() * 0.0
            if self.ce_loss is not None:
                losses["loss_reid_ce"] = zero
            if self._teacher is not None:
                losses["loss_teacher"] = zero
        return losses

    # ------------------------------------------------------------------ inference
    def analysis_parts(self, image_hw, num_rois: int = 128, num_boxes: int = 10):
        """Declared parts for ``tools/analyze_model.py`` (contract and counting rules:
        :mod:`reid_plugins.modeling.analysis`)."""
        from reid_plugins.modeling.analysis import person_search_parts

        return person_search_parts(self, image_hw, num_rois, num_boxes)

    @torch.no_grad()
    def inference(self, batched_inputs: List[Dict]) -> List[Dict[str, torch.Tensor]]:
        """One ``{"boxes", "scores", "features"}`` per input (boxes in original coordinates);
        Part-2 runs only on the final detections."""
        images = self.preprocess(batched_inputs)
        features = self.part1(images.tensors)
        dets = self.detect(images, features)
        return self._results(batched_inputs, images.tensors, features, dets)

    def _results(self, batched_inputs, images, features, dets) -> List[Dict[str, torch.Tensor]]:
        emb = self.embed(images, features, [b for b, _ in dets])
        out = []
        for x, (boxes, scores), f in zip(
            batched_inputs, dets, emb.split([len(b) for b, _ in dets])
        ):
            out.append({"boxes": to_original(boxes, x), "scores": scores, "features": f})
        return out

    @torch.no_grad()
    def extract_query(self, batched_inputs: List[Dict]) -> List[Dict[str, torch.Tensor]]:
        """``[{"query_feature": (D,), + "boxes", "scores", "features" of the query image's
        detections when query_context}]``; ``"query_box"`` is in original coordinates.

        Raises:
            KeyError: an input has no ``"query_box"``.
        """
        boxes = self.query_boxes(batched_inputs)
        images = self.preprocess(batched_inputs)
        features = self.part1(images.tensors)
        query = self.embed(images.tensors, features, boxes)
        if not self.query_context:
            return [{"query_feature": q} for q in query]
        context = self._results(
            batched_inputs, images.tensors, features, self.detect(images, features)
        )
        return [dict(c, query_feature=q) for q, c in zip(query, context)]
