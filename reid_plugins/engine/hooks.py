"""Standard training hooks."""

from __future__ import annotations

import itertools
import logging
import time
from typing import Callable, Iterable, List, Optional

import torch
from fvcore.nn.precise_bn import get_bn_modules, update_bn_stats

from ..checkpoint import PeriodicCheckpointer as _FvPeriodicCheckpointer
from ..utils import comm
from ..utils.events import EventWriter, Timer
from .train_loop import HookBase

__all__ = [
    "CallbackHook",
    "IterationTimer",
    "LRScheduler",
    "PeriodicCheckpointer",
    "EvalHook",
    "PeriodicWriter",
    "PreciseBN",
    "DataInitHook",
]

logger = logging.getLogger(__name__)


class CallbackHook(HookBase):
    """A hook built from plain functions, each called as ``fn(trainer)``."""

    def __init__(
        self, *, before_train=None, after_train=None, before_step=None, after_step=None
    ) -> None:
        self._before_train = before_train
        self._after_train = after_train
        self._before_step = before_step
        self._after_step = after_step

    def before_train(self) -> None:
        if self._before_train:
            self._before_train(self.trainer)

    def after_train(self) -> None:
        if self._after_train:
            self._after_train(self.trainer)

    def before_step(self) -> None:
        if self._before_step:
            self._before_step(self.trainer)

    def after_step(self) -> None:
        if self._after_step:
            self._after_step(self.trainer)


class IterationTimer(HookBase):
    """Puts the per-iteration wall time as ``time`` and logs the total at the end.

    Register it first so that its measure includes the other hooks.

    Args:
        warmup_iter: iterations excluded from the summary average.
    """

    def __init__(self, warmup_iter: int = 3) -> None:
        self._warmup_iter = warmup_iter
        self._step_timer = Timer()
        self._start = 0.0
        self._total_timer = Timer()

    def before_train(self) -> None:
        self._start = time.perf_counter()
        self._total_timer.reset()
        self._total_timer.pause()

    def after_train(self) -> None:
        total = time.perf_counter() - self._start
        hook_time = total - self._total_timer.seconds()
        num_iter = self.trainer.storage.iter + 1 - self.trainer.start_iter - self._warmup_iter
        if num_iter > 0 and self._total_timer.seconds() > 0:
            logger.info(
                "Overall training speed: %d iterations in %.1fs (%.4f s / it)",
                num_iter,
                self._total_timer.seconds(),
                self._total_timer.seconds() / num_iter,
            )
        logger.info("Total training time: %.1fs (%.1fs on hooks)", total, hook_time)

    def before_step(self) -> None:
        self._step_timer.reset()
        self._total_timer.resume()

    def after_step(self) -> None:
        iter_done = self.trainer.storage.iter - self.trainer.start_iter + 1
        if iter_done >= self._warmup_iter:
            sec = self._step_timer.seconds()
            self.trainer.storage.put_scalars(time=sec)
        else:
            self._start = time.perf_counter()
            self._total_timer.reset()
        self._total_timer.pause()


class LRScheduler(HookBase):
    """Records the LR (``lr``) and steps a per-iteration scheduler after each step.

    Its state (the scheduler's ``last_epoch``) is part of the trainer's state dict, so a
    resumed run uses the same LR at the same iteration.
    """

    def __init__(self, optimizer: Optional[torch.optim.Optimizer] = None, scheduler=None) -> None:
        self._optimizer = optimizer
        self._scheduler = scheduler

    def before_train(self) -> None:
        self._optimizer = self._optimizer or self.trainer.optimizer
        self._scheduler = self._scheduler or self.trainer.scheduler

    def after_step(self) -> None:
        lr = max(g["lr"] for g in self._optimizer.param_groups)
        self.trainer.storage.put_scalar("lr", lr, smoothing_hint=False)
        self._scheduler.step()

    @property
    def scheduler(self):
        return self._scheduler or self.trainer.scheduler

    def state_dict(self) -> dict:
        return self.scheduler.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        logger.info("Loading scheduler from state_dict ...")
        self.scheduler.load_state_dict(state_dict)
        # Re-apply the LR of the restored iteration to the optimizer.
        for group, lr in zip(self.scheduler.optimizer.param_groups, self.scheduler.get_lr()):
            group["lr"] = lr
        self.scheduler._last_lr = [g["lr"] for g in self.scheduler.optimizer.param_groups]


class PeriodicCheckpointer(_FvPeriodicCheckpointer, HookBase):
    """Saves ``model_XXXXXXX.pth`` every ``period`` iterations and ``model_final.pth``.

    Args are fvcore's: ``(checkpointer, period, max_iter=None, max_to_keep=None)``;
    ``max_iter`` defaults to the trainer's.
    """

    def before_train(self) -> None:
        self.max_iter = self.trainer.max_iter

    def after_step(self) -> None:
        # The trainer's own state (optimizer, scheduler, RNG, iteration) is a checkpointable.
        self.step(self.trainer.iter)


