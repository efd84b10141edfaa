"""Training loop primitives: ``HookBase``, ``TrainerBase`` and ``SimpleTrainer``."""

from __future__ import annotations

import logging
import random
import time
import weakref
from typing import Callable, Iterable, List, Mapping, Optional, Union

import numpy as np
import torch
from torch import nn

from ..solver.precision import AMP_DTYPES
from ..utils import comm
from ..utils.errors import is_user_error
from ..utils.events import EventStorage, get_event_storage

__all__ = [
    "HookBase",
    "TrainerBase",
    "SimpleTrainer",
    "AMPTrainer",
    "AMP_DTYPES",
    "NonFiniteLossError",
]

logger = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite; the message names the term and the iteration."""


class HookBase:
    """Base class for hooks that can be registered with :class:`TrainerBase`.

    Hooks run in registration order: ``before_train``, then for each iteration
    ``before_step`` / ``after_backward`` / ``after_step``, then ``after_train``. ``self.trainer``
    is a weak proxy to the trainer, set on registration.

    Hooks holding state that must survive a resume implement ``state_dict`` /
    ``load_state_dict``; the trainer includes them in its own state dict.
    """

    trainer: "TrainerBase" = None  # type: ignore[assignment]

    def before_train(self) -> None:
        """Called once before the first iteration."""

    def after_train(self) -> None:
        """Called once after the last iteration (also when training stops with an error)."""

    def before_step(self) -> None:
        """Called before each iteration."""

    def after_backward(self) -> None:
        """Called after the backward pass, before the optimizer step (SimpleTrainer)."""

    def after_step(self) -> None:
        """Called after each iteration."""

    def state_dict(self) -> dict:
        return {}


class TrainerBase:
    """Iteration-based trainer with hooks.

    Attributes:
        iter: the current iteration (0-based).
        start_iter: first iteration to run (set by resume).
        max_iter: iterations stop at ``max_iter - 1``.
        storage: the :class:`EventStorage` used during training.
    """

    def __init__(self) -> None:
        self._hooks: List[HookBase] = []
        self.iter: int = 0
        self.start_iter: int = 0
        self.max_iter: int = 0
        self.storage: EventStorage

    def register_hooks(self, hooks: Iterable[Optional[HookBase]]) -> None:
        """Append hooks (``None`` entries are ignored); each gets ``hook.trainer``."""
        for h in hooks:
            if h is None:
                continue
            if not isinstance(h, HookBase):
                raise TypeError(f"Hooks must be HookBase instances, got {type(h)}")
            h.trainer = weakref.proxy(self)
            self._hooks.append(h)

    def train(self, start_iter: int, max_iter: int) -> None:
        """Run iterations ``start_iter .. max_iter-1`` with the hooks."""
        logger.info("Starting training from iteration %d", start_iter)
        self.iter = self.start_iter = start_iter
        self.max_iter = max_iter
        with EventStorage(start_iter) as self.storage:
            try:
                self.before_train()
                for self.iter in range(start_iter, max_iter):
                    self.before_step()
                    self.run_step()
                    self.after_step()
                # ``self.iter == max_iter`` signals completion to after_train hooks.
                self.iter += 1
            except Exception as e:
                if is_user_error(e):  # reported as one line by the tools; traceback in the log
                    logger.debug("Training stopped at iteration %d:", self.iter, exc_info=True)
                else:
                    logger.exception("Exception during training:")
                raise
            finally:
                self.after_train()

    def before_train(self) -> None:
        for h in self._hooks:
            h.before_train()

    def after_train(self) -> None:
        self.storage.iter = self.iter
        for h in self._hooks:
            h.after_train()

    def before_step(self) -> None:
        self.storage.iter = self.iter
        for h in self._hooks:
            h.before_step()

    def after_backward(self) -> None:
        for h in self._hooks:
            h.after_backward()

    def after_step(self) -> None:
        for h in self._hooks:
            h.after_step()

    def run_step(self) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict:
        """Iteration, hook states and RNG states (for an exact ``--resume``)."""
        hooks_state = {}
        for h in self._hooks:
            sd = h.state_dict()
            if sd:
                name = type(h).__qualname__
                if name in hooks_state:
                    logger.warning("Two hooks of type %s hold state; only the first is saved", name)
                    continue
                hooks_state[name] = sd
        return {"iteration": self.iter, "hooks": hooks_state, "rng": _get_rng_states()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.iter = self.start_iter = int(state_dict["iteration"])
        for key, value in state_dict.get("hooks", {}).items():
            for h in self._hooks:
                if type(h).__qualname__ == key:
                    h.load_state_dict(value)  # type: ignore[attr-defined]
                    break
            else:
                logger.warning("Cannot find a hook '%s' to load its state", key)
        if "rng" in state_dict:
            _set_rng_states(state_dict["rng"])


def _get_rng_states() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_states(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class SimpleTrainer(TrainerBase):
    """One forward/backward/step per iteration.

    ``model(batch)`` must return ``dict[str, Tensor]`` of losses (summed for backward).

    Args:
        model: the model (possibly DDP-wrapped), in training mode.
        data_loader: an iterable of batches (iterated forever).
        optimizer: a torch optimizer.
        grad_clipper: optional ``fn(parameters)`` called after backward.
    """

    def __init__(
        self,
        model: nn.Module,
        data_loader: Iterable,
        optimizer: torch.optim.Optimizer,
        grad_clipper: Optional[Callable] = None,
    ) -> None:
        super().__init__()
        model.train()
        self.model = model
        self.data_loader = data_loader
        self._data_loader_iter_obj = None
        self.optimizer = optimizer
        self.grad_clipper = grad_clipper

    @property
    def _data_loader_iter(self):
        if self._data_loader_iter_obj is None:
            self._data_loader_iter_obj = iter(self.data_loader)
        return self._data_loader_iter_obj

    def run_step(self) -> None:
        assert self.model.training, "SimpleTrainer: model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        loss_dict = self.forward_losses(data)
        losses = self.sum_losses(loss_dict)
        self.optimizer.zero_grad(set_to_none=True)
        self.backward(losses)
        self.after_backward()
        if self.grad_clipper is not None:
            self.clip_gradients()
        self.write_metrics(loss_dict, data_time)
        self.optimizer_step()

    # The four steps below are what :class:`AMPTrainer` changes.
    def forward_losses(self, data) -> Mapping[str, torch.Tensor]:
        """The model's loss dict on one batch."""
        return self.model(data)

    def backward(self, losses: torch.Tensor) -> None:
        losses.backward()

    def clip_gradients(self) -> None:
        self.grad_clipper(self.model.parameters())

    def optimizer_step(self) -> None:
        self.optimizer.step()

    def sum_losses(self, loss_dict: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Sum the loss dict after checking every term is finite.

        Raises:
            NonFiniteLossError: naming each non-finite term and the iteration.
        """
        if not isinstance(loss_dict, Mapping) or not loss_dict:
            raise TypeError(
                "In training mode the model must return a non-empty dict of loss tensors, "
                f"got {type(loss_dict)}"
            )
        bad = {k: float(v.detach()) for k, v in loss_dict.items() if not torch.isfinite(v).all()}
        if bad:
            terms = ", ".join(f"{k}={v}" for k, v in bad.items())
            raise NonFiniteLossError(
                f"Loss became non-finite at iteration {self.iter}: {terms}. "
                "Lower SOLVER.BASE_LR, enable SOLVER.CLIP_GRADIENTS, or check the input data."
            )
        return sum(loss_dict.values())

    def write_metrics(self, loss_dict: Mapping[str, torch.Tensor], data_time: float) -> None:
        """Average the losses over processes and put them in the event storage."""
        metrics = {k: v.detach().float() for k, v in loss_dict.items()}
        metrics = comm.reduce_dict(metrics)
        if comm.is_main_process():
            storage = get_event_storage()
            storage.put_scalar("data_time", data_time)
            total = 0.0
            for k, v in metrics.items():
                storage.put_scalar(k, v)
                total += float(v)
            storage.put_scalar("total_loss", total)

    def step_state_dict(self) -> dict:
        """State of the optimisation step itself (the optimizer; :class:`AMPTrainer` adds its
        grad scaler); part of :meth:`state_dict` and of ``DefaultTrainer``'s checkpoints."""
        return {"optimizer": self.optimizer.state_dict()}

    def load_step_state_dict(self, state_dict: dict) -> None:
        self.optimizer.load_state_dict(state_dict["optimizer"])

    def state_dict(self) -> dict:
        sd = super().state_dict()
        sd.update(self.step_state_dict())
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.load_step_state_dict(state_dict)


class AMPTrainer(SimpleTrainer):
    """:class:`SimpleTrainer` with automatic mixed precision (``SOLVER.AMP.ENABLED``).

    The forward pass runs under ``torch.autocast`` in ``dtype``; with float16 the loss is scaled
    by a ``torch.amp.GradScaler`` (bfloat16 has float32's range and needs no scaling), the
    gradients are unscaled before clipping, and steps whose gradients overflowed are skipped
    by the scaler. The scaler's state is part of :meth:`state_dict`, so ``--resume`` continues
    with the same scale. Hooks' ``after_backward`` sees the scaled gradients.

    Args:
        model, data_loader, optimizer, grad_clipper: as :class:`SimpleTrainer`.
        dtype: ``"float16"``, ``"bfloat16"`` or ``"auto"`` (float16 on CUDA, bfloat16 on CPU),
            or a ``torch.dtype`` (as resolved by
            :func:`~reid_plugins.solver.precision.resolve_amp_dtype`).
        device_type: ``"cuda"`` or ``"cpu"``; default: where the model's parameters are.
    """

    def __init__(
        self,
        model: nn.Module,
        data_loader: Iterable,
        optimizer: torch.optim.Optimizer,
        grad_clipper: Optional[Callable] = None,
        *,
        dtype: Union[str, torch.dtype] = "auto",
        device_type: Optional[str] = None,
    ) -> None:
        super().__init__(model, data_loader, optimizer, grad_clipper=grad_clipper)
        if isinstance(dtype, torch.dtype):
            if dtype not in (torch.float16, torch.bfloat16):
                raise ValueError(f"AMPTrainer: dtype must be float16 or bfloat16, got {dtype}")
            dtype = str(dtype).replace("torch.", "")
        if dtype not in AMP_DTYPES:
            raise ValueError(f"SOLVER.AMP.DTYPE must be one of {AMP_DTYPES}, got {dtype!r}")
        if device_type is None:
            param = next(model.parameters(), None)
            device_type = param.device.type if param is not None else "cpu"
        self.device_type = device_type
        if dtype == "auto":
            dtype = "float16" if device_type == "cuda" else "bfloat16"
        self.dtype = getattr(torch, dtype)
        self.grad_scaler = torch.amp.GradScaler(device_type, enabled=self.dtype == torch.float16)

    def forward_losses(self, data) -> Mapping[str, torch.Tensor]:
        with torch.autocast(device_type=self.device_type, dtype=self.dtype):
            loss_dict = self.model(data)
        return {k: v.float() for k, v in loss_dict.items()}

    def backward(self, losses: torch.Tensor) -> None:
        self.grad_scaler.scale(losses).backward()

    def clip_gradients(self) -> None:
        self.grad_scaler.unscale_(self.optimizer)
        super().clip_gradients()

    def optimizer_step(self) -> None:
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()

    def step_state_dict(self) -> dict:
        return {**super().step_state_dict(), "grad_scaler": self.grad_scaler.state_dict()}

    def load_step_state_dict(self, state_dict: dict) -> None:
        super().load_step_state_dict(state_dict)
        if "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])
