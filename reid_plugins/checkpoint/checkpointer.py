"""Atomic checkpointing on top of fvcore's ``Checkpointer``."""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any, Dict

import torch
from fvcore.common.checkpoint import Checkpointer as _FvCheckpointer
from fvcore.common.checkpoint import PeriodicCheckpointer  # noqa: F401  (re-export)

from ..utils import comm

__all__ = ["Checkpointer", "PeriodicCheckpointer", "CheckpointError", "atomic_torch_save"]

logger = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be read; the message names the file."""


def atomic_write_bytes(path: str, write_fn) -> None:
    """Write a file atomically: ``write_fn(fileobj)`` into a temp file, fsync, then rename.

    A crash at any point leaves either the previous file or the complete new one.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory
    )
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` that never leaves a partially written ``path``."""
    atomic_write_bytes(path, lambda f: torch.save(obj, f))


class Checkpointer(_FvCheckpointer):
    """fvcore ``Checkpointer`` with atomic writes and readable load errors.

    Everything in the model's ``state_dict`` is saved, which includes registered buffers
    (memory banks, OIM lookup tables, queues...). Extra checkpointables (optimizer, trainer
    state with scheduler and RNG states) are passed as keyword arguments, as in fvcore.
    Only the main process writes.
    """

    def __init__(
        self, model, save_dir: str = "", *, save_to_disk: bool | None = None, **checkpointables
    ) -> None:
        if save_to_disk is None:
            save_to_disk = comm.is_main_process()
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data: Dict[str, Any] = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to %s", save_file)
        atomic_torch_save(data, save_file)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        atomic_write_bytes(path, lambda f: f.write(last_filename_basename.encode()))

    def get_checkpoint_file(self) -> str:
        try:
            path = super().get_checkpoint_file()
        except UnicodeDecodeError as e:  # garbage bytes instead of a file name
            raise CheckpointError(
                f"{os.path.join(self.save_dir, 'last_checkpoint')} is corrupt (it must hold the "
                f"name of a checkpoint file): {e}"
            ) from e
        if path and not os.path.isfile(path):
            raise CheckpointError(
                f"{os.path.join(self.save_dir, 'last_checkpoint')} points to '{path}', "
                "which does not exist"
            )
        return path

    def _load_file(self, f: str) -> Dict[str, Any]:
        if not os.path.isfile(f):
            raise CheckpointError(f"Checkpoint file not found: '{f}'")
        try:
            # Our own checkpoints hold RNG states (numpy arrays, tuples): trusted local files.
            loaded = torch.load(f, map_location=torch.device("cpu"), weights_only=False)
        except Exception as e:
            raise CheckpointError(
                f"Cannot read checkpoint '{f}' (truncated or corrupt?): {type(e).__name__}: {e}"
            ) from e
        if not isinstance(loaded, dict):
            raise CheckpointError(f"Checkpoint '{f}' does not contain a dict")
        if "model" not in loaded:
            # A bare state dict (e.g. exported weights).
            if all(isinstance(v, torch.Tensor) for v in loaded.values()):
                loaded = {"model": loaded}
            elif "state_dict" in loaded:
                loaded = {"model": loaded["state_dict"]}
            else:
                raise CheckpointError(f"Checkpoint '{f}' has no 'model' entry")
        return loaded
