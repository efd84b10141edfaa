"""Meta-architectures of the core (importing registers them in META_ARCH_REGISTRY); the
methods' meta-architectures are registered by :mod:`reid_plugins.methods`."""

from .baseline import ReIDBaseline  # noqa: F401
from .build import META_ARCH_REGISTRY, build_model  # noqa: F401
