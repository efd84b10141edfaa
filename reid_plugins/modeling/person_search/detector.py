"""Faster R-CNN pieces shared by the one-step person-search models (OIM*, TDN).

Everything geometric comes from torchvision: the RPN (``RegionProposalNetwork``,
``RPNHead``, ``AnchorGenerator``), proposal matching / sampling / box coding
(``detection._utils.Matcher``, ``BalancedPositiveNegativeSampler``, ``BoxCoder``) and the box
ops (``roi_align``, ``box_iou``, ``batched_nms``, ``clip_boxes_to_image``). This module only
wires them to the config and to the scene dicts of
:class:`~reid_plugins.data.scene_mapper.SceneDatasetMapper`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection._utils import BalancedPositiveNegativeSampler, BoxCoder, Matcher
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.ops import batched_nms, box_iou, clip_boxes_to_image, remove_small_boxes

__all__ = [
    "BACKGROUND_PID",
    "PersonSearchDetector",
    "SampledRoIs",
    "ProposalSampler",
    "batch_scene_images",
    "build_rpn",
    "fast_rcnn_losses",
    "gt_targets",
    "postprocess_detections",
    "scale_factors",
    "to_original",
    "to_resized",
]

#: pid given to background RoIs by :class:`ProposalSampler` (never a person: unlabelled = -1).
BACKGROUND_PID = -2


def batch_scene_images(
    images: Sequence[torch.Tensor],
    pixel_mean: torch.Tensor,
    pixel_std: torch.Tensor,
    size_divisibility: int,
) -> ImageList:
    """Normalise ``(3, H_i, W_i)`` 0-255 images and zero-pad them (bottom/right) into one
    ``(B, 3, H, W)`` batch with ``H, W`` multiples of ``size_divisibility``.

    Padding is applied after normalisation, so padded pixels equal the mean colour. Returns
    torchvision's ``ImageList`` with the unpadded ``(H_i, W_i)`` sizes.
    """
    if not images:
        raise ValueError("batch_scene_images: empty batch")
    div = max(1, int(size_divisibility))
    max_h = max(int(im.shape[-2]) for im in images)
    max_w = max(int(im.shape[-1]) for im in images)
    max_h, max_w = -(-max_h // div) * div, -(-max_w // div) * div
    batch = images[0].new_zeros(
        (len(images), images[0].shape[0], max_h, max_w), dtype=torch.float32
    )
    for i, im in enumerate(images):
        h, w = im.shape[-2:]
        batch[i, :, :h, :w] = (im.float() - pixel_mean) / pixel_std
    return ImageList(batch, [(int(im.shape[-2]), int(im.shape[-1])) for im in images])


def build_rpn(
    *,
    in_channels: int,
    stride: int,
    anchor_scales: Sequence[float],
    aspect_ratios: Sequence[float],
    head_conv_depth: int = 1,
    fg_iou_thresh: float = 0.7,
    bg_iou_thresh: float = 0.3,
    batch_size_per_image: int = 256,
    positive_fraction: float = 0.5,
    pre_nms_topk: Tuple[int, int] = (12000, 6000),
    post_nms_topk: Tuple[int, int] = (2000, 300),
    nms_thresh: float = 0.7,
) -> RegionProposalNetwork:
    """torchvision RPN on one feature map of ``stride``.

    Args:
        in_channels: channels of the feature map.
        stride: its stride; anchor sizes in pixels are ``scale * stride``.
        anchor_scales: anchor sizes in units of ``stride`` (TDN: 4, 8, 16, 32).
        aspect_ratios: anchor height / width ratios (TDN: 1, 2, 3).
        head_conv_depth: 3x3 convs of the RPN head.
        fg_iou_thresh, bg_iou_thresh, batch_size_per_image, positive_fraction: anchor
            labelling and sampling.
        pre_nms_topk, post_nms_topk: ``(training, testing)`` proposals per image before /
            after the NMS.
        nms_thresh: IoU of the RPN NMS.
    """
    sizes = tuple(float(s) * float(stride) for s in anchor_scales)
    anchors = AnchorGenerator(
        sizes=(sizes,), aspect_ratios=(tuple(float(a) for a in aspect_ratios),)
    )
    head = RPNHead(in_channels, anchors.num_anchors_per_location()[0], conv_depth=head_conv_depth)
    return RegionProposalNetwork(
        anchors,
        head,
        fg_iou_thresh=fg_iou_thresh,
        bg_iou_thresh=bg_iou_thresh,
        batch_size_per_image=batch_size_per_image,
        positive_fraction=positive_fraction,
        pre_nms_top_n=dict(training=int(pre_nms_topk[0]), testing=int(pre_nms_topk[1])),
        post_nms_top_n=dict(training=int(post_nms_topk[0]), testing=int(post_nms_topk[1])),
        nms_thresh=nms_thresh,
    )


def gt_targets(
    batched_inputs: Sequence[Dict], device
) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    """``(gt_boxes, gt_pids)`` per image on ``device``, boxes with zero width or height
    removed (they have no valid regression target).

    Raises:
        KeyError: an input lacks ``"gt_boxes"`` (names the image).
    """
    boxes, pids = [], []
    for x in batched_inputs:
        if "gt_boxes" not in x:
            raise KeyError(
                f"Training input '{x.get('file_name', '?')}' has no 'gt_boxes'; use the scene "
                "mapper (reid_plugins.data.scene_mapper.SceneDatasetMapper)"
            )
        b = torch.as_tensor(x["gt_boxes"], dtype=torch.float32, device=device).reshape(-1, 4)
        p = torch.as_tensor(x.get("gt_pids", [-1] * len(b)), dtype=torch.int64, device=device)
        keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        boxes.append(b[keep])
        pids.append(p.reshape(-1)[keep])
    return boxes, pids


@dataclass
class SampledRoIs:
    """RoIs sampled for one image: ``boxes`` (M, 4), ``labels`` (M,) 1 = person / 0 =
    background, ``pids`` (M,) pid of the matched box (>= 0 labelled, -1 unlabelled,
    :data:`BACKGROUND_PID` for background), ``regression_targets`` (M, 4) box deltas to the
    matched box (zeros for background)."""

    boxes: torch.Tensor
    labels: torch.Tensor
    pids: torch.Tensor
    regression_targets: torch.Tensor


class ProposalSampler(nn.Module):
    """Label proposals by IoU with the ground truth and sample a fixed budget per image.

    Ground-truth boxes are appended to the proposals (Fast R-CNN practice), proposals are
    matched with torchvision's ``Matcher`` (IoU >= ``fg_iou_thresh`` -> person, <
    ``bg_iou_thresh`` -> background, in between ignored) and
    ``BalancedPositiveNegativeSampler`` keeps ``batch_size_per_image`` RoIs with at most
    ``positive_fraction`` persons (randomness: torch's global generator).
    Stateless (an ``nn.Module`` only for ``repr``).
    """

    def __init__(
        self,
        *,
        batch_size_per_image: int,
        positive_fraction: float,
        fg_iou_thresh: float,
        bg_iou_thresh: float,
        bbox_reg_weights: Sequence[float],
    ) -> None:
        super().__init__()
        if bg_iou_thresh > fg_iou_thresh:
            raise ValueError(
                f"ROI_HEADS.BG_IOU_THRESH ({bg_iou_thresh}) must be <= FG_IOU_THRESH "
                f"({fg_iou_thresh})"
            )
        self.batch_size_per_image = int(batch_size_per_image)
        self.positive_fraction = float(positive_fraction)
        self.matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=False)
        self.sampler = BalancedPositiveNegativeSampler(
            self.batch_size_per_image, self.positive_fraction
        )
        self.box_coder = BoxCoder(tuple(float(w) for w in bbox_reg_weights))

    @torch.no_grad()
    def forward(
        self,
        proposals: List[torch.Tensor],
        gt_boxes: List[torch.Tensor],
        gt_pids: List[torch.Tensor],
    ) -> List[SampledRoIs]:
        labels_all, matched_all, candidates = [], [], []
        for props, gt in zip(proposals, gt_boxes):
            props = torch.cat([props.detach(), gt])
            candidates.append(props)
            if gt.numel() == 0:
                matched = torch.full((len(props),), -1, dtype=torch.int64, device=props.device)
                labels = torch.zeros(len(props), dtype=torch.int64, device=props.device)
            else:
                matched = self.matcher(box_iou(gt, props))
                labels = (matched >= 0).to(torch.int64)
                labels[matched == Matcher.BETWEEN_THRESHOLDS] = -1
            labels_all.append(labels)
            matched_all.append(matched)
        pos_masks, neg_masks = self.sampler(labels_all)
        out = []
        for props, gt, pids, labels, matched, pos, neg in zip(
            candidates, gt_boxes, gt_pids, labels_all, matched_all, pos_masks, neg_masks
        ):
            keep = torch.where(pos | neg)[0]
            boxes, labels, matched = props[keep], labels[keep].clamp(min=0), matched[keep]
            fg = labels == 1
            roi_pids = torch.full_like(labels, BACKGROUND_PID)
            targets = torch.zeros_like(boxes)
            if bool(fg.any()):
                idx = matched[fg]
                roi_pids[fg] = pids[idx]
                targets[fg] = self.box_coder.encode_single(gt[idx], boxes[fg])
            out.append(SampledRoIs(boxes, labels, roi_pids, targets))
        return out

    def extra_repr(self) -> str:
        return (
            f"batch_size_per_image={self.batch_size_per_image}, "
            f"positive_fraction={self.positive_fraction}, fg_iou={self.matcher.high_threshold}, "
            f"bg_iou={self.matcher.low_threshold}, weights={self.box_coder.weights}"
        )


def fast_rcnn_losses(
    class_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    labels: torch.Tensor,
    regression_targets: torch.Tensor,
    smooth_l1_beta: float,
) -> Dict[str, torch.Tensor]:
    """Person/background cross-entropy and smooth-L1 box loss of the positive RoIs.

    The box loss is summed over the positives and divided by the number of sampled RoIs
    (torchvision's Fast R-CNN normalisation). Returns ``{"loss_box_cls", "loss_box_reg"}``.
    """
    loss_cls = F.cross_entropy(class_logits, labels)
    pos = labels > 0
    loss_reg = F.smooth_l1_loss(
        box_deltas[pos], regression_targets[pos], beta=smooth_l1_beta, reduction="sum"
    ) / max(1, labels.numel())
    return {"loss_box_cls": loss_cls, "loss_box_reg": loss_reg}


def postprocess_detections(
    proposals: torch.Tensor,
    class_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    image_size: Tuple[int, int],
    box_coder: BoxCoder,
    *,
    score_thresh: float,
    nms_thresh: float,
    detections_per_image: int,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Final person boxes of one image.

    Person probability = softmax of the 2-way logits; boxes = proposals refined by the deltas
    and clipped to ``image_size`` ``(H, W)``; then score >= ``score_thresh``, boxes of side
    >= 0.01 px, NMS at ``nms_thresh`` and the ``detections_per_image`` best.

    Returns:
        ``(boxes (K, 4), scores (K,), keep (K,))``, ``keep`` indexing the input proposals
        (to pick the proposals' re-ID features), sorted by decreasing score.
    """
    scores = F.softmax(class_logits, dim=-1)[:, 1]
    boxes = box_coder.decode_single(box_deltas, proposals)
    boxes = clip_boxes_to_image(boxes, image_size)
    keep = torch.where(scores >= score_thresh)[0]
    keep = keep[remove_small_boxes(boxes[keep], 1e-2)]
    groups = torch.zeros_like(keep)
    order = batched_nms(boxes[keep], scores[keep], groups, nms_thresh)[:detections_per_image]
    keep = keep[order]
    return boxes[keep], scores[keep], keep


def scale_factors(x: Dict) -> Tuple[float, float]:
    """``(sx, sy)`` = resized / original size of a scene input (from ``"image"`` and its
    ``"width"`` / ``"height"``; 1 when the original size is unknown)."""
    h, w = x["image"].shape[-2:]
    return float(w) / float(x.get("width", w)), float(h) / float(x.get("height", h))


def to_original(boxes: torch.Tensor, x: Dict) -> torch.Tensor:
    """Boxes in the resized image -> original image coordinates (clipped to it)."""
    sx, sy = scale_factors(x)
    scale = boxes.new_tensor([sx, sy, sx, sy])
    out = boxes / scale
    h, w = x["image"].shape[-2:]
    return clip_boxes_to_image(out, (int(x.get("height", h)), int(x.get("width", w))))


def to_resized(boxes: torch.Tensor, x: Dict) -> torch.Tensor:
    """Boxes in original image coordinates -> the resized image."""
    sx, sy = scale_factors(x)
    return boxes * boxes.new_tensor([sx, sy, sx, sy])


class PersonSearchDetector(nn.Module):
    """The detector of the one-step person-search models (OIM*, TDN): the RPN on Part-1, the
    RoI sampler of the detection branch, the box coder and Fast R-CNN loss beta, and the
    inference post-processing settings, built once from ``MODEL.PERSON_SEARCH`` by
    :meth:`from_config` and passed to a model as one argument (as detectron2 passes
    ``roi_heads``). The RoI *head* stays with the model (TDN: 2 FC on Part-1; OIM*: Part-2).

    Args (keyword-only):
        rpn: torchvision ``RegionProposalNetwork`` on Part-1 features (:func:`build_rpn`).
        proposal_sampler: :class:`ProposalSampler` of the detection branch's RoIs.
        bbox_reg_weights: RoI box-coder weights; smooth_l1_beta: box-loss beta.
        score_thresh_test, nms_thresh_test, detections_per_image: inference filtering.
    """

    def __init__(
        self,
        *,
        rpn: RegionProposalNetwork,
        proposal_sampler: ProposalSampler,
        bbox_reg_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
        smooth_l1_beta: float = 1.0 / 9,
        score_thresh_test: float = 0.05,
        nms_thresh_test: float = 0.4,
        detections_per_image: int = 100,
    ) -> None:
        super().__init__()
        self.rpn = rpn
        self.proposal_sampler = proposal_sampler
        self.box_coder = BoxCoder(tuple(float(w) for w in bbox_reg_weights))
        self.smooth_l1_beta = float(smooth_l1_beta)
        self.score_thresh_test = float(score_thresh_test)
        self.nms_thresh_test = float(nms_thresh_test)
        self.detections_per_image = int(detections_per_image)

    @classmethod
    def from_config(cls, cfg, *, in_channels: int, stride: int) -> "PersonSearchDetector":
        """From ``MODEL.PERSON_SEARCH.{RPN, ROI_HEADS}`` for a Part-1 of ``in_channels``
        channels and total ``stride``."""
        ps = cfg.MODEL.PERSON_SEARCH
        rpn = build_rpn(
            in_channels=in_channels,
            stride=stride,
            anchor_scales=ps.RPN.ANCHOR_SCALES,
            aspect_ratios=ps.RPN.ASPECT_RATIOS,
            head_conv_depth=ps.RPN.HEAD_CONV_DEPTH,
            fg_iou_thresh=ps.RPN.FG_IOU_THRESH,
            bg_iou_thresh=ps.RPN.BG_IOU_THRESH,
            batch_size_per_image=ps.RPN.BATCH_SIZE_PER_IMAGE,
            positive_fraction=ps.RPN.POSITIVE_FRACTION,
            pre_nms_topk=(ps.RPN.PRE_NMS_TOPK_TRAIN, ps.RPN.PRE_NMS_TOPK_TEST),
            post_nms_topk=(ps.RPN.POST_NMS_TOPK_TRAIN, ps.RPN.POST_NMS_TOPK_TEST),
            nms_thresh=ps.RPN.NMS_THRESH,
        )
        roi = ps.ROI_HEADS
        sampler = ProposalSampler(
            batch_size_per_image=roi.BATCH_SIZE_PER_IMAGE,
            positive_fraction=roi.POSITIVE_FRACTION,
            fg_iou_thresh=roi.FG_IOU_THRESH,
            bg_iou_thresh=roi.BG_IOU_THRESH,
            bbox_reg_weights=roi.BBOX_REG_WEIGHTS,
        )
        return cls(
            rpn=rpn,
            proposal_sampler=sampler,
            bbox_reg_weights=roi.BBOX_REG_WEIGHTS,
            smooth_l1_beta=roi.SMOOTH_L1_BETA,
            score_thresh_test=roi.SCORE_THRESH_TEST,
            nms_thresh_test=roi.NMS_THRESH_TEST,
            detections_per_image=roi.DETECTIONS_PER_IMAGE,
        )

    def fast_rcnn_losses(
        self, class_logits: torch.Tensor, box_deltas: torch.Tensor, sampled: List[SampledRoIs]
    ) -> Dict[str, torch.Tensor]:
        """:func:`fast_rcnn_losses` of the sampled RoIs (concatenated over the images)."""
        return fast_rcnn_losses(
            class_logits,
            box_deltas,
            torch.cat([s.labels for s in sampled]),
            torch.cat([s.regression_targets for s in sampled]),
            self.smooth_l1_beta,
        )

    def postprocess(
        self,
        proposals: List[torch.Tensor],
        image_sizes: List[Tuple[int, int]],
        class_logits: torch.Tensor,
        box_deltas: torch.Tensor,
    ) -> List[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """:func:`postprocess_detections` of each image with the inference settings;
        ``class_logits`` / ``box_deltas`` are concatenated over the images' proposals.

        Returns:
            Per image ``(boxes (K, 4) resized-image coordinates, scores (K,), keep (K,))``.
        """
        counts = [len(p) for p in proposals]
        return [
            postprocess_detections(
                props,
                lg,
                dl,
                size,
                self.box_coder,
                score_thresh=self.score_thresh_test,
                nms_thresh=self.nms_thresh_test,
                detections_per_image=self.detections_per_image,
            )
            for props, size, lg, dl in zip(
                proposals, image_sizes, class_logits.split(counts), box_deltas.split(counts)
            )
        ]

    def extra_repr(self) -> str:
        return (
            f"score_thresh_test={self.score_thresh_test}, nms_thresh_test="
            f"{self.nms_thresh_test}, detections_per_image={self.detections_per_image}, "
            f"smooth_l1_beta={self.smooth_l1_beta:.4g}, box_weights={self.box_coder.weights}"
        )
