"""Optimizers and LR schedules."""

from .build import build_grad_clipper, build_optimizer, get_default_optimizer_params  # noqa: F401
from .lr_scheduler import LRMultiplier, WarmupParamScheduler, build_lr_scheduler  # noqa: F401
