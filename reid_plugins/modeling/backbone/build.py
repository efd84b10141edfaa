"""Backbone registry and builder."""

from __future__ import annotations

from typing import Optional

from fvcore.common.registry import Registry
from torch import nn

from ...utils.errors import UserError
from .backbone import Backbone, ShapeSpec

__all__ = [
    "BACKBONE_REGISTRY",
    "build_backbone",
    "check_pretrained_backbone",
    "RandomBackboneError",
]

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


class RandomBackboneError(UserError, ValueError):
    """Training would start the backbone from random weights without being asked to (a
    :class:`~reid_plugins.utils.errors.UserError`: the tools print it as one line)."""


def _weights_hint(cfg) -> str:
    """Where to get ImageNet weights for the configured ResNet."""
    b = cfg.MODEL.BACKBONE
    depth = int(b.DEPTH)
    if b.WITH_IBN:
        name = "resnet50_ibn_a-d9d0bb7b.pth" if depth == 50 else f"the ResNet-{depth}-IBN-a file"
        return (
            f"get the ImageNet ResNet-{depth}-IBN-a weights of the IBN-Net release (Pan et al., "
            f"ECCV 2018; {name})"
        )
    name = " (resnet50-0676ba61.pth)" if depth == 50 else ""
    return f"get torchvision's ResNet{depth}_Weights.IMAGENET1K_V1 file{name}"


def check_pretrained_backbone(cfg, model: Optional[nn.Module] = None) -> None:
    """Refuse to *train* a backbone from random weights unless the config asks for it.

    Every method of the toolbox starts from ImageNet weights in its paper; a real-data config
    with ``MODEL.BACKBONE.PRETRAIN_PATH: ""`` would silently train from scratch. Called by the
    trainers before the first iteration (not for evaluation, where ``MODEL.WEIGHTS`` holds the
    whole model).

    Passes when ``MODEL.BACKBONE.PRETRAIN_PATH`` or ``MODEL.WEIGHTS`` is set, when
    ``MODEL.BACKBONE.FROM_SCRATCH`` is True (synthetic benchmarks, tests), or when ``model``
    (if given) holds no :class:`Backbone` (toy models).

    Raises:
        RandomBackboneError: one line naming the key and where to get the weights.
    """
    b = cfg.MODEL.BACKBONE
    if b.PRETRAIN_PATH or b.FROM_SCRATCH or cfg.MODEL.WEIGHTS:
        return
    if model is not None and not any(isinstance(m, Backbone) for m in model.modules()):
        return
    raise RandomBackboneError(
        "MODEL.BACKBONE.PRETRAIN_PATH is empty: training would start the backbone from random "
        f"weights. To start from ImageNet as the papers do, {_weights_hint(cfg)} and pass "
        "MODEL.BACKBONE.PRETRAIN_PATH /path/to/file; to train from scratch on purpose, pass "
        "MODEL.BACKBONE.FROM_SCRATCH True"
    )
