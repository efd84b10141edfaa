"""Logging set-up: console on the main process, a log file per process."""

from __future__ import annotations

import logging
import os
import sys
from typing import Optional

__all__ = ["setup_logger"]


class _ColorfulFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802
        log = super().formatMessage(record)
        if record.levelno >= logging.ERROR:
            return "\033[31mERROR\033[0m " + log
        if record.levelno == logging.WARNING:
            return "\033[33mWARNING\033[0m " + log
        return log


#: attribute marking the handlers :func:`setup_logger` installed (so a later call replaces them)
_OWNED = "_reid_plugins_setup_logger"


def setup_logger(
    output: Optional[str] = None,
    distributed_rank: int = 0,
    *,
    color: bool = True,
    name: str = "reid_plugins",
) -> logging.Logger:
    """Configure the ``name`` logger: a console handler (rank 0) and a log file.

    A call replaces the handlers an earlier call installed on the same logger (closing its
    file), so a process that runs several trainings one after another (the benchmark's
    persistent workers, a notebook, the tests) writes each run's log once, to that run's file
    only; handlers added by other code are kept. Calling it again with the same arguments
    leaves the same configuration (the file is reopened in append mode).

    Args:
        output: a ``.txt``/``.log`` file, or a folder (log goes to ``folder/log.txt``);
            ranks > 0 write ``log.txt.rank<N>``.
        distributed_rank: only rank 0 logs to the console.
        color: colour WARNING/ERROR prefixes on a terminal.
        name: logger name.
    """
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    for old in [h for h in logger.handlers if getattr(h, _OWNED, False)]:
        logger.removeHandler(old)
        old.close()
    fmt = "[%(asctime)s %(name)s]: %(message)s"
    datefmt = "%m/%d %H:%M:%S"
    handlers = []
    if distributed_rank == 0:
        ch = logging.StreamHandler(stream=sys.stdout)
        ch.setLevel(logging.INFO)
        use_color = color and sys.stdout.isatty()
        ch.setFormatter((_ColorfulFormatter if use_color else logging.Formatter)(fmt, datefmt))
        handlers.append(ch)
    if output is not None:
        filename = output if output.endswith((".txt", ".log")) else os.path.join(output, "log.txt")
        if distributed_rank > 0:
            filename = f"{filename}.rank{distributed_rank}"
        os.makedirs(os.path.dirname(os.path.abspath(filename)), exist_ok=True)
        fh = logging.FileHandler(filename, mode="a")
        fh.setLevel(logging.DEBUG)
        fh.setFormatter(
            logging.Formatter("[%(asctime)s] %(name)s %(levelname)s: %(message)s", datefmt)
        )
        handlers.append(fh)
    for h in handlers:
        setattr(h, _OWNED, True)
        logger.addHandler(h)
    return logger
