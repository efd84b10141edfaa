"""Index samplers: infinite training streams (shuffled or P x K) and sharded inference.

Every training sampler produces one *global* stream of indices, identical on all processes
for a given seed, and each rank keeps its own share of it, so that the union over ranks of one
step's batches is exactly what a single process with the global batch would draw.
``rank`` / ``world_size`` default to ``torch.distributed``'s and can be given explicitly
(e.g. to simulate several ranks in one process).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from typing import Iterator, List, Optional, Sequence

import numpy as np
from torch.utils.data import Sampler

from ..utils import comm

__all__ = ["TrainingSampler", "RandomIdentitySampler", "InferenceSampler"]


def _resolve_rank(rank: Optional[int], world_size: Optional[int]):
    world_size = comm.get_world_size() if world_size is None else int(world_size)
    rank = comm.get_rank() if rank is None else int(rank)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"Invalid rank {rank} for world_size {world_size}")
    return rank, world_size


def _resolve_seed(seed: Optional[int]) -> int:
    return int(comm.shared_random_seed()) if seed is None or seed < 0 else int(seed)


class TrainingSampler(Sampler[int]):
    """Infinite stream of indices in ``[0, size)``, shuffled anew each pass (or in order).

    The global stream is the concatenation of permutations drawn from ``seed``; rank ``r`` of
    ``W`` yields elements ``r, r + W, r + 2W, ...`` of it.

    Args:
        size: number of samples (> 0).
        shuffle: shuffle each pass; False yields ``0..size-1`` repeatedly.
        seed: random seed, identical on all ranks; None (or < 0) = a shared random seed.
        rank, world_size: keyword-only overrides of the distributed rank / world size.
    """

    def __init__(
        self,
        size: int,
        shuffle: bool = True,
        seed: Optional[int] = None,
        *,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
    ):
        if size <= 0:
            raise ValueError(f"TrainingSampler needs size > 0, got {size}")
        self._size = int(size)
        self._shuffle = shuffle
        self._seed = _resolve_seed(seed)
        self._rank, self._world_size = _resolve_rank(rank, world_size)

    def _global_indices(self) -> Iterator[int]:
        rng = np.random.default_rng(self._seed)
        while True:
            if self._shuffle:
                yield from rng.permutation(self._size).tolist()
            else:
                yield from range(self._size)

    def __iter__(self) -> Iterator[int]:
        yield from itertools.islice(self._global_indices(), self._rank, None, self._world_size)


class RandomIdentitySampler(Sampler[int]):
    """Infinite P x K identity sampler.

    Global batches of ``batch_size`` indices are made of ``P = batch_size // num_instances``
    distinct identities with ``K = num_instances`` images each (identity-contiguous: the K
    images of an identity are adjacent). Each "epoch" shuffles the identities and cuts them
    into groups of P (the last incomplete group is dropped, a new shuffle starts); for each
    identity K images are drawn without replacement, or with replacement when it has fewer
    than K images. With ``W`` ranks, rank ``r`` yields the ``r``-th slice of
    ``batch_size // W`` indices of every global batch, i.e. its own ``P / W`` identities x K;
    ranks never share an identity within a step.

    So consecutive chunks of ``batch_size // world_size`` indices (use a
    ``BatchSampler(..., drop_last=True)`` with that size) are P_local x K batches.

    Args:
        pids: identity label of every sample (index i has identity ``pids[i]``).
        batch_size: global batch size (summed over ranks).
        num_instances: K, images per identity in a batch.
        seed: random seed, identical on all ranks; None (or < 0) = a shared random seed.
        rank, world_size: keyword-only overrides of the distributed rank / world size.

    Raises:
        ValueError: ``batch_size`` not divisible by K or by ``world_size`` (or the per-rank
            batch not divisible by K), or fewer identities than P; messages give the numbers.
    """

    def __init__(
        self,
        pids: Sequence[int],
        batch_size: int,
        num_instances: int,
        seed: Optional[int] = None,
        *,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
    ):
        self._rank, self._world_size = _resolve_rank(rank, world_size)
        if num_instances <= 0 or batch_size <= 0:
            raise ValueError(
                f"batch_size ({batch_size}) and num_instances ({num_instances}) must be > 0"
            )
        if batch_size % num_instances != 0:
            raise ValueError(
                f"batch_size ({batch_size}) must be divisible by num_instances K "
                f"({num_instances})"
            )
        if batch_size % self._world_size != 0 or (batch_size // self._world_size) % num_instances:
            raise ValueError(
                f"batch_size ({batch_size}) must split into {self._world_size} per-process "
                f"batches that are each divisible by num_instances K ({num_instances})"
            )
        groups: "OrderedDict[int, List[int]]" = OrderedDict()
        for index, pid in enumerate(pids):
            groups.setdefault(int(pid), []).append(index)
        self.num_pids_per_batch = batch_size // num_instances
        if len(groups) < self.num_pids_per_batch:
            raise ValueError(
                f"RandomIdentitySampler needs at least P = batch_size / K = {batch_size} / "
                f"{num_instances} = {self.num_pids_per_batch} identities, but the data has only "
                f"{len(groups)} identities ({len(pids)} images)"
            )
        self._pid_indices = [np.asarray(v, dtype=np.int64) for v in groups.values()]
        self.batch_size = int(batch_size)
        self.num_instances = int(num_instances)
        self.local_batch_size = self.batch_size // self._world_size
        self._seed = _resolve_seed(seed)

    def _global_batches(self) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(self._seed)
        num_ids, p, k = len(self._pid_indices), self.num_pids_per_batch, self.num_instances
        while True:
            order = rng.permutation(num_ids)
            for start in range(0, num_ids - p + 1, p):
                chunks = []
                for pid_pos in order[start : start + p]:
                    idxs = self._pid_indices[pid_pos]
                    chunks.append(rng.choice(idxs, size=k, replace=len(idxs) < k))
                yield np.concatenate(chunks)

    def __iter__(self) -> Iterator[int]:
        lo = self._rank * self.local_batch_size
        hi = lo + self.local_batch_size
        for batch in self._global_batches():
            yield from batch[lo:hi].tolist()


class InferenceSampler(Sampler[int]):
    """Finite sampler splitting ``[0, size)`` into contiguous shards, one per rank.

    Shard sizes differ by at most one (the first ``size % world_size`` ranks get one more);
    the concatenation of all shards in rank order is ``0..size-1``.

    Args:
        size: number of samples (>= 0).
        rank, world_size: keyword-only overrides of the distributed rank / world size.
    """

    def __init__(self, size: int, *, rank: Optional[int] = None, world_size: Optional[int] = None):
        if size < 0:
            raise ValueError(f"InferenceSampler needs size >= 0, got {size}")
        self._size = int(size)
        self._rank, self._world_size = _resolve_rank(rank, world_size)
        base, extra = divmod(self._size, self._world_size)
        begin = self._rank * base + min(self._rank, extra)
        self._local = range(begin, begin + base + (1 if self._rank < extra else 0))

    def __iter__(self) -> Iterator[int]:
        yield from self._local

    def __len__(self) -> int:
        return len(self._local)
