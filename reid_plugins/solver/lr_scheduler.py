"""LR schedules from fvcore param schedulers, with warm-up."""

from __future__ import annotations

from typing import List

import torch
from fvcore.common.param_scheduler import (
    CosineParamScheduler,
    MultiStepParamScheduler,
    ParamScheduler,
)

__all__ = ["WarmupParamScheduler", "LRMultiplier", "build_lr_scheduler"]


class WarmupParamScheduler(ParamScheduler):
    """Multiplies a base schedule by a warm-up factor over the first ``warmup_length``.

    Linear warm-up: factor goes from ``warmup_factor`` at ``where=0`` to 1 at
    ``where=warmup_length`` (``where`` = fraction of training); constant warm-up keeps
    ``warmup_factor`` until then.

    Args:
        scheduler: the base schedule (value 1 = base LR).
        warmup_factor: LR multiplier at the first iteration.
        warmup_length: warm-up duration as a fraction of training (``iters / max_iter``).
        warmup_method: "linear" or "constant".
    """

    def __init__(
        self,
        scheduler: ParamScheduler,
        warmup_factor: float,
        warmup_length: float,
        warmup_method: str = "linear",
    ) -> None:
        if warmup_method not in ("linear", "constant"):
            raise ValueError(
                f"SOLVER.WARMUP_METHOD must be 'linear' or 'constant', " f"got '{warmup_method}'"
            )
        self._base = scheduler
        self._factor = warmup_factor
        self._length = warmup_length
        self._method = warmup_method

    def __call__(self, where: float) -> float:
        value = self._base(where)
        if where >= self._length:
            return value
        if self._method == "constant":
            return value * self._factor
        alpha = where / self._length
        return value * (self._factor * (1 - alpha) + alpha)


class LRMultiplier(torch.optim.lr_scheduler.LRScheduler):
    """Sets ``lr = base_lr * multiplier(iter / max_iter)`` for every param group.

    ``step()`` is called once per iteration, after the optimizer step; the LR used at
    iteration ``i`` is ``multiplier(i / max_iter)``.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        multiplier: ParamScheduler,
        max_iter: int,
        last_iter: int = -1,
    ) -> None:
        if not isinstance(multiplier, ParamScheduler):
            raise TypeError("multiplier must be an fvcore ParamScheduler")
        self._multiplier = multiplier
        self._max_iter = max_iter
        super().__init__(optimizer, last_epoch=last_iter)

    def state_dict(self) -> dict:
        return {"base_lrs": self.base_lrs, "last_epoch": self.last_epoch}

    def get_lr(self) -> List[float]:
        m = self._multiplier(min(self.last_epoch / self._max_iter, 1.0))
        return [base_lr * m for base_lr in self.base_lrs]


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer) -> LRMultiplier:
    """Build SOLVER.LR_SCHEDULER_NAME with warm-up.

    ``WarmupMultiStepLR``: x GAMMA at each of SOLVER.STEPS; ``WarmupCosineLR``: cosine to 0.

    Raises:
        ValueError: unknown scheduler name or a step beyond MAX_ITER.
    """
    s = cfg.SOLVER
    name = s.LR_SCHEDULER_NAME
    max_iter = s.MAX_ITER
    if name == "WarmupMultiStepLR":
        steps = [x for x in s.STEPS if x <= max_iter]
        if len(steps) != len(s.STEPS):
            raise ValueError(
                f"SOLVER.STEPS {list(s.STEPS)} has values beyond SOLVER.MAX_ITER=" f"{max_iter}"
            )
        if list(steps) != sorted(steps):
            raise ValueError(f"SOLVER.STEPS must be increasing, got {list(steps)}")
        sched: ParamScheduler = MultiStepParamScheduler(
            values=[s.GAMMA**k for k in range(len(steps) + 1)],
            milestones=list(steps),
            num_updates=max_iter,
        )
    elif name == "WarmupCosineLR":
        sched = CosineParamScheduler(1.0, 0.0)
    else:
        raise ValueError(
            f"Unknown SOLVER.LR_SCHEDULER_NAME '{name}' "
            "(use WarmupMultiStepLR or WarmupCosineLR)"
        )
    sched = WarmupParamScheduler(
        sched, s.WARMUP_FACTOR, min(s.WARMUP_ITERS / max_iter, 1.0), s.WARMUP_METHOD
    )
    return LRMultiplier(optimizer, multiplier=sched, max_iter=max_iter)
