"""Training metrics storage and writers (console, JSON lines, TensorBoard)."""

from __future__ import annotations

import datetime
import json
import logging
import os
import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

__all__ = [
    "HistoryBuffer",
    "EventStorage",
    "get_event_storage",
    "EventWriter",
    "CommonMetricPrinter",
    "JSONWriter",
    "TensorboardXWriter",
]

_CURRENT_STORAGE_STACK: List["EventStorage"] = []


def get_event_storage() -> "EventStorage":
    """The innermost active :class:`EventStorage` (inside ``with EventStorage():``).

    Raises:
        RuntimeError: no storage is active.
    """
    if not _CURRENT_STORAGE_STACK:
        raise RuntimeError("get_event_storage() has to be called inside a 'with EventStorage(...)'")
    return _CURRENT_STORAGE_STACK[-1]


class HistoryBuffer:
    """A bounded history of ``(value, iteration)`` pairs with smoothing helpers."""

    def __init__(self, max_length: int = 1000000) -> None:
        self._max_length = max_length
        self._data: List[Tuple[float, float]] = []
        self._count = 0
        self._global_avg = 0.0

    def update(self, value: float, iteration: float) -> None:
        if len(self._data) == self._max_length:
            self._data.pop(0)
        self._data.append((value, iteration))
        self._count += 1
        self._global_avg += (value - self._global_avg) / self._count

    def latest(self) -> float:
        return self._data[-1][0]

    def median(self, window_size: int) -> float:
        return float(np.median([x[0] for x in self._data[-window_size:]]))

    def avg(self, window_size: int) -> float:
        return float(np.mean([x[0] for x in self._data[-window_size:]]))

    def global_avg(self) -> float:
        return self._global_avg

    def values(self) -> List[Tuple[float, float]]:
        return self._data


class EventStorage:
    """Per-iteration scalars written by the trainer, models and hooks.

    Use as a context manager; inside it :func:`get_event_storage` returns this object.
    ``put_scalar(name, value, smoothing_hint)`` records a value for the current ``iter``;
    writers read :meth:`latest` / :meth:`latest_with_smoothing_hint` / :meth:`history`.
    """

    def __init__(self, start_iter: int = 0) -> None:
        self._history: Dict[str, HistoryBuffer] = defaultdict(HistoryBuffer)
        self._smoothing_hints: Dict[str, bool] = {}
        self._latest_scalars: Dict[str, Tuple[float, int]] = {}
        self._iter = start_iter
        self._vis_data: list = []

    def put_scalar(self, name: str, value, smoothing_hint: bool = True) -> None:
        """Record ``value`` (float or 0-d tensor) under ``name`` for the current iteration."""
        if isinstance(value, torch.Tensor):
            value = value.detach().item()
        value = float(value)
        self._history[name].update(value, self._iter)
        self._latest_scalars[name] = (value, self._iter)
        existing = self._smoothing_hints.get(name)
        if existing is not None and existing != smoothing_hint:
            raise ValueError(f"Scalar '{name}' was put with different smoothing hints")
        self._smoothing_hints[name] = smoothing_hint

    def put_scalars(self, *, smoothing_hint: bool = True, **kwargs) -> None:
        """``put_scalar`` for each keyword argument."""
        for k, v in kwargs.items():
            self.put_scalar(k, v, smoothing_hint=smoothing_hint)

    def history(self, name: str) -> HistoryBuffer:
        """The :class:`HistoryBuffer` of ``name``.

        Raises:
            KeyError: nothing was recorded under ``name``.
        """
        if name not in self._history:
            raise KeyError(f"No history metric available for '{name}'")
        return self._history[name]

    def histories(self) -> Dict[str, HistoryBuffer]:
        return self._history

    def latest(self) -> Dict[str, Tuple[float, int]]:
        """``{name: (value, iteration)}`` of the most recent value of every scalar."""
        return self._latest_scalars

    def latest_with_smoothing_hint(self, window_size: int = 20) -> Dict[str, Tuple[float, int]]:
        """Like :meth:`latest` but median-smoothed over ``window_size`` when hinted."""
        out = {}
        for k, (v, itr) in self._latest_scalars.items():
            out[k] = (self._history[k].median(window_size) if self._smoothing_hints[k] else v, itr)
        return out

    def step(self) -> None:
        """Advance to the next iteration (the trainer calls it)."""
        self._iter += 1

    @property
    def iter(self) -> int:
        return self._iter

    @iter.setter
    def iter(self, val: int) -> None:
        self._iter = int(val)

    def __enter__(self) -> "EventStorage":
        _CURRENT_STORAGE_STACK.append(self)
        return self

    def __exit__(self, *exc) -> None:
        assert _CURRENT_STORAGE_STACK[-1] is self
        _CURRENT_STORAGE_STACK.pop()

    @contextmanager
    def name_scope(self, prefix: str):
        """Prefix scalar names put inside the block with ``prefix/``."""
        orig = self.put_scalar

        def scoped(name, value, smoothing_hint=True):
            orig(f"{prefix}/{name}", value, smoothing_hint)

        self.put_scalar = scoped  # type: ignore[method-assign]
        try:
            yield
        finally:
            self.put_scalar = orig  # type: ignore[method-assign]


