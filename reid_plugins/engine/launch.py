"""Multi-process launching on PyTorch DDP (nccl on GPU, gloo on CPU), or under torchrun."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
from datetime import timedelta
from typing import Callable, Tuple

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ..utils import comm
from ..utils.errors import (
    USER_ERROR_EXIT,
    TrainingInterrupted,
    debug_enabled,
    exit_code,
    is_user_error,
    report_user_error,
)

__all__ = ["launch", "default_backend", "launched_by_torchrun"]

logger = logging.getLogger(__name__)
DEFAULT_TIMEOUT = timedelta(minutes=30)


def _find_free_port() -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def default_backend() -> str:
    """``nccl`` when CUDA is available, else ``gloo``."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def launched_by_torchrun() -> bool:
    """True when the environment of ``torchrun`` (RANK/WORLD_SIZE/MASTER_ADDR) is present."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def launch(
    main_func: Callable,
    num_gpus_per_machine: int,
    num_machines: int = 1,
    machine_rank: int = 0,
    dist_url: str | None = None,
    args: Tuple = (),
    timeout: timedelta = DEFAULT_TIMEOUT,
    backend: str | None = None,
) -> None:
    """Run ``main_func(*args)`` in ``num_gpus_per_machine * num_machines`` processes.

    Without CUDA, ``num_gpus_per_machine`` is the number of CPU processes (gloo), and each
    gets ``1/num_gpus_per_machine`` of torch's threads. Under ``torchrun`` the process group is
    initialised from the environment and ``main_func`` runs in the current process. With a
    world size of 1, ``main_func`` is simply called.

    User errors (:class:`~reid_plugins.utils.errors.UserError`) in a worker process are
    printed there as one line and end it with the error's exit status; the launcher then
    exits with that status too (``SystemExit``) instead of printing the worker's traceback
    (shown with ``--debug``). SIGTERM sent to the launcher is forwarded to the workers (Ctrl-C
    reaches them directly), which stop after their current iteration and save a checkpoint.

    Args:
        main_func: the function to run in every process.
        num_gpus_per_machine: processes per machine (GPUs, or CPU workers without CUDA).
        num_machines: machines taking part.
        machine_rank: rank of this machine.
        dist_url: ``tcp://host:port``; ``"auto"``/None picks a free local port (one machine
            only).
        args: arguments for ``main_func``.
        timeout: collective timeout.
        backend: ``nccl``/``gloo``; default from :func:`default_backend`.
    """
    backend = backend or default_backend()
    if launched_by_torchrun():
        if not dist.is_initialized():
            dist.init_process_group(backend=backend, init_method="env://", timeout=timeout)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        main_func(*args)
        return
    world_size = num_machines * num_gpus_per_machine
    if world_size <= 1:
        main_func(*args)
        return
    if dist_url in (None, "auto"):
        if num_machines != 1:
            raise ValueError("dist_url='auto' only works on a single machine; pass tcp://IP:PORT")
        dist_url = f"tcp://127.0.0.1:{_find_free_port()}"
    if num_machines > 1 and dist_url.startswith("file://"):
        logger.warning("file:// init across machines needs a shared file system")
    context = mp.start_processes(
        _distributed_worker,
        nprocs=num_gpus_per_machine,
        args=(
            main_func,
            world_size,
            num_gpus_per_machine,
            machine_rank,
            dist_url,
            args,
            timeout,
            backend,
        ),
        daemon=False,
        start_method="spawn",
        join=False,
    )
    _join_workers(context)


def _join_workers(context) -> None:
    """Wait for the workers, forwarding SIGTERM to them and ignoring SIGINT (Ctrl-C reaches
    every process of the terminal's group); a worker that reported a user error or an
    interrupt makes the launcher exit with the worker's status."""

    def forward(signum, frame):
        for p in context.processes:
            if p.is_alive():
                os.kill(p.pid, signum)

    is_main_thread = threading.current_thread() is threading.main_thread()
    old = {}
    if is_main_thread:
        old = {signal.SIGTERM: signal.signal(signal.SIGTERM, forward)}
        old[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
    # torch logs "Terminating process ... via signal SIGTERM" when it ends the other workers
    # after one failed; after a one-line report that is noise (kept with --debug).
    spawn_logger = logging.getLogger("torch.multiprocessing.spawn")
    old_level = spawn_logger.level
    if not debug_enabled():
        spawn_logger.setLevel(logging.ERROR)
    try:
        while not context.join():
            pass
    except mp.ProcessExitedException as e:
        if e.exit_code in _REPORTED_EXIT_CODES:  # the worker printed the one-line report
            raise SystemExit(e.exit_code) from None
        raise
    finally:
        spawn_logger.setLevel(old_level)
        for s, h in old.items():
            signal.signal(s, h)


_OTHER_RANKS_REPORT_DELAY_S = 5.0
# Exit statuses of workers that already printed their one-line report.
_REPORTED_EXIT_CODES = (USER_ERROR_EXIT, 128 + signal.SIGINT, 128 + signal.SIGTERM)


def _exit_now(code: int) -> None:
    """End a worker after a reported user error. The interpreter's normal exit would wait in
    the process group's C++ teardown for the other ranks; this flushes the logs, runs
    multiprocessing's finalizers (so no semaphore is reported as leaked) and exits at once."""
    import multiprocessing.util

    logging.shutdown()
    multiprocessing.util._run_finalizers()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _distributed_worker(
    local_rank,
    main_func,
    world_size,
    num_gpus_per_machine,
    machine_rank,
    dist_url,
    args,
    timeout,
    backend,
) -> None:
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise RuntimeError("nccl backend requested but CUDA is not available")
        if num_gpus_per_machine > torch.cuda.device_count():
            raise RuntimeError(
                f"{num_gpus_per_machine} processes per machine but only "
                f"{torch.cuda.device_count()} GPUs"
            )
        torch.cuda.set_device(local_rank)
    global_rank = machine_rank * num_gpus_per_machine + local_rank
    os.environ["LOCAL_RANK"] = str(local_rank)
    os.environ["RANK"] = str(global_rank)
    os.environ["WORLD_SIZE"] = str(world_size)
    os.environ["LOCAL_WORLD_SIZE"] = str(num_gpus_per_machine)
    # Keep CPU workers from oversubscribing the cores: N processes share one process' threads
    # (OMP_NUM_THREADS if set, else the cores).
    if backend == "gloo":
        torch.set_num_threads(max(1, torch.get_num_threads() // num_gpus_per_machine))
        os.environ["REID_THREADS_SHARED"] = "1"
    dist.init_process_group(
        backend=backend,
        init_method=dist_url,
        world_size=world_size,
        rank=global_rank,
        timeout=timeout,
    )
    comm.synchronize()
    teardown = True
    try:
        main_func(*args)
    except KeyboardInterrupt:  # a second Ctrl-C: stop at once (torch's wrapper would exit 0)
        if debug_enabled():
            raise
        if global_rank == 0:
            sys.stderr.write("Interrupted.\n")
        _exit_now(128 + signal.SIGINT)
    except Exception as e:  # noqa: BLE001 - user errors: one line; anything else propagates
        if debug_enabled() or not is_user_error(e):
            raise
        teardown = False
        code = exit_code(e)
        # Usually every rank meets the same mistake: rank 0 reports at once; the others wait
        # a moment, in which the launcher ends them (SIGTERM, turned into a clean exit here)
        # once rank 0 has exited, and report only if still alive (a mistake only they met).
        # All ranks stop on an interrupt: rank 0's report is enough.
        if global_rank != 0:
            if isinstance(e, TrainingInterrupted):
                _exit_now(code)
            signal.signal(signal.SIGTERM, lambda *_: _exit_now(code))
            time.sleep(_OTHER_RANKS_REPORT_DELAY_S)
        report_user_error(e, prefix=f"[rank {global_rank}] " if global_rank else "")
        _exit_now(code)
    finally:
        if teardown and dist.is_initialized():
            dist.destroy_process_group()
