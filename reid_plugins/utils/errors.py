"""User errors and the one place where command-line tools report them.

A :class:`UserError` is a mistake in what the user supplied (a config file, key or value, a
dataset folder, an image, a weights file, an output folder), as opposed to a bug in the
program. The tools under ``tools/`` run their ``main`` through :func:`run_cli`, which prints
such an error as ONE line on stderr (what went wrong, where, what to do) and exits with
:data:`USER_ERROR_EXIT`; with ``--debug`` (or ``REID_DEBUG=1``) the full traceback is shown
instead. Any other exception (a program bug) propagates with its traceback as usual.

This module imports neither torch nor numpy, so tools can import it before anything else.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Callable, List, Optional, Sequence

__all__ = [
    "UserError",
    "OutputDirError",
    "DatasetError",
    "DatasetNotFoundError",
    "TrainingInterrupted",
    "USER_ERROR_EXIT",
    "DEBUG_ENV",
    "debug_enabled",
    "is_user_error",
    "one_line",
    "exit_code",
    "report_user_error",
    "run_cli",
]

#: Exit status of a tool stopped by a :class:`UserError` (argparse uses 2 for bad usage too).
USER_ERROR_EXIT = 2
#: Environment variable that turns on tracebacks for user errors (set by ``--debug``, and
#: inherited by DDP worker processes).
DEBUG_ENV = "REID_DEBUG"


class UserError(Exception):
    """A mistake in the user's input, reported by the tools as a single line.

    Subclasses (e.g. ``ConfigError``, ``ImageReadError``, ``CheckpointError``) also derive from
    the built-in exception their callers expect (``KeyError``, ``OSError``, ...).

    Attributes:
        hint: what to do about it; appended to the one-line report unless the message
            already says it.
        exit_code: the process exit status used by :func:`run_cli`.
    """

    hint: str = ""
    exit_code: int = USER_ERROR_EXIT


class OutputDirError(UserError, PermissionError):
    """``OUTPUT_DIR`` cannot be created or written, or holds a finished run."""

    hint = "choose another OUTPUT_DIR (add 'OUTPUT_DIR <folder>' to the command line)"


class DatasetError(UserError, ValueError):
    """A dataset's files are malformed (the message names the file, and the line if any)."""

    hint = "see datasets/README.md for the expected layout"


class DatasetNotFoundError(UserError, FileNotFoundError):
    """A dataset folder or annotation file is missing (the message names the path)."""

    hint = "set $REID_DATASETS to the folder that holds the datasets (see datasets/README.md)"


class TrainingInterrupted(UserError):
    """Training stopped on SIGINT / SIGTERM after saving a checkpoint.

    Not a mistake, but reported the same way: one line (where the checkpoint is and how to
    resume) and the conventional exit status ``128 + signal number`` (130 for SIGINT, 143 for
    SIGTERM).
    """

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = int(signum)
        self.exit_code = 128 + self.signum

    def __reduce__(self):  # picklable across processes
        return (type(self), (str(self), self.signum))


def debug_enabled() -> bool:
    """True when ``--debug`` was given (or ``REID_DEBUG`` is set to a non-empty, non-0 value)."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


# A plain ValueError / KeyError whose message names a config key (``MODEL.BACKBONE.DEPTH=19
# is not supported; use [18, 34, 50, 101]``) is a bad config value found by a builder.
_CONFIG_KEY = re.compile(r"\b(?:MODEL|INPUT|DATASETS|DATALOADER|SOLVER|TEST|TRAINER)\.[A-Z]")
_CONFIG_VALUE_HINT = "fix this config value in the config file or on the command line"


def _is_config_value_error(exc: BaseException) -> bool:
    return type(exc) in (ValueError, KeyError) and bool(_CONFIG_KEY.search(str(exc)))


def _innermost_user_error(exc: BaseException) -> Optional[BaseException]:
    """``exc`` or the first exception of its ``__cause__`` chain that is a user error."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, UserError) or _is_config_value_error(exc):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__
    return None


def is_user_error(exc: BaseException) -> bool:
    """True for a :class:`UserError` (also one re-raised by a DataLoader worker, whose class
    is kept, or wrapped by ``raise ... from``), and for a plain ``ValueError``/``KeyError``
    whose message names a config key (raised by a builder for a bad config value)."""
    return _innermost_user_error(exc) is not None


def one_line(exc: BaseException) -> str:
    """The report of a user error: its message on one line, plus its hint.

    A message that carries a formatted traceback (exceptions re-raised by DataLoader workers
    are re-created from ``"Caught X in DataLoader worker ... Traceback ..."``) is reduced to
    the original exception's own message.
    """
    exc = _innermost_user_error(exc) or exc
    msg = (exc.args[0] if type(exc) is KeyError and exc.args else str(exc)).strip()
    if "Traceback (most recent call last)" in msg:
        last = [ln for ln in msg.splitlines() if ln.strip()][-1].strip()
        # "reid_plugins.data.detection_utils.ImageReadError: Cannot read ..." -> the message
        head, sep, tail = last.partition(": ")
        msg = tail if sep and " " not in head else last
    msg = " ".join(part.strip() for part in msg.splitlines() if part.strip())
    hint = getattr(exc, "hint", "") or (_CONFIG_VALUE_HINT if _is_config_value_error(exc) else "")
    if hint and hint not in msg:
        msg = f"{msg.rstrip('.')}. {hint[0].upper()}{hint[1:]}."
    return msg


def exit_code(exc: BaseException) -> int:
    """The exit status for a user error (:attr:`UserError.exit_code`, default 2)."""
    return int(getattr(_innermost_user_error(exc) or exc, "exit_code", USER_ERROR_EXIT))


def report_user_error(exc: BaseException, *, prefix: str = "") -> None:
    """Write ``ERROR: <one line>`` to stderr (flushed)."""
    sys.stdout.flush()
    sys.stderr.write(f"{prefix}ERROR: {one_line(exc)}\n")
    sys.stderr.flush()


def _strip_debug(argv: Sequence[str]) -> tuple:
    argv = list(argv)
    debug = "--debug" in argv
    return [a for a in argv if a != "--debug"], debug


def run_cli(main: Callable[[List[str]], object], argv: Optional[Sequence[str]] = None) -> int:
    """Run a tool's ``main(argv)``; report user errors as one line and exit non-zero.

    ``--debug`` anywhere in ``argv`` is removed from it and turns on tracebacks (also in DDP
    worker processes, through ``REID_DEBUG``). A :class:`UserError` (and
    ``KeyboardInterrupt`` outside training, which saves its own checkpoint) ends the process
    with ``SystemExit`` and one line on stderr; every other exception propagates.

    Args:
        main: the tool's entry point, called with the remaining arguments.
        argv: the command line without the program name (default ``sys.argv[1:]``).

    Returns:
        ``main``'s return value when it is an int (an exit status), else 0.
    """
    argv, debug = _strip_debug(sys.argv[1:] if argv is None else argv)
    if debug:
        os.environ[DEBUG_ENV] = "1"
    try:
        result = main(argv)
    except KeyboardInterrupt:
        if debug_enabled():
            raise
        sys.stdout.flush()
        sys.stderr.write("Interrupted.\n")
        raise SystemExit(130) from None
    except Exception as e:  # noqa: BLE001 - anything that is not a user error propagates
        if debug_enabled() or not is_user_error(e):
            raise
        report_user_error(e)
        raise SystemExit(exit_code(e)) from None
    return result if isinstance(result, int) and not isinstance(result, bool) else 0
