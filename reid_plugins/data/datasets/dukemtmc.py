"""DukeMTMC-reID: Market-style layout under ``dukemtmc/DukeMTMC-reID/``.

File names look like ``0001_c2_f0046182.jpg`` (regex ``([-\\d]+)_c(\\d)``), 8 cameras.
Same rules as Market-1501 (see :mod:`.market1501`).
"""

from __future__ import annotations

import os
from typing import Any, Dict, List

from .market1501 import load_market_style

__all__ = ["DUKEMTMC_DIR", "load_dukemtmc"]

DUKEMTMC_DIR = os.path.join("dukemtmc", "DukeMTMC-reID")


def load_dukemtmc(root: str, split: str, dataset_name: str = "") -> List[Dict[str, Any]]:
    """DukeMTMC-reID records from ``<root>/dukemtmc/DukeMTMC-reID``.

    Args:
        root: datasets root (``$REID_DATASETS``).
        split: ``"train"``, ``"test"`` or ``"combined"`` (see
            :func:`.market1501.load_market_style`).
        dataset_name: ``dataset`` field (default ``dukemtmc_<split>``).
    """
    return load_market_style(
        os.path.join(root, DUKEMTMC_DIR),
        split,
        dataset_name=dataset_name or f"dukemtmc_{split}",
        what="DukeMTMC-reID",
        max_cam=8,
    )
