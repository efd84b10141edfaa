"""Checkpointing (atomic writes, resume)."""

from .checkpointer import (  # noqa: F401
    Checkpointer,
    CheckpointError,
    PeriodicCheckpointer,
    atomic_torch_save,
    atomic_write_bytes,
    stale_temp_files,
)
from .io import load_torch_file, read_state_dict  # noqa: F401
