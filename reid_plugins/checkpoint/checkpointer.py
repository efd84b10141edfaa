"""Atomic checkpointing on top of fvcore's ``Checkpointer``."""

from __future__ import annotations

import logging
import os
import re
import tempfile
from typing import Any, Dict, List

import torch
from fvcore.common.checkpoint import Checkpointer as _FvCheckpointer
from fvcore.common.checkpoint import PeriodicCheckpointer  # noqa: F401  (re-export)

from ..utils import comm
from ..utils.errors import UserError

__all__ = [
    "Checkpointer",
    "PeriodicCheckpointer",
    "CheckpointError",
    "atomic_torch_save",
    "new_file_mode",
    "stale_temp_files",
]

logger = logging.getLogger(__name__)


class CheckpointError(UserError, RuntimeError):
    """A checkpoint file cannot be read; the message names the file.

    A :class:`~reid_plugins.utils.errors.UserError`: the tools print it as one line.
    """

    hint = (
        "check MODEL.WEIGHTS (or, with --resume, the files in OUTPUT_DIR); --debug shows the "
        "traceback"
    )


def _current_umask() -> int:
    """The process umask, read without changing it where /proc allows (Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: read by setting (briefly) and restoring
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file: ``0o666`` minus the umask (0644
    under the usual umask 022). ``tempfile.mkstemp`` creates files with 0600, so files written
    through a temp file are given this mode before their rename."""
    return 0o666 & ~_current_umask()


def atomic_write_bytes(path: str, write_fn) -> None:
    """Write a file atomically: ``write_fn(fileobj)`` into a temp file, fsync, then rename.

    A crash at any point leaves either the previous file or the complete new one. The file
    gets the mode a plainly created file would have (:func:`new_file_mode`), not the temp
    file's 0600.
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
        os.chmod(tmp, new_file_mode())
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


def stale_temp_files(directory: str) -> List[str]:
    """Temp files that :func:`atomic_write_bytes` left in ``directory`` (a process killed
    between creating and renaming them): hidden ``.<name>.<random>.tmp`` files."""
    if not os.path.isdir(directory):
        return []
    return sorted(
        os.path.join(directory, n)
        for n in os.listdir(directory)
        if n.startswith(".") and n.endswith(".tmp") and os.path.isfile(os.path.join(directory, n))
    )


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` that never leaves a partially written ``path``."""
    atomic_write_bytes(path, lambda f: torch.save(obj, f))


class Checkpointer(_FvCheckpointer):
    """fvcore ``Checkpointer`` with atomic writes and readable load errors.

    Everything in the model's ``state_dict`` is saved, which includes registered buffers
    (memory banks, OIM lookup tables, queues...). Extra checkpointables (optimizer, trainer
    state with scheduler and RNG states) are passed as keyword arguments, as in fvcore.
    Only the main process writes.

    Recovery from interrupted runs: temp files left by a save that was killed before its
    rename are removed (with a warning) when the main process creates the checkpointer; when
    ``last_checkpoint`` is missing but checkpoint files are present, :meth:`has_checkpoint` is
    true and :meth:`get_checkpoint_file` returns the newest of them (``model_final.pth``, else
    the highest ``model_<iter>.pth``) with a warning, instead of silently starting again.
    """

    def __init__(
        self, model, save_dir: str = "", *, save_to_disk: bool | None = None, **checkpointables
    ) -> None:
        if save_to_disk is None:
            save_to_disk = comm.is_main_process()
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        if self.save_dir and self.save_to_disk:
            stale = stale_temp_files(self.save_dir)
            for path in stale:
                os.remove(path)
            if stale:
                logger.warning(
                    "Removed %d partial file(s) left by an interrupted checkpoint save in %s: %s",
                    len(stale),
                    self.save_dir,
                    ", ".join(os.path.basename(p) for p in stale),
                )

    def load(self, path: str, checkpointables: List[str] | None = None) -> Dict[str, Any]:
        """fvcore's ``load``; a missing local file raises :class:`CheckpointError` naming it
        (fvcore asserts)."""
        if path and "://" not in path and not os.path.isfile(path):
            what = "is a folder, not a checkpoint file" if os.path.isdir(path) else "not found"
            raise CheckpointError(f"Checkpoint file {what}: '{path}'")
        return super().load(path, checkpointables=checkpointables)

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

    _ITER_FILE = re.compile(r"^model_(\d+)\.pth$")

    def _newest_checkpoint_file(self) -> str:
        """``model_final.pth`` if present, else the ``model_<iter>.pth`` with the highest
        iteration in ``save_dir`` ("" when there is none)."""
        if not self.save_dir or not os.path.isdir(self.save_dir):
            return ""
        names = os.listdir(self.save_dir)
        if "model_final.pth" in names:
            return os.path.join(self.save_dir, "model_final.pth")
        numbered = [(int(m.group(1)), n) for n in names if (m := self._ITER_FILE.match(n))]
        return os.path.join(self.save_dir, max(numbered)[1]) if numbered else ""

    def has_checkpoint(self) -> bool:
        """True when ``last_checkpoint`` exists or, failing that, a checkpoint file does."""
        return super().has_checkpoint() or bool(self._newest_checkpoint_file())

    def get_checkpoint_file(self) -> str:
        tag = os.path.join(self.save_dir, "last_checkpoint")
        if self.save_dir and not os.path.exists(tag):
            newest = self._newest_checkpoint_file()
            if newest:
                logger.warning(
                    "%s is missing; resuming from the newest checkpoint file found there: %s",
                    tag,
                    newest,
                )
                return newest
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
