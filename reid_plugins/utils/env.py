"""Process environment of the command-line tools, environment information and seeding.

Every entry point under ``tools/`` calls :func:`setup_environment` first, before torch is
imported (this module imports torch and numpy only inside the functions that need them).
"""

from __future__ import annotations

import importlib
import logging
import os
import platform
import random
import sys
from datetime import datetime

__all__ = [
    "setup_environment",
    "ENV_DEFAULTS",
    "local_process_count",
    "seed_all_rng",
    "collect_env_info",
    "set_deterministic",
]

logger = logging.getLogger(__name__)

#: Environment variables set by :func:`setup_environment` unless the user set them.
#: ``OMP_WAIT_POLICY=PASSIVE``: idle OpenMP threads sleep instead of spinning. On a CPU shared
#: with other jobs, spinning threads take the cores that the working threads need; on a
#: dedicated machine the difference is small. Export ``OMP_WAIT_POLICY=ACTIVE`` to get the
#: spinning behaviour back.
ENV_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}


def setup_environment() -> None:
    """Set :data:`ENV_DEFAULTS` (only variables the user did not set).

    Must run before ``torch`` is first imported: OpenMP reads its variables when the library
    is loaded (a debug message is logged when torch was already imported).
    """
    if "torch" in sys.modules:
        logger.debug(
            "setup_environment() called after torch was imported: %s may not take effect",
            ", ".join(k for k in ENV_DEFAULTS if k not in os.environ) or "nothing to set",
        )
    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def local_process_count() -> int:
    """Training processes on this machine: ``LOCAL_WORLD_SIZE`` (set by ``launch`` and by
    ``torchrun``), else 1."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def seed_all_rng(seed: int | None = None) -> int:
    """Seed python, numpy and torch; ``None`` or negative derives a seed (returned, logged)."""
    if seed is None or seed < 0:
        seed = (
            os.getpid()
            + int(datetime.now().strftime("%S%f"))
            + int.from_bytes(os.urandom(2), "big")
        ) % (2**31)
        logger.info("Using a generated random seed %d", seed)
    import numpy as np
    import torch

    np.random.seed(seed)
    torch.manual_seed(seed)
    random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    return seed


def set_deterministic(enabled: bool = True) -> None:
    """Deterministic kernels (bit-exact reruns on the same machine)."""
    import torch

    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled and torch.backends.cudnn.benchmark


def collect_env_info() -> str:
    """A table of versions (python, torch, torchvision, fvcore, ...) and devices."""
    import torch

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
    rows.append(("OMP_WAIT_POLICY", os.environ.get("OMP_WAIT_POLICY", "(not set)")))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
