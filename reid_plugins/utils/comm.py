"""Helpers for (optionally) distributed execution with ``torch.distributed``."""

from __future__ import annotations

import functools
from typing import Any, List

import numpy as np
import torch
import torch.distributed as dist

__all__ = [
    "get_world_size",
    "get_rank",
    "get_local_rank",
    "is_main_process",
    "synchronize",
    "all_gather",
    "gather",
    "reduce_dict",
    "shared_random_seed",
]

_LOCAL_PROCESS_GROUP = None


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_local_rank() -> int:
    """Rank inside the machine (set by ``launch``/torchrun through ``LOCAL_RANK``)."""
    import os

    return int(os.environ.get("LOCAL_RANK", 0)) if is_dist() else 0


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    """Barrier across all processes (no-op when not distributed)."""
    if is_dist() and get_world_size() > 1:
        dist.barrier()


@functools.lru_cache()
def _cpu_group():
    """A gloo group for pickled-object collectives (works with nccl default groups)."""
    if dist.get_backend() == "nccl":
        return dist.new_group(backend="gloo")
    return dist.group.WORLD


def all_gather(data: Any) -> List[Any]:
    """Gather any picklable object from every process; returns a list indexed by rank."""
    if get_world_size() == 1:
        return [data]
    out: List[Any] = [None] * get_world_size()
    dist.all_gather_object(out, data, group=_cpu_group())
    return out


def gather(data: Any, dst: int = 0) -> List[Any]:
    """Gather picklable objects on rank ``dst``; other ranks receive ``[]``."""
    if get_world_size() == 1:
        return [data]
    if get_rank() == dst:
        out: List[Any] = [None] * get_world_size()
        dist.gather_object(data, out, dst=dst, group=_cpu_group())
        return out
    dist.gather_object(data, None, dst=dst, group=_cpu_group())
    return []


def reduce_dict(values: dict, average: bool = True) -> dict:
    """All-reduce a dict of scalar tensors (mean by default); same keys on every rank."""
    if get_world_size() == 1:
        return values
    with torch.no_grad():
        names = sorted(values.keys())
        stacked = torch.stack([values[k].detach().float() for k in names])
        dist.all_reduce(stacked)
        if average:
            stacked /= get_world_size()
        return {k: v for k, v in zip(names, stacked)}


def shared_random_seed() -> int:
    """A random integer identical on all processes (rank 0's draw)."""
    seed = int(np.random.randint(2**31))
    return all_gather(seed)[0]


def unwrap_model(model: "torch.nn.Module") -> "torch.nn.Module":
    """The model inside DDP / DataParallel / ``torch.compile`` wrappers (any nesting)."""
    while True:
        if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):
            model = model._orig_mod
        else:
            return model
