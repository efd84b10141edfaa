"""ReID embedding head: global pooling -> BNNeck -> identity classifier."""

from __future__ import annotations

from typing import Dict

import torch
import torch.nn.functional as F
from fvcore.common.registry import Registry
from torch import nn

__all__ = [
    "REID_HEADS_REGISTRY",
    "EmbeddingHead",
    "GeneralizedMeanPooling",
    "build_reid_head",
    "GhostBatchNorm1d",
]

REID_HEADS_REGISTRY = Registry("REID_HEADS")
REID_HEADS_REGISTRY.__doc__ = """
Heads mapping a backbone feature map to ReID features. Built as
``cls.from_config(cfg, feat_dim=..., num_classes=...)``.
"""


class GeneralizedMeanPooling(nn.Module):
    """GeM pooling ``(mean x^p)^(1/p)`` with a learnable ``p`` (Radenovic et al.)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x.clamp(min=self.eps).pow(self.p), 1).pow(1.0 / self.p)


class GhostBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d that, in training, normalises groups of ``split`` samples separately.

    Reproduces the statistics of multi-GPU training on one device (each GPU normalised its own
    share). ``split = 0`` or a batch no larger than ``split`` behaves like plain BN; running
    statistics are updated once per group, as DDP without SyncBN would.
    """

    def __init__(self, num_features: int, split: int = 0, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self.split = int(split)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.split <= 0 or x.shape[0] <= self.split:
            return super().forward(x)
        return torch.cat([super(GhostBatchNorm1d, self).forward(c) for c in x.split(self.split)])


@REID_HEADS_REGISTRY.register()
class EmbeddingHead(nn.Module):
    """Pooling + BNNeck (+ classifier), as in the "Bag of Tricks" strong baseline.

    ``forward(feature_map)`` returns ``{"pre_bn": (N, C), "post_bn": (N, C)}`` plus
    ``"logits": (N, num_classes)`` when a classifier exists and the head is training.
    The triplet loss uses ``pre_bn``; identification losses and inference use ``post_bn``.

    Args:
        feat_dim: channels of the input feature map.
        num_classes: identities of the classifier (0 = no classifier).
        pool: "avg", "max" or "gem".
        neck: "bnneck" (BN whose bias is frozen at 0) or "none".
        bn_split: ghost-BN group size for the neck (0 = whole batch).
        cls_layer: "linear" (no bias) or "none".
    """

    def __init__(
        self,
        *,
        feat_dim: int,
        num_classes: int = 0,
        pool: str = "avg",
        neck: str = "bnneck",
        bn_split: int = 0,
        cls_layer: str = "linear",
    ) -> None:
        super().__init__()
        pools = {
            "avg": nn.AdaptiveAvgPool2d(1),
            "max": nn.AdaptiveMaxPool2d(1),
            "gem": GeneralizedMeanPooling(),
        }
        if pool not in pools:
            raise ValueError(f"MODEL.HEADS.POOL must be one of {sorted(pools)}, got '{pool}'")
        self.pool = pools[pool]
        if neck == "bnneck":
            self.bottleneck: nn.Module = GhostBatchNorm1d(feat_dim, split=bn_split)
            self.bottleneck.bias.requires_grad_(False)
            nn.init.ones_(self.bottleneck.weight)
            nn.init.zeros_(self.bottleneck.bias)
        elif neck == "none":
            self.bottleneck = nn.Identity()
        else:
            raise ValueError(f"MODEL.HEADS.NECK must be 'bnneck' or 'none', got '{neck}'")
        if cls_layer == "linear" and num_classes > 0:
            self.classifier = nn.Linear(feat_dim, num_classes, bias=False)
            nn.init.normal_(self.classifier.weight, std=0.001)
        elif cls_layer in ("linear", "none"):
            self.classifier = None
        else:
            raise ValueError(f"MODEL.HEADS.CLS_LAYER must be 'linear' or 'none', got '{cls_layer}'")
        self.feat_dim = feat_dim
        self.num_classes = num_classes if self.classifier is not None else 0

    @classmethod
    def from_config(cls, cfg, *, feat_dim: int, num_classes: int) -> "EmbeddingHead":
        h = cfg.MODEL.HEADS
        return cls(
            feat_dim=feat_dim,
            num_classes=num_classes,
            pool=h.POOL,
            neck=h.NECK,
            bn_split=h.BN_SPLIT,
            cls_layer=h.CLS_LAYER,
        )

    def forward(self, features: torch.Tensor) -> Dict[str, torch.Tensor]:
        pre = self.pool(features).flatten(1)
        post = self.bottleneck(pre)
        out = {"pre_bn": pre, "post_bn": post}
        if self.classifier is not None and self.training:
            out["logits"] = self.classifier(post)
        return out


def build_reid_head(cfg, *, feat_dim: int, num_classes: int) -> nn.Module:
    """Build ``MODEL.HEADS.NAME`` from :data:`REID_HEADS_REGISTRY`."""
    name = cfg.MODEL.HEADS.NAME
    if name not in REID_HEADS_REGISTRY:
        raise KeyError(
            f"MODEL.HEADS.NAME='{name}' is not registered; registered: "
            f"{sorted(k for k, _ in REID_HEADS_REGISTRY)}"
        )
    return REID_HEADS_REGISTRY.get(name).from_config(
        cfg, feat_dim=feat_dim, num_classes=num_classes
    )
