"""Building blocks of TDN (Teacher-guided Disentangling Networks): the RoI head of the
detection branch, the Knowledge Transfer Bridge and the re-ID neck.

* :class:`TDNBoxHead`: RoIAlign features ``(R, C, 7, 7)`` -> flatten -> ``num_fc`` x
  (FC ``fc_dim`` + ReLU) -> person/background logits ``(R, 2)`` and box deltas ``(R, 4)``.
* :class:`KnowledgeTransferBridge` (KTB): RoIAlign of the **input image** to a fixed
  ``input_size`` (256 x 128 x 3) and a separate (unshared) copy of Part-1 on those crops.
* :class:`ReIDNeck`: GAP -> BN (bias optionally frozen, as the BNNeck) -> optional identity
  classifier (linear, no bias).
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

__all__ = ["TDNBoxHead", "KnowledgeTransferBridge", "ReIDNeck", "part1_copy"]


class TDNBoxHead(nn.Module):
    """RoI head of TDN's detection branch (Sec. III-A): 2 FC of 1024 -> score + box.

    Args (keyword-only):
        in_channels: channels of the RoI features (Part-1 channels, 512 for ResNet-50).
        resolution: ``(height, width)`` of the RoI features (7, 7).
        fc_dim: units of each fully connected layer (1024).
        num_fc: number of fully connected layers (2).

    ``forward(x (R, C, h, w))`` returns ``(class_logits (R, 2), box_deltas (R, 4))``.
    """

    def __init__(
        self, *, in_channels: int, resolution: Sequence[int], fc_dim: int = 1024, num_fc: int = 2
    ) -> None:
        super().__init__()
        if num_fc < 1 or fc_dim < 1:
            raise ValueError(
                f"MODEL.TDN.BOX_HEAD: NUM_FC ({num_fc}) and FC_DIM ({fc_dim}) must be >= 1"
            )
        if len(resolution) != 2:
            raise ValueError(
                f"MODEL.TDN.BOX_HEAD.POOLER_RESOLUTION must be [height, width], got {resolution}"
            )
        self.in_channels = int(in_channels)
        self.resolution = (int(resolution[0]), int(resolution[1]))
        layers: List[nn.Module] = []
        dim = self.in_channels * self.resolution[0] * self.resolution[1]
        for _ in range(int(num_fc)):
            fc = nn.Linear(dim, int(fc_dim))
            nn.init.kaiming_uniform_(fc.weight, a=1)
            nn.init.zeros_(fc.bias)
            layers += [fc, nn.ReLU(inplace=True)]
            dim = int(fc_dim)
        self.fcs = nn.Sequential(*layers)
        self.cls_score = nn.Linear(dim, 2)
        self.bbox_pred = nn.Linear(dim, 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    @classmethod
    def from_config(cls, cfg, *, in_channels: int) -> "TDNBoxHead":
        """From ``MODEL.TDN.BOX_HEAD.{POOLER_RESOLUTION, FC_DIM, NUM_FC}``."""
        b = cfg.MODEL.TDN.BOX_HEAD
        return cls(
            in_channels=in_channels,
            resolution=b.POOLER_RESOLUTION,
            fc_dim=b.FC_DIM,
            num_fc=b.NUM_FC,
        )

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 4 or tuple(x.shape[1:]) != (self.in_channels, *self.resolution):
            raise ValueError(
                f"TDNBoxHead expects (R, {self.in_channels}, {self.resolution[0]}, "
                f"{self.resolution[1]}) RoI features, got {tuple(x.shape)}"
            )
        h = self.fcs(x.flatten(1))
        return self.cls_score(h), self.bbox_pred(h)


def part1_copy(backbone: nn.Module, part1_end: str) -> nn.Sequential:
    """``nn.Sequential`` of the stages ``stem .. part1_end`` of a staged ResNet
    (:class:`~reid_plugins.modeling.backbone.resnet.ResNet`), the modules themselves (no
    copy): pass a freshly built backbone to get unshared weights."""
    from reid_plugins.modeling.backbone.resnet import STAGE_NAMES

    if part1_end not in STAGE_NAMES:
        raise KeyError(f"Unknown stage '{part1_end}'; stages are {list(STAGE_NAMES)}")
    names = STAGE_NAMES[: STAGE_NAMES.index(part1_end) + 1]
    return nn.Sequential(*[getattr(backbone, n) for n in names])


class KnowledgeTransferBridge(nn.Module):
    """KTB (TDN Sec. III-A): fixed-size image crops of the person boxes through an unshared
    copy of Part-1.

    Args (keyword-only):
        part1: the copy of Part-1 (e.g. :func:`part1_copy` of a second backbone); its
            parameters must not be shared with the detection branch's Part-1.
        input_size: ``(height, width)`` of the image crops (256, 128).
        stride: total stride of ``part1`` (8 for conv1..conv3_x), so the output is
            ``input_size / stride`` (32 x 16).
        sampling_ratio: RoIAlign sampling points per bin (0 = adaptive).

    :meth:`crop` makes the crops from a normalised image batch; ``forward(crops)`` runs Part-1.
    """

    def __init__(
        self,
        *,
        part1: nn.Module,
        input_size: Sequence[int],
        stride: int,
        sampling_ratio: int = 2,
    ) -> None:
        super().__init__()
        if len(input_size) != 2 or min(int(v) for v in input_size) <= 0:
            raise ValueError(f"MODEL.TDN.KTB.INPUT_SIZE must be [height, width], got {input_size}")
        h, w = int(input_size[0]), int(input_size[1])
        if h % stride or w % stride:
            raise ValueError(
                f"MODEL.TDN.KTB.INPUT_SIZE {[h, w]} must be divisible by the Part-1 stride {stride}"
            )
        self.part1 = part1
        self.input_size = (h, w)
        self.stride = int(stride)
        self.sampling_ratio = int(sampling_ratio)

    @classmethod
    def from_config(cls, cfg) -> "KnowledgeTransferBridge":
        """A new backbone of ``MODEL.BACKBONE`` (same initialisation as the detector's, e.g.
        ImageNet weights, but its own tensors) cut at ``MODEL.PERSON_SEARCH.PART1_END``;
        ``MODEL.TDN.KTB.{INPUT_SIZE, SAMPLING_RATIO}``."""
        from reid_plugins.modeling.backbone import build_backbone

        end = cfg.MODEL.PERSON_SEARCH.PART1_END
        backbone = build_backbone(cfg)
        return cls(
            part1=part1_copy(backbone, end),
            input_size=cfg.MODEL.TDN.KTB.INPUT_SIZE,
            stride=backbone.stage_shape(end).stride,
            sampling_ratio=cfg.MODEL.TDN.KTB.SAMPLING_RATIO,
        )

    @property
    def output_size(self) -> Tuple[int, int]:
        """``(height, width)`` of the KTB feature maps."""
        return self.input_size[0] // self.stride, self.input_size[1] // self.stride

    def crop(self, images: torch.Tensor, boxes: List[torch.Tensor]) -> torch.Tensor:
        """Bilinear RoIAlign of ``images`` (B, 3, H, W) inside each image's ``boxes`` (its
        own pixel coordinates) to ``input_size``: ``(sum R_i, 3, h, w)``."""
        return crop_boxes(images, boxes, self.input_size, self.sampling_ratio)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        return self.part1(crops)


def crop_boxes(
    images: torch.Tensor, boxes: List[torch.Tensor], size: Sequence[int], sampling_ratio: int = 2
) -> torch.Tensor:
    """RoIAlign (``aligned=True``, scale 1) of image regions to ``size = (h, w)``."""
    return roi_align(
        images,
        [b.to(images.dtype) for b in boxes],
        output_size=(int(size[0]), int(size[1])),
        spatial_scale=1.0,
        sampling_ratio=int(sampling_ratio),
        aligned=True,
    )


class ReIDNeck(nn.Module):
    """GAP -> BatchNorm1d -> (identity classifier).

    Args (keyword-only):
        feat_dim: channels of the Part-2 output (2048 for ResNet-50).
        num_classes: identities of the linear classifier (no bias); 0 = none.
        freeze_bias: keep the BN bias at 0 (BNNeck).

    ``forward(x (R, C, h, w))`` returns ``{"pre_bn": (R, C), "feature": (R, C) post-BN,
    "logits": (R, num_classes)}`` (logits only with a classifier, in training mode).
    """

    def __init__(self, *, feat_dim: int, num_classes: int = 0, freeze_bias: bool = True) -> None:
        super().__init__()
        self.feat_dim = int(feat_dim)
        self.num_classes = int(num_classes)
        self.bn = nn.BatchNorm1d(self.feat_dim)
        nn.init.ones_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        if freeze_bias:
            self.bn.bias.requires_grad_(False)
        self.classifier = None
        if self.num_classes > 0:
            self.classifier = nn.Linear(self.feat_dim, self.num_classes, bias=False)
            nn.init.normal_(self.classifier.weight, std=0.001)

    @classmethod
    def from_config(cls, cfg, *, feat_dim: int, num_classes: int) -> "ReIDNeck":
        """From ``MODEL.TDN.REID.BN_FREEZE_BIAS``."""
        return cls(
            feat_dim=feat_dim,
            num_classes=num_classes,
            freeze_bias=cfg.MODEL.TDN.REID.BN_FREEZE_BIAS,
        )

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        pre = F.adaptive_avg_pool2d(x, 1).flatten(1)
        if self.training and pre.shape[0] == 1:
            # BatchNorm1d cannot normalise a single sample in training: use running statistics
            post = F.batch_norm(
                pre, self.bn.running_mean, self.bn.running_var, self.bn.weight, self.bn.bias,
                False, 0.0, self.bn.eps,
            )  # fmt: skip
        else:
            post = self.bn(pre)
        out = {"pre_bn": pre, "feature": post}
        if self.classifier is not None and self.training:
            out["logits"] = self.classifier(post)
        return out
