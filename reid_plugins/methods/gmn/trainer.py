"""GMN training support: the Dropout-based Perturbation warm-up hook and ``GMNTrainer``.

``GMNTrainer`` (``TRAINER.NAME: GMNTrainer``) is a :class:`DefaultTrainer` that

* registers :class:`DPWarmupHook`, which switches M-Net's DP on once the iteration reaches
  ``MODEL.GMN.DP.WARMUP_ITERS`` (the flag lives in a checkpointed buffer of the model);
* evaluates with :class:`~reid_plugins.evaluation.ReIDEvaluator` whose ``pairwise_fn`` is the
  model's ``pairwise_distance`` (fused M-Net scores) when ``MODEL.GMN.TEST.ENABLED``, and the
  plain cosine distance otherwise.
"""

from __future__ import annotations

import logging
import os
from typing import Callable, List, Optional

import torch

from reid_plugins.engine.defaults import TRAINER_REGISTRY, DefaultTrainer
from reid_plugins.engine.hooks import HookBase
from reid_plugins.utils import comm

__all__ = ["DPWarmupHook", "GMNTrainer", "find_gmn_model"]

logger = logging.getLogger(__name__)


def find_gmn_model(model: torch.nn.Module) -> Optional[torch.nn.Module]:
    """The module with ``pairwise_distance`` inside DDP / test-time wrappers (``.module`` /
    ``.model`` attributes), or None."""
    seen = 0
    while model is not None and seen < 8:
        if hasattr(model, "pairwise_distance") and hasattr(model, "set_dp_active"):
            return model
        inner = getattr(model, "module", None)
        model = inner if inner is not None else getattr(model, "model", None)
        seen += 1
    return None


class DPWarmupHook(HookBase):
    """Turns on Dropout-based Perturbation from iteration ``start_iter`` on.

    ``before_train`` sets the model's flag to ``trainer.start_iter >= start_iter`` (so a run
    started from weights whose flag was on, at an iteration before the warm-up ends, trains
    without DP until then; a resumed run past the warm-up keeps it on). ``before_step`` sets it
    at the first iteration ``>= start_iter``. The flag is a buffer of the model (checkpointed
    with it), so the hook holds no state of its own.

    Args:
        model: a model with ``set_dp_active(bool)`` and a ``dp_active`` property (GMN).
        start_iter: first iteration with DP.
    """

    def __init__(self, model: torch.nn.Module, start_iter: int) -> None:
        if not hasattr(model, "set_dp_active"):
            raise TypeError(f"DPWarmupHook needs a model with set_dp_active(), got {type(model)}")
        if int(start_iter) < 0:
            raise ValueError(f"MODEL.GMN.DP.WARMUP_ITERS must be >= 0, got {start_iter}")
        self._model = model
        self.start_iter = int(start_iter)

    def _set(self, active: bool, where: str) -> None:
        if bool(self._model.dp_active) != active:
            self._model.set_dp_active(active)
            logger.info("Dropout-based Perturbation %s %s", "on" if active else "off", where)

    def before_train(self) -> None:
        start = int(self.trainer.start_iter)
        self._set(
            start >= self.start_iter,
            f"at the start (iteration {start}; warm-up ends at {self.start_iter})",
        )

    def before_step(self) -> None:
        if self.trainer.iter >= self.start_iter and not self._model.dp_active:
            self._set(True, f"from iteration {self.trainer.iter}")


def gmn_pairwise_fn(cfg, model: Optional[torch.nn.Module]) -> Optional[Callable]:
    """``model.pairwise_distance`` when the model uses M-Net at test time, else None
    (cosine ranking)."""
    gmn = find_gmn_model(model) if model is not None else None
    if gmn is None or not getattr(gmn, "uses_metric_net_at_test", False):
        return None
    return gmn.pairwise_distance


@TRAINER_REGISTRY.register()
class GMNTrainer(DefaultTrainer):
    """:class:`DefaultTrainer` + DP warm-up hook + M-Net scoring in evaluation."""

    def build_hooks(self) -> List[HookBase]:
        ret = super().build_hooks()
        hook = self.build_dp_hook()
        if hook is not None:
            ret.insert(1, hook)  # right after the iteration timer, before anything steps
        return ret

    def build_dp_hook(self) -> Optional[DPWarmupHook]:
        """A :class:`DPWarmupHook` when the model has an M-Net with DP enabled, else None."""
        cfg = self.cfg
        model = find_gmn_model(self.model_without_ddp)
        mnet = getattr(model, "metric_net", None)
        if mnet is None or not cfg.MODEL.GMN.DP.ENABLED or mnet.dp_rate <= 0:
            return None
        return DPWarmupHook(model, cfg.MODEL.GMN.DP.WARMUP_ITERS)

    @classmethod
    def build_evaluator(
        cls,
        cfg,
        dataset_name: str,
        output_folder: Optional[str] = None,
        model: Optional[torch.nn.Module] = None,
    ):
        """``ReIDEvaluator`` with ``pairwise_fn = model.pairwise_distance`` when the model
        scores pairs with M-Net (``MODEL.GMN.TEST.ENABLED``), else the cosine evaluator."""
        from reid_plugins.evaluation.reid_evaluation import ReIDEvaluator

        fn = gmn_pairwise_fn(cfg, model)
        if comm.is_main_process():
            logger.info(
                "GMN evaluation on %s: %s",
                dataset_name,
                (
                    "cosine distance"
                    if fn is None
                    else f"M-Net fused distance (top-k={cfg.MODEL.GMN.TEST.TOPK or 'all'}, "
                    f"w={cfg.MODEL.GMN.TEST.FUSION_WEIGHT})"
                ),
            )
        return ReIDEvaluator.from_config(
            cfg, dataset_name, output_dir=output_folder, pairwise_fn=fn
        )

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        """As :meth:`DefaultTrainer.test`, with evaluators bound to ``model``'s scoring."""
        if evaluators is None:
            evaluators = [
                cls.build_evaluator(
                    cfg, name, os.path.join(cfg.OUTPUT_DIR, "inference", name), model=model
                )
                for name in cfg.DATASETS.TEST
            ]
        return super().test(cfg, model, evaluators=evaluators)
