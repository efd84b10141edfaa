"""Meta-architectures (importing registers them in META_ARCH_REGISTRY)."""

from .build import META_ARCH_REGISTRY, build_model  # noqa: F401
