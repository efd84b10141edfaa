"""M3L (Zhao et al., "Learning to Generalize Unseen Domains via Memory-based Multi-Source
Meta-Learning for Person Re-Identification", CVPR 2021, arXiv 2012.00417)."""

from .config import add_m3l_config  # noqa: F401
from .memory import M3LMemoryLoss  # noqa: F401
from .metabn import MetaBatchNorm1d, MetaBNHead  # noqa: F401
from .model import M3L  # noqa: F401
from .trainer import MetaStepTrainer, MetaTrainer  # noqa: F401
