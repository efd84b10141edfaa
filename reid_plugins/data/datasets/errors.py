"""User-facing dataset errors: one line naming the file and what to do.

:class:`DatasetError` is the base of every error that comes from the user's data (a missing
dataset folder, a list file naming a missing image, a malformed annotation), not from a bug:
the command-line tools print its message as one line (the traceback only with ``--debug``).
Subclasses keep the built-in type the loaders raised before (``FileNotFoundError`` /
``ValueError``), so ``except FileNotFoundError`` still catches a missing file.

The registered loaders (:func:`.common.register_reid_split`,
:func:`.scene_common.register_scene_splits`) re-raise what a loader raised as
:func:`dataset_error`, which appends the dataset's name and where to look::

    Dataset 'prw_train': expected file '.../prw/frame_train.mat' does not exist. See
    datasets/README.md (PRW); check with: python tools/check_dataset.py prw_train
"""

from __future__ import annotations

from ...utils.errors import DatasetError as MalformedDatasetError
from ...utils.errors import DatasetNotFoundError, UserError

__all__ = [
    "DatasetError",
    "MissingDatasetFileError",
    "DatasetFormatError",
    "check_hint",
    "dataset_error",
]

README = "datasets/README.md"


class DatasetError(UserError):
    """Base of the user-facing dataset errors (message = one actionable line; a
    :class:`~reid_plugins.utils.errors.UserError`, so the tools print it as one line)."""


class MissingDatasetFileError(DatasetError, DatasetNotFoundError):
    """A file or folder the dataset needs does not exist (the message names the path)."""

    hint = ""  # the message says where to look (see dataset_error)

    def __init__(self, message: str):
        # FileNotFoundError(msg) alone keeps ``str(e) == msg`` (no errno formatting).
        super().__init__(message)

    def __reduce__(self):  # picklable (DataLoader workers, spawn)
        return (type(self), (str(self),))


class DatasetFormatError(DatasetError, MalformedDatasetError):
    """A dataset file exists but cannot be parsed (the message names file and line)."""

    hint = ""  # the message says where to look (see dataset_error)

    def __reduce__(self):
        return (type(self), (str(self),))


def check_hint(dataset_name: str, section: str = "") -> str:
    """``See datasets/README.md (<section>); check with: python tools/check_dataset.py NAME``."""
    where = f"{README} ({section})" if section else README
    return f"See {where}; check with: python tools/check_dataset.py {dataset_name}"


def dataset_error(err: BaseException, dataset_name: str, section: str = "") -> DatasetError:
    """``err`` (raised while loading ``dataset_name``) as a one-line :class:`DatasetError`.

    Missing files (``FileNotFoundError``, including :class:`MissingDatasetFileError`) become
    :class:`MissingDatasetFileError`, everything else :class:`DatasetFormatError`; the message
    is prefixed with the dataset's name (unless already there), a missing file's message names
    the datasets root (``$REID_DATASETS``) and the message ends with :func:`check_hint`
    (unless already there). Newlines are folded into one line.
    """
    from ..catalog import dataset_root

    text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    msg = " ".join(str(text).split())
    if not msg.startswith("Dataset '"):
        msg = f"Dataset '{dataset_name}': {msg}"
    missing = isinstance(err, FileNotFoundError)
    if missing and "$REID_DATASETS" not in msg:
        msg = f"{msg.rstrip('.')} (datasets are read under $REID_DATASETS, now '{dataset_root()}')"
    if "tools/check_dataset.py" not in msg:
        msg = f"{msg.rstrip('.')}. {check_hint(dataset_name, section)}"
    cls = MissingDatasetFileError if missing else DatasetFormatError
    return cls(msg)
