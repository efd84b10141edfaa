"""Multi-process launching on PyTorch DDP (nccl on GPU, gloo on CPU), or under torchrun."""

from __future__ import annotations

import logging
import os
import socket
from datetime import timedelta
from typing import Callable, Tuple

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ..utils import comm

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

    Without CUDA, ``num_gpus_per_machine`` is the number of CPU processes (gloo). Under
    ``torchrun`` the process group is initialised from the environment and ``main_func`` runs
    in the current process. With a world size of 1, ``main_func`` is simply called.

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
    mp.start_processes(
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
    )


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
    # Keep CPU workers from oversubscribing the cores.
    if backend == "gloo":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // num_gpus_per_machine))
    dist.init_process_group(
        backend=backend,
        init_method=dist_url,
        world_size=world_size,
        rank=global_rank,
        timeout=timeout,
    )
    comm.synchronize()
    try:
        main_func(*args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
