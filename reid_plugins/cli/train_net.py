#!/usr/bin/env python
"""Train or evaluate any registered meta-architecture from a config file.

Examples::

    python tools/train_net.py --config-file projects/baseline/synthetic_dg.yaml
    python tools/train_net.py --config-file projects/baseline/synthetic_dg.yaml --resume
    python tools/train_net.py --config-file cfg.yaml --eval-only MODEL.WEIGHTS output/model_final.pth
    python tools/train_net.py --config-file cfg.yaml --num-gpus 2   # 2 DDP processes (gloo on CPU)
"""

from __future__ import annotations

import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import reid_plugins.methods  # noqa: F401,E402  (registers the methods)
from reid_plugins.checkpoint import Checkpointer  # noqa: E402
from reid_plugins.config import add_all_configs, get_cfg  # noqa: E402
from reid_plugins.engine import (  # noqa: E402
    TRAINER_REGISTRY,
    build_trainer,
    default_argument_parser,
    default_setup,
    launch,
)
from reid_plugins.utils import comm  # noqa: E402


def setup(args):
    """Defaults + every method's config subtree, then the file, then KEY VALUE overrides."""
    cfg = get_cfg()
    add_all_configs(cfg)
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts or [])
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


if __name__ == "__main__":
    cli()
