"""Models: registries, backbones, heads, losses and meta-architectures."""

from .backbone import BACKBONE_REGISTRY, Backbone, ShapeSpec, build_backbone  # noqa: F401
from .meta_arch import META_ARCH_REGISTRY, build_model  # noqa: F401
