"""Losses shared by several methods, each an ``nn.Module`` (method-only losses live in
``reid_plugins.methods.<method>``)."""

from .cross_entropy import CrossEntropyLoss
from .memory import MemoryBank, MemoryLoss, extract_and_initialize
from .triplet import TripletLoss, euclidean_dist

__all__ = [
    "CrossEntropyLoss",
    "MemoryBank",
    "MemoryLoss",
    "TripletLoss",
    "euclidean_dist",
    "extract_and_initialize",
]
