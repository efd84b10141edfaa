"""``check_config``: a config's mistakes found before any dataset or model is built.

It lives in the engine (not in :mod:`reid_plugins.config`) because it checks names against
the registries of the packages above the config: models, backbones, trainers, datasets.
"""

from __future__ import annotations

import difflib
import logging
import os
from typing import Any, Iterable

from ..config.config import CfgNode, ConfigError

__all__ = ["check_config"]

logger = logging.getLogger(__name__)


def _choices_error(key: str, value: Any, choices: Iterable[str], where: str) -> ConfigError:
    choices = sorted(str(c) for c in choices)
    close = difflib.get_close_matches(str(value), choices, n=3)
    did_you_mean = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    listed = ", ".join(choices) if len(choices) <= 12 else ", ".join(choices[:12]) + ", ..."
    return ConfigError(
        f"{key}={value!r}{where} is not registered{did_you_mean} (registered: {listed})"
    )


def check_config(cfg: "CfgNode", source: str = "") -> "CfgNode":
    """Validate ``cfg`` before anything is built; fix what detectron2 also fixes silently.

    Run by ``tools/train_net.py`` after merging the file and the overrides, so that a
    mistake is reported in a second, before datasets and model are built. Checks: the
    registered names (meta-architecture, backbone, trainer, datasets), the solver (optimizer,
    LR schedule, warm-up, gradient clipping: built on a dummy parameter), the input transforms
    and a few ranges. ``SOLVER.STEPS`` values at or beyond ``SOLVER.MAX_ITER`` are dropped with
    a warning (as detectron2 does), so that ``SOLVER.MAX_ITER 20`` works for a smoke test.

    Args:
        cfg: a full config (``add_all_configs`` applied); must not be frozen when steps are
            dropped.
        source: the config file, named in the messages.

    Returns:
        ``cfg`` (possibly with fewer ``SOLVER.STEPS``).

    Raises:
        ConfigError: naming the key, the value and what is accepted.
    """
    import torch

    where = f" (in '{source}' or the command line)" if source else ""
    s = cfg.SOLVER
    for key, value, low in (
        ("SOLVER.MAX_ITER", s.MAX_ITER, 1),
        ("SOLVER.IMS_PER_BATCH", s.IMS_PER_BATCH, 1),
        ("SOLVER.CHECKPOINT_PERIOD", s.CHECKPOINT_PERIOD, 1),
        ("SOLVER.WARMUP_ITERS", s.WARMUP_ITERS, 0),
        ("DATALOADER.NUM_WORKERS", cfg.DATALOADER.NUM_WORKERS, 0),
        ("LOG_PERIOD", cfg.LOG_PERIOD, 1),
        ("TEST.EVAL_PERIOD", cfg.TEST.EVAL_PERIOD, 0),
        ("TEST.IMS_PER_BATCH", cfg.TEST.IMS_PER_BATCH, 1),
    ):
        if int(value) != value or value < low:
            raise ConfigError(f"{key}={value}{where} must be an integer >= {low}")
    if not s.BASE_LR > 0:
        raise ConfigError(f"SOLVER.BASE_LR={s.BASE_LR}{where} must be > 0")
    steps = list(s.STEPS)
    if steps != sorted(steps) or any(x < 0 for x in steps):
        raise ConfigError(f"SOLVER.STEPS={steps}{where} must be non-negative and increasing")
    kept = [x for x in steps if x < s.MAX_ITER]  # a step at MAX_ITER would never act
    if len(kept) != len(steps):
        logger.warning(
            "SOLVER.STEPS %s has values at or beyond SOLVER.MAX_ITER=%d; they are ignored "
            "(steps: %s)",
            steps,
            s.MAX_ITER,
            kept,
        )
        was_frozen = cfg.is_frozen()
        cfg.defrost()
        cfg.SOLVER.STEPS = kept if isinstance(s.STEPS, list) else tuple(kept)
        if was_frozen:
            cfg.freeze()

    from ..data import DatasetCatalog
    from ..data import datasets as _builtin  # noqa: F401  (registers the built-in sets)
    from ..modeling.backbone.build import BACKBONE_REGISTRY
    from ..modeling.meta_arch.build import META_ARCH_REGISTRY
    from .defaults import TRAINER_REGISTRY

    for key, value, registry in (
        ("MODEL.META_ARCHITECTURE", cfg.MODEL.META_ARCHITECTURE, META_ARCH_REGISTRY),
        ("MODEL.BACKBONE.NAME", cfg.MODEL.BACKBONE.NAME, BACKBONE_REGISTRY),
        ("TRAINER.NAME", cfg.TRAINER.NAME, TRAINER_REGISTRY),
    ):
        if value not in registry:
            raise _choices_error(key, value, [k for k, _ in registry], where)
    registered = DatasetCatalog.list()
    for key in ("TRAIN", "TEST"):
        for name in cfg.DATASETS[key]:
            if name not in registered:
                raise _choices_error(f"DATASETS.{key} entry", name, registered, where)
    weights = cfg.MODEL.BACKBONE.PRETRAIN_PATH
    if weights and not os.path.isfile(weights):
        raise ConfigError(
            f"MODEL.BACKBONE.PRETRAIN_PATH='{weights}'{where} does not exist (a local file of "
            "ImageNet weights; '' = random initialisation)"
        )

    from ..data.transforms import build_reid_transforms
    from ..solver import build_grad_clipper, build_lr_scheduler, build_optimizer

    def dry_run(what, fn):
        try:
            fn()
        except (ValueError, KeyError, TypeError) as e:
            msg = e.args[0] if e.args else str(e)
            raise ConfigError(f"Invalid {what}{where}: {msg}") from e

    dummy = torch.nn.Linear(1, 1)
    dry_run("solver settings", lambda: build_lr_scheduler(cfg, build_optimizer(cfg, dummy)))
    dry_run("SOLVER.CLIP_GRADIENTS", lambda: build_grad_clipper(cfg))
    dry_run("INPUT settings", lambda: build_reid_transforms(cfg, is_train=True))
    dry_run("INPUT.SIZE_TEST", lambda: build_reid_transforms(cfg, is_train=False))
    from ..solver.precision import resolve_amp_dtype, resolve_channels_last

    amp, test_amp = cfg.SOLVER.AMP, cfg.TEST.AMP.ENABLED
    dry_run("SOLVER.AMP", lambda: resolve_amp_dtype(amp.ENABLED, amp.DTYPE, "cpu"))
    dry_run("TEST.AMP", lambda: resolve_amp_dtype(test_amp, "auto", "cpu", key="TEST.AMP"))
    dry_run("MODEL.CHANNELS_LAST", lambda: resolve_channels_last(cfg.MODEL.CHANNELS_LAST, None))
    return cfg


global_cfg = CfgNode()
