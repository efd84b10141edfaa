"""Meta-architecture registry and ``build_model``."""

from __future__ import annotations

import inspect
from typing import Optional, Sequence

import torch
from fvcore.common.registry import Registry

__all__ = ["META_ARCH_REGISTRY", "build_model", "resolve_device"]

META_ARCH_REGISTRY = Registry("META_ARCH")
META_ARCH_REGISTRY.__doc__ = """
Registry for meta-architectures, i.e. whole models. A registered class is built with
``cls(cfg)`` (classes with a ``from_config`` classmethod use it) and must implement
``forward(batched_inputs)`` returning ``dict[str, Tensor]`` of ``loss_*`` in training mode and a
list with one result per input in eval mode.
"""


def resolve_device(name: str) -> torch.device:
    """Map ``MODEL.DEVICE`` ("auto", "cpu", "cuda", "cuda:1") to a ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"MODEL.DEVICE='{name}' but CUDA is not available; use 'cpu' or 'auto'")
    return dev


def build_model(cfg, num_pids_per_domain: Optional[Sequence[int]] = None) -> torch.nn.Module:
    """Build ``cfg.MODEL.META_ARCHITECTURE`` and move it to ``cfg.MODEL.DEVICE``.

    Data flows one way: the trainer loads the training data first and passes what the model
    needs to know about it; a model never reads a dataset.

    Args:
        cfg: the config.
        num_pids_per_domain: identities of each ``DATASETS.TRAIN`` set, counted by the trainer
            (sizes of classifiers, memories, OIM lookup tables). None = a model for inference
            only: parts that exist only for training losses on identities are not built.
            Passed to ``from_config`` when its signature accepts ``num_pids_per_domain``.

    Raises:
        KeyError: the meta-architecture is not registered (message lists registered names).
    """
    name = cfg.MODEL.META_ARCHITECTURE
    if name not in META_ARCH_REGISTRY:
        raise KeyError(
            f"MODEL.META_ARCHITECTURE='{name}' is not registered; registered: "
            f"{sorted(k for k, _ in META_ARCH_REGISTRY)}"
        )
    cls = META_ARCH_REGISTRY.get(name)
    if hasattr(cls, "from_config"):
        kwargs = {}
        if "num_pids_per_domain" in inspect.signature(cls.from_config).parameters:
            kwargs["num_pids_per_domain"] = (
                None if num_pids_per_domain is None else [int(n) for n in num_pids_per_domain]
            )
        model = cls.from_config(cfg, **kwargs)
    else:
        model = cls(cfg)
    model.to(resolve_device(cfg.MODEL.DEVICE))
    return model
