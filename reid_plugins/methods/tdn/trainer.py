"""TDN training support: the teacher-weight schedule (Eq. 4), its hook and ``TDNTrainer``.

``TDNTrainer`` (``TRAINER.NAME: TDNTrainer``) is the :class:`PersonSearchTrainer` (scene
loaders, person-search evaluation incl. RCP from ``TEST.SEARCH.RCP``) plus the training-only
teacher (built from ``MODEL.TDN.TEACHER`` and attached to the model when the model is built
for training, never for ``--eval-only``) and :class:`TeacherWeightHook`, which sets ``w`` of ``L_reid = w * L_t + L_ce`` on the model
before every iteration from ``trainer.iter`` (so resumed runs use the same ``w``).
"""

from __future__ import annotations

import logging
from typing import List, Optional, Sequence

import torch

from reid_plugins.engine.defaults import TRAINER_REGISTRY
from reid_plugins.engine.hooks import HookBase
from reid_plugins.engine.person_search_trainer import PersonSearchTrainer
from reid_plugins.modeling.meta_arch.build import resolve_device

from .teacher import build_teacher

__all__ = [
    "attach_teacher",
    "teacher_weight",
    "iters_per_epoch",
    "TeacherWeightHook",
    "TDNTrainer",
]

logger = logging.getLogger(__name__)


def teacher_weight(
    epoch: float,
    *,
    w_init: float = 5.0,
    w_final: float = 1.0,
    ramp_epochs: Sequence[float] = (15, 25),
) -> float:
    """``w(epoch)`` of TDN Eq. 4 (defaults): 5 for ``epoch < 15``, ``11 - 0.4 * epoch`` for
    ``15 <= epoch < 25``, 1 afterwards. In general: ``w_init`` before ``ramp_epochs[0]``,
    linear from ``w_init`` (at ``ramp_epochs[0]``) towards ``w_final`` (reached at
    ``ramp_epochs[1]``), ``w_final`` from ``ramp_epochs[1]`` on.

    Raises:
        ValueError: ``ramp_epochs`` is not ``[start, end]`` with ``start <= end``.
    """
    if len(ramp_epochs) != 2 or float(ramp_epochs[0]) > float(ramp_epochs[1]):
        raise ValueError(
            f"MODEL.TDN.TEACHER.RAMP_EPOCHS must be [start, end] with start <= end, got "
            f"{list(ramp_epochs)}"
        )
    start, end = float(ramp_epochs[0]), float(ramp_epochs[1])
    if epoch < start:
        return float(w_init)
    if epoch >= end:
        return float(w_final)
    return float(w_init) + (float(w_final) - float(w_init)) * (float(epoch) - start) / (end - start)


