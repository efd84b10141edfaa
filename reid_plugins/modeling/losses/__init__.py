"""Losses, each an ``nn.Module``."""

from .cross_entropy import CrossEntropyLoss
from .memory import MemoryBank, MemoryLoss, extract_and_initialize
from .oim import UNLABELED_PID, OIMLoss
from .pair_bce import PairBCELoss
from .pic import PairIdentityCenterLoss
from .triplet import TripletLoss, euclidean_dist

__all__ = [
    "CrossEntropyLoss",
    "MemoryBank",
    "MemoryLoss",
    "OIMLoss",
    "PairBCELoss",
    "PairIdentityCenterLoss",
    "TripletLoss",
    "UNLABELED_PID",
    "euclidean_dist",
    "extract_and_initialize",
]
