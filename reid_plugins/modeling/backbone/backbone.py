"""Backbone base class and the shape descriptor shared by all modeling code."""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from dataclasses import dataclass
from typing import Dict, Optional

import torch
from torch import nn

__all__ = ["ShapeSpec", "Backbone"]


@dataclass(frozen=True)
class ShapeSpec:
    """Shape of a tensor produced by a module (any field may be ``None`` when unknown)."""

    channels: Optional[int] = None
    height: Optional[int] = None
    width: Optional[int] = None
    stride: Optional[int] = None


class Backbone(nn.Module, metaclass=ABCMeta):
    """Abstract backbone: ``forward(x) -> {name: feature map}``.

    Subclasses must implement :meth:`forward` and set ``_out_features``,
    ``_out_feature_channels`` and ``_out_feature_strides`` (dicts keyed by stage name).
    """

    def __init__(self) -> None:
        super().__init__()
        self._out_features: list = []
        self._out_feature_channels: Dict[str, int] = {}
        self._out_feature_strides: Dict[str, int] = {}

    @abstractmethod
    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Return a dict mapping each name in ``self._out_features`` to its feature map."""

    def output_shape(self) -> Dict[str, ShapeSpec]:
        """Channels and stride of every returned feature map."""
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
            for name in self._out_features
        }