class EventWriter:
    """Base class of writers called periodically by :class:`PeriodicWriter`."""

    def write(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class CommonMetricPrinter(EventWriter):
    """Prints iteration, ETA, losses, time and LR to the console/log."""

    def __init__(self, max_iter: int, window_size: int = 20) -> None:
        self.logger = logging.getLogger("reid_plugins.train")
        self._max_iter = max_iter
        self._window_size = window_size

    def write(self) -> None:
        storage = get_event_storage()
        iteration = storage.iter
        if iteration >= self._max_iter:
            return
        eta = ""
        try:
            iter_time = storage.history("time").global_avg()
            eta_s = iter_time * (self._max_iter - iteration - 1)
            eta = f"eta: {datetime.timedelta(seconds=int(eta_s))}  "
            time_s = f"time: {storage.history('time').avg(self._window_size):.4f}  "
        except KeyError:
            time_s = ""
        try:
            lr = f"lr: {storage.history('lr').latest():.3e}  "
        except KeyError:
            lr = ""
        losses = "  ".join(
            f"{k}: {v.median(self._window_size):.4g}"
            for k, v in storage.histories().items()
            if "loss" in k
        )
        self.logger.info(f"{eta}iter: {iteration + 1}/{self._max_iter}  {losses}  {time_s}{lr}")


class JSONWriter(EventWriter):
    """Appends one JSON object per write to ``json_file`` (``metrics.json``)."""

    def __init__(self, json_file: str, window_size: int = 20) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(json_file)), exist_ok=True)
        self._file = open(json_file, "a")
        self._window_size = window_size
        self._last_write = -1

    def write(self) -> None:
        storage = get_event_storage()
        by_iter: Dict[int, dict] = defaultdict(dict)
        for k, (v, itr) in storage.latest_with_smoothing_hint(self._window_size).items():
            if itr <= self._last_write:
                continue
            by_iter[itr][k] = v
        for itr in sorted(by_iter):
            self._file.write(json.dumps({"iteration": itr, **by_iter[itr]}, sort_keys=True) + "\n")
        if by_iter:
            self._last_write = max(by_iter)
        self._file.flush()
        try:
            os.fsync(self._file.fileno())
        except OSError:
            pass

    def close(self) -> None:
        self._file.close()


class TensorboardXWriter(EventWriter):
    """Writes every new scalar to TensorBoard (``torch.utils.tensorboard``)."""

    def __init__(self, log_dir: str, window_size: int = 20) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir)
        self._window_size = window_size
        self._last_write = -1

    def write(self) -> None:
        storage = get_event_storage()
        new_last = self._last_write
        for k, (v, itr) in storage.latest_with_smoothing_hint(self._window_size).items():
            if itr > self._last_write:
                self._writer.add_scalar(k, v, itr)
                new_last = max(new_last, itr)
        self._last_write = new_last
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class Timer:
    """Minimal wall-clock timer with pause/resume (used by hooks)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._start = time.perf_counter()
        self._paused: Optional[float] = None
        self._total_paused = 0.0

    def pause(self) -> None:
        if self._paused is None:
            self._paused = time.perf_counter()

    def resume(self) -> None:
        if self._paused is not None:
            self._total_paused += time.perf_counter() - self._paused
            self._paused = None

    def seconds(self) -> float:
        end = self._paused if self._paused is not None else time.perf_counter()
        return end - self._start - self._total_paused