def iters_per_epoch(cfg, num_train_images: Optional[int] = None) -> int:
    """``SOLVER.ITERS_PER_EPOCH`` if > 0, else ``num_train_images // SOLVER.IMS_PER_BATCH``
    (at least 1).

    Raises:
        ValueError: ``ITERS_PER_EPOCH`` is 0 and the number of training images is unknown.
    """
    n = int(cfg.SOLVER.ITERS_PER_EPOCH)
    if n > 0:
        return n
    if num_train_images is None:
        raise ValueError("SOLVER.ITERS_PER_EPOCH is 0 and the training set size is unknown")
    return max(1, int(num_train_images) // max(1, int(cfg.SOLVER.IMS_PER_BATCH)))


def attach_teacher(model: torch.nn.Module, cfg) -> torch.nn.Module:
    """Build the teacher of ``cfg.MODEL.TDN.TEACHER`` (:func:`build_teacher`) and attach it to
    the TDN ``model`` (``set_teacher``, with the projection of ``TEACHER.PROJECTION``).
    Returns the teacher."""
    target = _find_tdn(model)
    if target is None:
        raise TypeError(f"attach_teacher needs a TDN model, got {type(model).__name__}")
    t = cfg.MODEL.TDN.TEACHER
    teacher, size = build_teacher(t, device=resolve_device(cfg.MODEL.DEVICE))
    target.set_teacher(teacher, size, projection=bool(t.PROJECTION))
    return teacher


def _find_tdn(model: torch.nn.Module) -> Optional[torch.nn.Module]:
    for _ in range(8):
        if model is None:
            return None
        if hasattr(model, "set_teacher_weight"):
            return model
        model = getattr(model, "module", None) or getattr(model, "model", None)
    return None


class TeacherWeightHook(HookBase):
    """Sets ``model.set_teacher_weight(teacher_weight(iter // iters_per_epoch, ...))`` before
    every step (and before training) and records it as the ``teacher_weight`` scalar.

    Args:
        model: a model with ``set_teacher_weight(float)`` (:class:`~reid_plugins.modeling.
            meta_arch.tdn.TDN`; DDP / wrappers are unwrapped).
        iters_per_epoch: iterations per epoch (> 0).
        w_init, w_final, ramp_epochs: the schedule of :func:`teacher_weight`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        iters_per_epoch: int,
        *,
        w_init: float = 5.0,
        w_final: float = 1.0,
        ramp_epochs: Sequence[float] = (15, 25),
    ) -> None:
        target = _find_tdn(model)
        if target is None:
            raise TypeError(
                f"TeacherWeightHook needs a model with set_teacher_weight(), got "
                f"{type(model).__name__}"
            )
        if int(iters_per_epoch) <= 0:
            raise ValueError(f"iters_per_epoch must be > 0, got {iters_per_epoch}")
        teacher_weight(0, w_init=w_init, w_final=w_final, ramp_epochs=ramp_epochs)  # validate
        self._model = target
        self.iters_per_epoch = int(iters_per_epoch)
        self.w_init, self.w_final = float(w_init), float(w_final)
        self.ramp_epochs = (float(ramp_epochs[0]), float(ramp_epochs[1]))

    def weight_at(self, iteration: int) -> float:
        """``w`` used at ``iteration`` (epoch = ``iteration // iters_per_epoch``)."""
        epoch = int(iteration) // self.iters_per_epoch
        return teacher_weight(
            epoch, w_init=self.w_init, w_final=self.w_final, ramp_epochs=self.ramp_epochs
        )

    def _apply(self, iteration: int) -> float:
        w = self.weight_at(iteration)
        self._model.set_teacher_weight(w)
        return w

    def before_train(self) -> None:
        self._apply(int(getattr(self.trainer, "start_iter", 0)))

    def before_step(self) -> None:
        w = self._apply(self.trainer.iter)
        storage = getattr(self.trainer, "storage", None)
        if storage is not None:
            storage.put_scalar("teacher_weight", w, smoothing_hint=False)


@TRAINER_REGISTRY.register()
class TDNTrainer(PersonSearchTrainer):
    """:class:`PersonSearchTrainer` + :class:`TeacherWeightHook` (when the model has a
    teacher). Evaluation (gallery + query passes, RCP from ``TEST.SEARCH.RCP``) is inherited."""

    @classmethod
    def build_model(cls, cfg, num_pids_per_domain: Optional[List[int]] = None) -> torch.nn.Module:
        """The TDN model; for training (``num_pids_per_domain`` given by the training loader)
        with the frozen teacher of ``MODEL.TDN.TEACHER`` attached when ``ENABLED``. Without
        ``num_pids_per_domain`` (``--eval-only``, tools) it is the inference model: the
        teacher's files are never opened."""
        model = super().build_model(cfg, num_pids_per_domain)
        if num_pids_per_domain is not None and cfg.MODEL.TDN.TEACHER.ENABLED:
            attach_teacher(model, cfg)
        return model

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """Person-search evaluation; the TDN query pass runs the detector on the query image
        (RCP context persons) only when ``TEST.SEARCH.RCP.ENABLED`` (and
        ``MODEL.TDN.REID.QUERY_CONTEXT``) in ``cfg``, whatever the model was built with."""
        tdn = _find_tdn(model)
        if tdn is None or not hasattr(tdn, "query_context"):
            return super().test(cfg, model, evaluators)
        saved = tdn.query_context
        tdn.query_context = bool(cfg.MODEL.TDN.REID.QUERY_CONTEXT and cfg.TEST.SEARCH.RCP.ENABLED)
        try:
            return super().test(cfg, model, evaluators)
        finally:
            tdn.query_context = saved

    def build_hooks(self) -> List[HookBase]:
        ret = super().build_hooks()
        hook = self.build_teacher_weight_hook()
        if hook is not None:
            ret.insert(1, hook)  # right after the iteration timer
        return ret

    def build_teacher_weight_hook(self) -> Optional[TeacherWeightHook]:
        model = _find_tdn(self.model_without_ddp)
        if model is None or getattr(model, "teacher", None) is None:
            return None
        cfg = self.cfg
        records = getattr(self._trainer.data_loader, "records", None)
        ipe = iters_per_epoch(cfg, len(records) if records is not None else None)
        t = cfg.MODEL.TDN.TEACHER
        logger.info(
            "Teacher weight w(epoch): %.2f -> %.2f over epochs %s, %d iterations per epoch",
            t.W_INIT, t.W_FINAL, list(t.RAMP_EPOCHS), ipe,
        )  # fmt: skip
        return TeacherWeightHook(
            model, ipe, w_init=t.W_INIT, w_final=t.W_FINAL, ramp_epochs=t.RAMP_EPOCHS
        )
