"""Losses, each an ``nn.Module``."""

from .cross_entropy import CrossEntropyLoss
from .memory import MemoryBank, MemoryLoss, extract_and_initialize
from .oim import UNLABELED_PID, OIMLoss
from .triplet import TripletLoss, euclidean_dist

__all__ = [
    "CrossEntropyLoss",
    "MemoryBank",
    "MemoryLoss",
    "OIMLoss",
    "TripletLoss",
    "UNLABELED_PID",
    "euclidean_dist",
    "extract_and_initialize",
]
