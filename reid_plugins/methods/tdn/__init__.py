"""TDN (Liu et al., "Teacher-guided Disentangling Networks for person search", IEEE TMM)."""

from .config import add_tdn_config  # noqa: F401
from .model import TDN  # noqa: F401
from .trainer import TDNTrainer, TeacherWeightHook  # noqa: F401
