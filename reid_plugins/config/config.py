"""Configuration system: a thin layer over fvcore's :class:`CfgNode`.

fvcore already implements ``_BASE_`` inheritance (relative paths resolved against the child
file) and strict key checking. This module adds what users of a research toolbox expect on
top of it:

* every error raised while merging a YAML file names **the file** and **the key**;
* ``merge_from_list`` errors name the offending command-line key;
* :func:`get_cfg` returns a fresh copy of the documented defaults.
"""

from __future__ import annotations

import difflib
import logging
import os
from typing import Any, Iterable, List

from fvcore.common.config import CfgNode as _FvCfgNode

from ..utils.errors import UserError

__all__ = [
    "CfgNode",
    "ConfigError",
    "ConfigFileNotFoundError",
    "add_subtree",
    "check_config",
    "get_cfg",
    "set_global_cfg",
    "global_cfg",
]


class ConfigError(UserError, KeyError):
    """Raised for an unknown key, a wrong type or value, or an unreadable config file.

    A :class:`~reid_plugins.utils.errors.UserError` (the tools print it as one line). Also a
    ``KeyError`` so that code expecting yacs' ``KeyError`` keeps working, but ``str(err)`` is
    the plain, readable message (``KeyError`` would quote it).
    """

    hint = "fix the config file or the KEY VALUE override; --debug shows the traceback"

    def __str__(self) -> str:  # pragma: no cover - trivial
        return str(self.args[0]) if self.args else ""


class ConfigFileNotFoundError(ConfigError, FileNotFoundError):
    """A config file (or one of its ``_BASE_`` files) does not exist."""

    hint = "check the path given to --config-file (relative paths start at the current folder)"


class CfgNode(_FvCfgNode):
    """fvcore ``CfgNode`` with actionable error messages.

    Behaviour is identical to fvcore's except that failures while merging report the file
    (for :meth:`merge_from_file`) or the command-line pair (for :meth:`merge_from_list`) and
    the full dotted key.
    """

    def merge_from_file(self, cfg_filename: str, allow_unsafe: bool = False) -> None:
        """Merge a YAML file (following its ``_BASE_`` chain) into this config.

        Args:
            cfg_filename: path to a YAML file.
            allow_unsafe: allow python tags in YAML (fvcore semantics).

        Raises:
            ConfigFileNotFoundError: (a ``FileNotFoundError``) the file, or one of its
                ``_BASE_`` files, does not exist.
            ConfigError: a key in the file does not exist in the config, or has the wrong type.
        """
        if not os.path.isfile(cfg_filename):
            raise ConfigFileNotFoundError(f"Config file not found: '{cfg_filename}'")
        try:
            loaded = self.load_yaml_with_base(cfg_filename, allow_unsafe=allow_unsafe)
        except FileNotFoundError as e:
            raise ConfigFileNotFoundError(f"While loading config '{cfg_filename}': {e}") from e
        except Exception as e:  # yaml syntax errors etc.
            raise ConfigError(f"Cannot parse config file '{cfg_filename}': {e}") from e
        loaded = type(self)(loaded)
        try:
            self.merge_from_other_cfg(loaded)
        except (KeyError, ValueError, TypeError, AssertionError) as e:
            msg = e.args[0] if e.args else str(e)
            raise ConfigError(f"Invalid config file '{cfg_filename}': {msg}") from e

    def merge_from_list(self, cfg_list: List[Any]) -> "CfgNode":
        """Merge ``[KEY, VALUE, KEY, VALUE, ...]`` overrides (as given on the command line).

        Raises:
            ConfigError: odd number of items, unknown key or type mismatch; the message names
                the key and the value.
        """
        if len(cfg_list) % 2 != 0:
            raise ConfigError(
                f"Command-line overrides must be KEY VALUE pairs, got an odd number: {cfg_list}"
            )
        for key, value in zip(cfg_list[0::2], cfg_list[1::2]):
            try:
                super().merge_from_list([key, value])
            except (KeyError, ValueError, TypeError, AssertionError) as e:
                msg = e.args[0] if e.args else str(e)
                raise ConfigError(f"Invalid command-line override '{key} {value}': {msg}") from e
        return self

    def dump(self, *args, **kwargs) -> str:
        """YAML dump of the config (same as fvcore's)."""
        return super().dump(*args, **kwargs)


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
    from ..engine.defaults import TRAINER_REGISTRY
    from ..modeling.backbone.build import BACKBONE_REGISTRY
    from ..modeling.meta_arch.build import META_ARCH_REGISTRY

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
    return cfg


global_cfg = CfgNode()


def get_cfg() -> CfgNode:
    """Return a fresh copy of the toolbox's default config.

    Method-specific subtrees are added by ``add_<method>_config(cfg)`` functions.
    """
    from .defaults import _C

    return _C.clone()


def set_global_cfg(cfg: CfgNode) -> None:
    """Store ``cfg`` in :data:`global_cfg` (for code that has no config argument)."""
    global_cfg.clear()
    global_cfg.update(cfg)


def add_subtree(parent: "CfgNode", key: str, defaults: "CfgNode") -> "CfgNode":
    """Add ``parent[key] = defaults``, or only the keys of ``defaults`` missing under an
    existing ``parent[key]`` (recursively): the one idiom of every ``add_<method>_config``.

    Idempotent and never overwrites a value that is already set. Returns ``parent[key]``.
    """
    if key not in parent:
        parent[key] = defaults
        return parent[key]
    node = parent[key]
    for name, value in defaults.items():
        if isinstance(value, _FvCfgNode) and name in node:
            add_subtree(node, name, value)
        elif name not in node:
            node[name] = value
    return node
