"""Optimizer construction with per-parameter-type hyper-parameters."""

from __future__ import annotations

import functools
from typing import Callable, Dict, List, Optional

import torch
from torch import nn

__all__ = [
    "build_optimizer",
    "get_default_optimizer_params",
    "reduce_param_groups",
    "build_grad_clipper",
]

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


def reduce_param_groups(groups: List[Dict]) -> List[Dict]:
    """Merge param groups whose hyper-parameters are equal (first-appearance order), so that
    foreach / fused optimizers update many tensors per kernel instead of one group each."""
    merged: Dict[tuple, Dict] = {}
    for g in groups:
        key = tuple(sorted((k, v) for k, v in g.items() if k != "params"))
        if key in merged:
            merged[key]["params"].extend(g["params"])
        else:
            merged[key] = {**g, "params": list(g["params"])}
    return list(merged.values())


def _fused_kwargs(params: List[Dict], enabled: bool) -> Dict:
    """``{"fused": True}`` where torch has a fused kernel for every parameter's device
    (CUDA, and CPU since torch 2.4), ``{"foreach": True}`` on other devices that support it,
    ``{}`` when ``enabled`` is False (torch's default implementation)."""
    if not enabled:
        return {}
    devices = {p.device.type for g in params for p in g["params"]}
    try:
        from torch.optim.optimizer import _get_fused_kernels_supported_devices

        fused_ok = set(_get_fused_kernels_supported_devices())
    except ImportError:  # older or newer torch without the helper: foreach is always safe
        fused_ok = set()
    floating = all(p.is_floating_point() for g in params for p in g["params"])
    if devices and devices <= fused_ok and floating:
        return {"fused": True}
    return {"foreach": True}


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """SGD or Adam from ``cfg.SOLVER``.

    Parameters with equal learning rate and weight decay share one param group; with
    ``SOLVER.FUSED`` the optimizer runs torch's fused kernel (or its foreach implementation
    on devices without one).

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
    params = reduce_param_groups(params)
    name = s.OPTIMIZER
    if name not in ("SGD", "Adam"):
        raise ValueError(f"Unknown SOLVER.OPTIMIZER '{name}' (use 'SGD' or 'Adam')")
    kwargs = _fused_kwargs(params, bool(s.FUSED))
    if name == "SGD":
        return torch.optim.SGD(
            params, lr=s.BASE_LR, momentum=s.MOMENTUM, nesterov=s.NESTEROV, **kwargs
        )
    if name == "Adam":
        return torch.optim.Adam(params, lr=s.BASE_LR, **kwargs)
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
