"""Backbone registry and builder."""

from __future__ import annotations

from typing import Optional

from fvcore.common.registry import Registry

from .backbone import Backbone, ShapeSpec

__all__ = ["BACKBONE_REGISTRY", "build_backbone"]

BACKBONE_REGISTRY = Registry("BACKBONE")
BACKBONE_REGISTRY.__doc__ = """
Registry for backbones. A registered object is called as ``obj(cfg, input_shape)`` and must
return a :class:`Backbone` (an ``nn.Module`` whose forward returns ``{stage_name: tensor}``).

Register from user code without touching the package::

    @BACKBONE_REGISTRY.register()
    def build_my_backbone(cfg, input_shape):
        return MyBackbone(...)

then set ``MODEL.BACKBONE.NAME: build_my_backbone`` in the config.
"""


def build_backbone(cfg, input_shape: Optional[ShapeSpec] = None) -> Backbone:
    """Build ``cfg.MODEL.BACKBONE.NAME`` from :data:`BACKBONE_REGISTRY`.

    Raises:
        KeyError: the name is not registered (the message lists the registered names).
    """
    if input_shape is None:
        input_shape = ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN))
    name = cfg.MODEL.BACKBONE.NAME
    if name not in BACKBONE_REGISTRY:
        raise KeyError(
            f"MODEL.BACKBONE.NAME='{name}' is not registered; registered backbones: "
            f"{sorted(k for k, _ in BACKBONE_REGISTRY)}"
        )
    backbone = BACKBONE_REGISTRY.get(name)(cfg, input_shape)
    if not isinstance(backbone, Backbone):
        raise TypeError(f"Backbone '{name}' returned {type(backbone)}, expected a Backbone")
    return backbone
