"""GMN (Qi et al., "Generalizable Metric Network for Cross-domain Person Re-Identification",
arXiv 2306.11991)."""

from .config import add_gmn_config  # noqa: F401
from .metric_net import MetricNet, mine_pairs, pair_features, pair_identity_keys  # noqa: F401
from .model import GMN  # noqa: F401
from .pair_bce import PairBCELoss  # noqa: F401
from .pic import PairIdentityCenterLoss  # noqa: F401
from .trainer import DPWarmupHook, GMNTrainer  # noqa: F401
