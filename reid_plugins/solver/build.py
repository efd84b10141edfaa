"""Optimizer construction with per-parameter-type hyper-parameters."""

from __future__ import annotations

import functools
from typing import Callable, Dict, List, Optional

import torch
from torch import nn

__all__ = ["build_optimizer", "get_default_optimizer_params", "build_grad_clipper"]

_NORM_TYPES = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.GroupNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.LayerNorm,
    nn.LocalResponseNorm,
)


def get_default_optimizer_params(
    model: nn.Module,
    *,
    base_lr: float,
    weight_decay: float,
    weight_decay_norm: float,
    bias_lr_factor: float = 1.0,
) -> List[Dict]:
    """One param group per trainable parameter with its lr and weight decay.

    Normalisation-layer parameters use ``weight_decay_norm``; biases get
    ``base_lr * bias_lr_factor``. Shared parameters appear once.
    """
    groups: List[Dict] = []
    seen = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            lr, wd = base_lr, weight_decay
            if isinstance(module, _NORM_TYPES) or "norm" in type(module).__name__.lower():
                wd = weight_decay_norm
            if name == "bias":
                lr = base_lr * bias_lr_factor
            groups.append({"params": [p], "lr": lr, "weight_decay": wd})
    return groups


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """SGD or Adam from ``cfg.SOLVER``.

    Raises:
        ValueError: unknown SOLVER.OPTIMIZER, or the model has no trainable parameter.
    """
    s = cfg.SOLVER
    wd_norm = s.WEIGHT_DECAY if s.WEIGHT_DECAY_NORM < 0 else s.WEIGHT_DECAY_NORM
    params = get_default_optimizer_params(
        model,
        base_lr=s.BASE_LR,
        weight_decay=s.WEIGHT_DECAY,
        weight_decay_norm=wd_norm,
        bias_lr_factor=s.BIAS_LR_FACTOR,
    )
    if not params:
        raise ValueError("The model has no trainable parameters")
    name = s.OPTIMIZER
    if name == "SGD":
        return torch.optim.SGD(params, lr=s.BASE_LR, momentum=s.MOMENTUM, nesterov=s.NESTEROV)
    if name == "Adam":
        return torch.optim.Adam(params, lr=s.BASE_LR)
    raise ValueError(f"Unknown SOLVER.OPTIMIZER '{name}' (use 'SGD' or 'Adam')")


def build_grad_clipper(cfg) -> Optional[Callable]:
    """``fn(parameters)`` clipping gradients per SOLVER.CLIP_GRADIENTS, or None."""
    c = cfg.SOLVER.CLIP_GRADIENTS
    if not c.ENABLED:
        return None
    if c.CLIP_TYPE == "value":
        return functools.partial(torch.nn.utils.clip_grad_value_, clip_value=c.CLIP_VALUE)
    if c.CLIP_TYPE == "norm":
        return functools.partial(
            torch.nn.utils.clip_grad_norm_, max_norm=c.CLIP_VALUE, norm_type=c.NORM_TYPE
        )
    raise ValueError(f"Unknown SOLVER.CLIP_GRADIENTS.CLIP_TYPE '{c.CLIP_TYPE}'")
