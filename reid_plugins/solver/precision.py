"""The fast path's switches: mixed precision (``SOLVER.AMP`` / ``TEST.AMP``), channels-last
memory format (``MODEL.CHANNELS_LAST``) and fused optimizers, resolved for the device at hand.

``"auto"`` (or ``None``, YAML ``null``) picks the fast setting where it is native and safe:

* float16 autocast with a grad scaler on CUDA;
* bfloat16 autocast on CPUs with native bfloat16 arithmetic (AVX512-BF16 or AMX-BF16:
  :func:`cpu_has_native_bf16`); elsewhere bfloat16 is emulated and slower than float32, so
  ``auto`` stays in float32;
* float32 for trainers that do not support mixed precision (M3L's second-order meta-update).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import Any, Optional, Union

import torch
from torch import nn

__all__ = [
    "cpu_has_native_bf16",
    "resolve_amp_dtype",
    "resolve_channels_last",
    "autocast",
    "to_float32",
    "model_device_type",
]

logger = logging.getLogger(__name__)

#: Values of ``SOLVER.AMP.DTYPE``.
AMP_DTYPES = ("auto", "float16", "bfloat16")
_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (x86 AVX512-BF16 or AMX-BF16 in
    ``/proc/cpuinfo``). False where the flags cannot be read (other OSes, other ISAs)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return any(flag in flags for flag in _NATIVE_BF16_FLAGS)
    except OSError:
        pass
    return False


def _is_auto(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.lower() == "auto")


def resolve_amp_dtype(
    enabled: Union[bool, str, None],
    dtype: str = "auto",
    device_type: str = "cpu",
    *,
    supported: bool = True,
    key: str = "SOLVER.AMP",
) -> Optional[torch.dtype]:
    """The autocast dtype a run uses, or None for float32.

    Args:
        enabled: ``True`` / ``False`` / ``"auto"`` / ``None`` (= auto), as in the config.
        dtype: ``"auto"`` (float16 on CUDA, bfloat16 elsewhere), ``"float16"`` or
            ``"bfloat16"``. An explicit dtype with ``enabled: True`` is used as given (even
            emulated); ``auto`` only turns on what the device runs natively.
        device_type: ``"cuda"``, ``"cpu"``, ...
        supported: False for trainers that run in float32 only; ``auto`` then resolves to None
            (an explicit ``True`` is the caller's error to raise).
        key: config prefix named in error messages.

    Raises:
        ValueError: unknown ``dtype`` or ``enabled`` value, naming ``key``.
    """
    if dtype not in AMP_DTYPES:
        raise ValueError(f"{key}.DTYPE must be one of {AMP_DTYPES}, got {dtype!r}")
    if isinstance(enabled, str) and not _is_auto(enabled):
        raise ValueError(f"{key}.ENABLED must be True, False or 'auto', got {enabled!r}")
    if enabled is False or not supported:
        return None
    if dtype == "auto":
        dtype = "float16" if device_type == "cuda" else "bfloat16"
    if _is_auto(enabled):
        if device_type == "cuda":
            pass
        elif device_type == "cpu" and dtype == "bfloat16" and cpu_has_native_bf16():
            pass
        else:
            return None
    return getattr(torch, dtype)


def resolve_channels_last(value: Union[bool, str, None], amp_dtype: Optional[torch.dtype]) -> bool:
    """``MODEL.CHANNELS_LAST``: True / False as given; ``auto`` (None) = True exactly when the
    run uses mixed precision (oneDNN's and cuDNN's fast low-precision convolutions are
    channels-last)."""
    if _is_auto(value):
        return amp_dtype is not None
    if not isinstance(value, bool):
        raise ValueError(f"MODEL.CHANNELS_LAST must be True, False or 'auto', got {value!r}")
    return value


def model_device_type(model: nn.Module) -> str:
    """Device type of ``model``'s first parameter (``"cpu"`` for a parameterless model)."""
    param = next(model.parameters(), None)
    return param.device.type if param is not None else "cpu"


def autocast(device_type: str, dtype: Optional[torch.dtype]):
    """``torch.autocast(device_type, dtype)``, or a no-op context for ``dtype=None``."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=dtype)


def to_float32(obj: Any) -> Any:
    """``obj`` with every low-precision floating tensor (in nested dicts, lists and tuples)
    cast to float32, so that evaluators see the same dtypes as in a float32 run."""
    if isinstance(obj, torch.Tensor):
        return obj.float() if obj.dtype in (torch.float16, torch.bfloat16) else obj
    if isinstance(obj, dict):
        return type(obj)((k, to_float32(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(to_float32(v) for v in obj)
    return obj