class EvalHook(HookBase):
    """Runs ``eval_function()`` every ``eval_period`` iterations and after the last one.

    ``eval_function`` returns a nested dict of metrics; leaves are put in the storage as
    ``<group>/<name>`` (e.g. ``reid/mAP``).

    Args:
        eval_period: period in iterations (0 = only after training).
        eval_function: zero-argument function returning the results dict.
        eval_after_train: also evaluate after the last iteration.
    """

    def __init__(
        self, eval_period: int, eval_function: Callable[[], dict], eval_after_train: bool = True
    ) -> None:
        self._period = eval_period
        self._func = eval_function
        self._eval_after_train = eval_after_train

    def _do_eval(self) -> None:
        results = self._func()
        if results and comm.is_main_process():
            flat = flatten_results_dict(results)
            for k, v in flat.items():
                try:
                    self.trainer.storage.put_scalar(k, float(v), smoothing_hint=False)
                except (TypeError, ValueError) as e:
                    raise ValueError(f"Evaluation returned a non-scalar metric '{k}': {v!r}") from e
        comm.synchronize()

    def after_step(self) -> None:
        next_iter = self.trainer.iter + 1
        if (
            self._period > 0
            and next_iter % self._period == 0
            and next_iter != self.trainer.max_iter
        ):
            self._do_eval()

    def after_train(self) -> None:
        # Only when training completed (not after an exception).
        if self._eval_after_train and self.trainer.iter >= self.trainer.max_iter:
            self._do_eval()


def flatten_results_dict(results: dict, prefix: str = "") -> dict:
    """``{"reid": {"mAP": 1}}`` -> ``{"reid/mAP": 1}`` (non-dict leaves kept)."""
    out = {}
    for k, v in results.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten_results_dict(v, key))
        else:
            out[key] = v
    return out


class PeriodicWriter(HookBase):
    """Calls every writer's ``write()`` every ``period`` iterations and at the end."""

    def __init__(self, writers: Iterable[EventWriter], period: int = 20) -> None:
        self._writers: List[EventWriter] = list(writers)
        self._period = period

    def after_step(self) -> None:
        if (
            self.trainer.iter + 1
        ) % self._period == 0 or self.trainer.iter == self.trainer.max_iter - 1:
            for w in self._writers:
                w.write()

    def after_train(self) -> None:
        for w in self._writers:
            w.write()
            w.close()


class PreciseBN(HookBase):
    """Recomputes BN running statistics with fvcore's ``update_bn_stats`` before evaluation.

    Args:
        period: run every ``period`` iterations (and after the last); 0 = only at the end.
        model: the model whose BN layers are updated.
        data_loader: training data (iterated ``num_iter`` times).
        num_iter: batches used.
    """

    def __init__(
        self, period: int, model: torch.nn.Module, data_loader: Iterable, num_iter: int
    ) -> None:
        self._period = period
        self._model = model
        self._data_loader = data_loader
        self._num_iter = num_iter
        self._data_iter = None
        if len(get_bn_modules(model)) == 0:
            logger.info("PreciseBN is disabled because the model has no training-mode BN")
            self._disabled = True
        else:
            self._disabled = False

    def after_step(self) -> None:
        next_iter = self.trainer.iter + 1
        is_final = next_iter == self.trainer.max_iter
        if is_final or (self._period > 0 and next_iter % self._period == 0):
            self.update_stats()

    def update_stats(self) -> None:
        if self._disabled:
            return
        if self._data_iter is None:
            self._data_iter = iter(self._data_loader)

        def data_loader():
            for num_iter in itertools.count(1):
                if num_iter % 100 == 0:
                    logger.info(
                        "Running precise-BN ... %d/%d iterations.", num_iter, self._num_iter
                    )
                yield next(self._data_iter)

        with torch.no_grad():
            logger.info("Running precise-BN for %d iterations ...", self._num_iter)
            update_bn_stats(self._model, data_loader(), self._num_iter)


class DataInitHook(HookBase):
    """Before the first iteration, lets the model initialise state from its training data.

    Calls ``model.initialize_from_data(loaders_fn)`` (e.g. :class:`ReIDBaseline` and M3L fill
    their per-domain memories by feature extraction, and skip it when a resumed checkpoint
    restored them). The trainer only supplies the data; what to initialise, and whether, is
    the model's business.

    Args:
        model: a model with ``initialize_from_data(loaders_fn)``.
        loaders_fn: zero-argument function returning one finite loader per training domain
            (evaluation transforms), built lazily by the model only when it needs them.
    """

    def __init__(self, model: torch.nn.Module, loaders_fn: Callable[[], List[Iterable]]) -> None:
        self._model = model
        self._loaders_fn = loaders_fn

    def before_train(self) -> None:
        self._model.initialize_from_data(self._loaders_fn)
