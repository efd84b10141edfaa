"""The one reader of weight files: :func:`read_state_dict`.

Used for everything that loads *weights only* (ImageNet backbones, the TDN teacher, exported
models); full training checkpoints with trainer state go through :class:`Checkpointer`.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict

import torch

__all__ = ["load_torch_file", "read_state_dict"]

logger = logging.getLogger(__name__)


def load_torch_file(path: str) -> Any:
    """``torch.load`` on the CPU, safely (``weights_only``) first; files written with pickled
    non-tensor objects (old checkpoints, RNG states) are retried with full unpickling, which
    is only for trusted local files."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # old pickles with non-tensor objects
        logger.debug("weights_only load of '%s' failed (%s); full unpickling", path, e)
        return torch.load(path, map_location="cpu", weights_only=False)


def read_state_dict(path: str, *, key: str = "MODEL.WEIGHTS", hint: str = "") -> Dict[str, Any]:
    """The model state dict stored in ``path``.

    Accepts a bare state dict, or one wrapped (any depth) as ``{"model": ...}`` (this
    toolbox's checkpoints) or ``{"state_dict": ...}``; ``module.`` prefixes (DDP /
    DataParallel) are removed.

    Args:
        path: a local file.
        key: the config key that named ``path`` (for the error messages).
        hint: what to do when the file is missing (appended to that message).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file cannot be read or holds no dict of tensors.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{key}='{path}': file not found. {hint}".rstrip())
    try:
        obj = load_torch_file(path)
    except Exception as e:
        raise ValueError(f"{key}='{path}' cannot be read (truncated or corrupt?): {e}") from e
    while isinstance(obj, dict):
        inner = next(
            (obj[k] for k in ("model", "state_dict") if isinstance(obj.get(k), dict)), None
        )
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(
            f"{key}='{path}' does not hold a state dict of tensors (expected a dict, "
            "optionally wrapped as {'model': ...} or {'state_dict': ...})"
        )
    state = {}
    for k, v in obj.items():
        while k.startswith("module."):
            k = k[len("module.") :]
        state[k] = v
    return state
