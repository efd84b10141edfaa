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
"""

from __future__ import annotations

import logging

import reid_plugins.methods  # noqa: F401  (registers the built-in methods)
from reid_plugins.checkpoint import Checkpointer
from reid_plugins.engine import (
    TRAINER_REGISTRY,
    build_trainer,
    default_argument_parser,
    default_setup,
    launch,
    setup_cfg,
)
from reid_plugins.utils import comm

__all__ = ["setup", "main", "cli", "run", "default_argument_parser"]


def setup(args):
    """Plugins, defaults + every registered config subtree, then the file, then KEY VALUE
    overrides (:func:`reid_plugins.engine.setup_cfg`); frozen; output folder and logs."""
    cfg = setup_cfg(args)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args):
    cfg = setup(args)
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
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
    return comm.get_rank()


def run(argv=None) -> int:
    """The ``reid-train`` console script."""
    cli(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(run())
