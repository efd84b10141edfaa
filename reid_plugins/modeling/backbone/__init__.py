"""Backbones (importing registers them in BACKBONE_REGISTRY)."""

from .backbone import Backbone, ShapeSpec  # noqa: F401
from .build import BACKBONE_REGISTRY, build_backbone  # noqa: F401
from .input_conv import InputConv2d, input_conv2d  # noqa: F401
from .resnet import ResNet, build_resnet_backbone, load_pretrained  # noqa: F401
