"""Training engine: trainers, hooks, launching and command-line helpers."""

from . import hooks  # noqa: F401
from .config_setup import (  # noqa: F401
    add_plugin_argument,
    import_cfg_plugins,
    load_plugins,
    setup_cfg,
)
from .defaults import (  # noqa: F401
    TRAINER_REGISTRY,
    DefaultTrainer,
    build_trainer,
    create_ddp_model,
    default_argument_parser,
    default_setup,
    default_writers,
)
from .hooks import HookBase  # noqa: F401
from .launch import launch  # noqa: F401
from .person_search_trainer import PersonSearchTrainer  # noqa: F401
from .train_loop import AMPTrainer, NonFiniteLossError, SimpleTrainer, TrainerBase  # noqa: F401
