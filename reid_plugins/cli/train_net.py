"""``reid-train`` / ``tools/train_net.py``: train or evaluate any registered meta-architecture
from a config file.

Examples::

    reid-train --config-file projects/baseline/synthetic_dg.yaml   # = python tools/train_net.py
    python tools/train_net.py --config-file projects/baseline/synthetic_dg.yaml
    python tools/train_net.py --config-file projects/baseline/synthetic_dg.yaml --resume
    python tools/train_net.py --config-file cfg.yaml --eval-only MODEL.WEIGHTS output/model_final.pth
    python tools/train_net.py --config-file cfg.yaml --num-gpus 2   # 2 DDP processes (gloo on CPU)
    python tools/train_net.py --config-file my.yaml --plugin my_pkg.my_module  # your own code

Your own backbones, models, datasets and config keys: ``--plugin``, the config key ``PLUGINS``
or ``$REID_PLUGINS`` (``docs/plugins.md``).

A mistake in the config, the data, the weights or the output folder is reported as one line
on stderr (exit status 2; ``--debug`` shows the traceback). Ctrl-C / SIGTERM stop training
after the current iteration with a checkpoint and the command that resumes (exit 130 / 143).
A finished run (``OUTPUT_DIR/model_final.pth``) is not overwritten without ``--overwrite``.
"""

from __future__ import annotations

import logging
import os

import reid_plugins.methods  # noqa: F401  (registers the built-in methods)
from reid_plugins.checkpoint import Checkpointer
from reid_plugins.engine import (
    TRAINER_REGISTRY,
    build_trainer,
    default_argument_parser,
    default_setup,
    import_cfg_plugins,
    launch,
    setup_cfg,
)
from reid_plugins.engine.config_check import check_config
from reid_plugins.utils import comm
from reid_plugins.utils.errors import OutputDirError, run_cli

__all__ = ["load_config", "refuse_to_overwrite", "setup", "main", "cli", "command", "run"]
__all__ += ["default_argument_parser"]


def load_config(args):
    """Plugins, defaults + every registered config subtree, then the file, then KEY VALUE
    overrides (:func:`reid_plugins.engine.setup_cfg`); checked (:func:`check_config`) and
    frozen. Touches nothing on disk."""
    cfg = setup_cfg(args)
    check_config(cfg, args.config_file)
    cfg.freeze()
    return cfg


def refuse_to_overwrite(cfg, args) -> None:
    """A training run without ``--resume`` into an OUTPUT_DIR holding a finished run would
    overwrite its ``model_final.pth``: refused unless ``--overwrite``."""
    if args.eval_only or args.resume or getattr(args, "overwrite", False):
        return
    final = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    if cfg.OUTPUT_DIR and os.path.isfile(final):
        err = OutputDirError(
            f"OUTPUT_DIR '{cfg.OUTPUT_DIR}' holds a finished run ({final}); pass --overwrite to "
            "train again from scratch there, --resume to continue it, or choose another "
            "OUTPUT_DIR"
        )
        err.hint = ""  # the message says what to do
        raise err


def setup(args, cfg=None):
    """:func:`load_config` (unless ``cfg`` is given), then :func:`default_setup` (output
    folder, logs, seed)."""
    if cfg is None:
        cfg = load_config(args)
    else:  # a worker process given the finished config: import its plugins here too
        import_cfg_plugins(cfg)
    refuse_to_overwrite(cfg, args)
    default_setup(cfg, args)
    return cfg


def main(args, cfg=None):
    cfg = setup(args, cfg)
    trainer_cls = TRAINER_REGISTRY.get(cfg.TRAINER.NAME)
    if args.eval_only:
        model = trainer_cls.build_model(cfg)
        if cfg.MODEL.WEIGHTS:
            Checkpointer(model, cfg.OUTPUT_DIR).load(cfg.MODEL.WEIGHTS, checkpointables=[])
        else:
            logging.getLogger("reid_plugins").warning(
                "--eval-only without MODEL.WEIGHTS: evaluating the randomly initialised model "
                "(a 'random features' reference)"
            )
        return trainer_cls.test(cfg, model)
    trainer = build_trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def cli(argv=None):
    args = default_argument_parser().parse_args(argv)
    logging.getLogger("reid_plugins").info("Command Line Args: %s", args)
    # Mistakes in the config or the output folder are found here, in a second, before any
    # process is spawned or anything is built.
    cfg = load_config(args)
    refuse_to_overwrite(cfg, args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args, cfg),
    )
    return comm.get_rank()


def command(argv) -> None:
    """What the command runs (through :func:`reid_plugins.utils.errors.run_cli`)."""
    cli(argv)


def run(argv=None) -> int:
    """The ``reid-train`` console script: :func:`command` through
    :func:`reid_plugins.utils.errors.run_cli` (one-line user errors, ``--debug``)."""
    return run_cli(command, argv)


if __name__ == "__main__":
    raise SystemExit(run())
