"""Environment information and seeding."""

from __future__ import annotations

import importlib
import logging
import os
import platform
import random
import sys
from datetime import datetime

import numpy as np
import torch

__all__ = ["seed_all_rng", "collect_env_info", "set_deterministic"]

logger = logging.getLogger(__name__)


def seed_all_rng(seed: int | None = None) -> int:
    """Seed python, numpy and torch; ``None`` or negative derives a seed (returned, logged)."""
    if seed is None or seed < 0:
        seed = (
            os.getpid()
            + int(datetime.now().strftime("%S%f"))
            + int.from_bytes(os.urandom(2), "big")
        ) % (2**31)
        logger.info("Using a generated random seed %d", seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    return seed


def set_deterministic(enabled: bool = True) -> None:
    """Deterministic kernels (bit-exact reruns on the same machine)."""
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled and torch.backends.cudnn.benchmark


def collect_env_info() -> str:
    """A table of versions (python, torch, torchvision, fvcore, ...) and devices."""
    rows = [
        ("sys.platform", sys.platform),
        ("Python", sys.version.replace("\n", "")),
        ("machine", platform.machine()),
    ]
    for mod in (
        "numpy",
        "torch",
        "torchvision",
        "fvcore",
        "iopath",
        "cv2",
        "scipy",
        "pycocotools",
        "reid_plugins",
    ):
        try:
            m = importlib.import_module(mod)
            rows.append(
                (mod, getattr(m, "__version__", "unknown") + f" @{os.path.dirname(m.__file__)}")
            )
        except Exception as e:  # noqa: BLE001 - report whatever failed
            rows.append((mod, f"not available ({type(e).__name__})"))
    rows.append(("CUDA available", str(torch.cuda.is_available())))
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            rows.append((f"GPU {i}", torch.cuda.get_device_name(i)))
    rows.append(("torch threads", str(torch.get_num_threads())))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
