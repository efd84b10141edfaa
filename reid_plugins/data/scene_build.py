"""Data loaders for person search (scene images with person boxes).

* :func:`build_scene_train_loader` -> :class:`~reid_plugins.data.build.TrainLoader` (the
  loader of ReID crops too; one map-dataset / sampler / seeding stack): an infinite iterable of
  ``list[dict]`` batches (:class:`~reid_plugins.data.scene_mapper.SceneDatasetMapper` outputs,
  variable image sizes; the model pads them). Shuffled, and **exactly resumable**: global
  batch ``k`` depends only on ``(cfg.SEED, k)``: its record indices are the stream positions
  ``k*B .. (k+1)*B - 1`` of the concatenated per-epoch permutations
  ``default_rng([seed, epoch]).permutation(N)``, and the random flip of position ``j`` of
  batch ``k`` uses the seed ``SeedSequence([seed, k, j])``. :meth:`TrainLoader.set_start_iter`
  makes the next iteration start at batch ``k``; worker count does not matter. With several
  processes, rank ``r`` takes the ``r``-th contiguous slice of each global batch.
* :func:`build_scene_test_loader` -> ``DataLoader`` over the records of a gallery set in
  order (``InferenceSampler``: contiguous shards per rank).
* :func:`build_scene_query_loader` -> ``DataLoader`` over query records (scene image +
  ``"query_box"`` + ``"query_index"``), optionally aligned to an evaluator's query list.

Training records of several ``DATASETS.TRAIN`` sets are concatenated, the labelled pids of
each set offset by the identities of the sets before it (unlabelled stays -1);
``"dataset_index"`` records the source set. Unreadable images raise (naming the file) unless
``DATALOADER.SKIP_CORRUPT``; then they are dropped from the batch and counted.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from torch.utils.data import BatchSampler, DataLoader, Sampler

from ..utils import comm
from .build import (
    SeededBatchSampler,
    TrainLoader,
    _make_loader,
    _resolve_seed,
)
from .catalog import DatasetCatalog
from .samplers import InferenceSampler
from .scene_mapper import SceneDatasetMapper

__all__ = [
    "SceneTrainBatchSampler",
    "build_scene_train_loader",
    "build_scene_test_loader",
    "build_scene_query_loader",
    "get_scene_train_records",
    "num_scene_train_pids",
    "search_dataset_pair",
]

logger = logging.getLogger(__name__)

Record = Dict[str, Any]
_UNLABELED = -1


# ----------------------------------------------------------------------------- #
# Records
# ----------------------------------------------------------------------------- #
def _get_records(name: str) -> List[Record]:
    from . import datasets  # noqa: F401  (lazy: importing it registers the built-in sets)

    return DatasetCatalog.get(name)


def _check_scene_records(name: str, records: Sequence[Record], query: bool = False) -> None:
    if not isinstance(records, list) or not records:
        raise ValueError(f"Scene dataset '{name}' is empty (DatasetCatalog returned no records)")
    need = ["file_name", "image_id", "height", "width"]
    need += ["query_box", "query_pid"] if query else ["boxes", "pids"]
    for i, r in enumerate(records):
        missing = [k for k in need if k not in r]
        if missing:
            raise ValueError(
                f"Record {i} of scene dataset '{name}' lacks {missing} (has {sorted(r)}); "
                "person search needs scene records (see INTERFACES: person search records)"
            )


def get_scene_train_records(cfg) -> List[Record]:
    """Training scene records of ``cfg.DATASETS.TRAIN`` (pids offset per set, see module doc).

    Images without any box are dropped (logged).

    Raises:
        ValueError: ``DATASETS.TRAIN`` is empty, a set is empty or not a scene set.
        KeyError: a name is not registered.
    """
    names = list(cfg.DATASETS.TRAIN)
    if not names:
        raise ValueError("cfg.DATASETS.TRAIN is empty: name at least one scene dataset")
    out: List[Record] = []
    offset = 0
    for d, name in enumerate(names):
        records = _get_records(name)
        _check_scene_records(name, records)
        num = 0
        empty = 0
        for r in records:
            pids = np.asarray(r["pids"], dtype=np.int64).reshape(-1)
            if len(pids) == 0:
                empty += 1
                continue
            if pids.min() < _UNLABELED:
                raise ValueError(
                    f"Scene dataset '{name}' ({r['file_name']}): pids must be >= 0 or -1 "
                    f"(unlabelled), got {pids.min()}"
                )
            num = max(num, int(pids.max()) + 1)
            r = dict(r)
            r["pids"] = np.where(pids >= 0, pids + offset, _UNLABELED).astype(np.int64)
            r["dataset_index"] = d
            out.append(r)
        if empty:
            logger.info("Scene dataset '%s': dropped %d training images without boxes", name, empty)
        offset += num
    return out


def num_scene_train_pids(records: Sequence[Record]) -> int:
    """Size of the OIM lookup table for ``records``: largest labelled pid + 1."""
    best = -1
    for r in records:
        pids = np.asarray(r["pids"]).reshape(-1)
        if pids.size:
            best = max(best, int(pids.max()))
    return best + 1


def search_dataset_pair(name: str) -> Tuple[str, str]:
    """``(gallery_set, query_set)`` for a ``DATASETS.TEST`` entry naming either one.

    ``<prefix>_gallery`` pairs with ``<prefix>_query`` and vice versa.

    Raises:
        ValueError: ``name`` ends neither with ``_gallery`` nor ``_query``.
    """
    for suffix, other in (("_gallery", "_query"), ("_query", "_gallery")):
        if name.endswith(suffix):
            partner = name[: -len(suffix)] + other
            return (name, partner) if suffix == "_gallery" else (partner, name)
    raise ValueError(
        f"DATASETS.TEST entry '{name}' is not a person-search set: use '<name>_gallery' or "
        "'<name>_query' (e.g. cuhk_sysu_gallery, prw_query)"
    )


# ----------------------------------------------------------------------------- #
# Training
# ----------------------------------------------------------------------------- #
class SceneTrainBatchSampler(Sampler[List[int]]):
    """Infinite batches of record indices starting at global batch ``start_iter``: this
    rank's slice of the concatenated per-epoch permutations (module docstring). Wrapped in a
    :class:`~reid_plugins.data.build.SeededBatchSampler` (with this rank's position offset)
    by :func:`build_scene_train_loader`.

    Args:
        size: number of records (> 0).
        batch_size: global batch size (summed over ranks, divisible by ``world_size``).
        seed: base seed (>= 0).
        start_iter: first global batch produced.
        rank, world_size: keyword-only overrides of the distributed rank / world size.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        seed: int,
        start_iter: int = 0,
        *,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
    ) -> None:
        if size <= 0:
            raise ValueError(f"SceneTrainBatchSampler needs records, got size {size}")
        world_size = comm.get_world_size() if world_size is None else int(world_size)
        rank = comm.get_rank() if rank is None else int(rank)
        if batch_size <= 0 or batch_size % world_size:
            raise ValueError(
                f"SOLVER.IMS_PER_BATCH ({batch_size}) must be positive and divisible by the "
                f"number of processes ({world_size})"
            )
        self.size, self.batch_size, self.seed = int(size), int(batch_size), int(seed)
        self.start_iter = int(start_iter)
        self.rank, self.world_size = rank, world_size
        self.local_batch_size = self.batch_size // world_size

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.size)

    def set_start_iter(self, start_iter: int) -> None:
        """Make the next ``iter(self)`` start at global batch ``start_iter``."""
        self.start_iter = int(start_iter)

    @property
    def position_offset(self) -> int:
        """Position of this rank's slice in the global batch."""
        return self.rank * self.local_batch_size

    def global_batch(self, k: int) -> List[int]:
        """Record indices of global batch ``k``."""
        out = []
        start = k * self.batch_size
        epoch, perm = -1, None
        for j in range(self.batch_size):
            e, pos = divmod(start + j, self.size)
            if e != epoch:
                epoch, perm = e, self._permutation(e)
            out.append(int(perm[pos]))
        return out

    def __iter__(self) -> Iterator[List[int]]:
        lo = self.rank * self.local_batch_size
        k = self.start_iter
        while True:
            yield self.global_batch(k)[lo : lo + self.local_batch_size]
            k += 1


def build_scene_train_loader(cfg, mapper: Optional[Callable] = None) -> TrainLoader:
    """Infinite, shuffled, resumable scene training loader.

    Args:
        cfg: config. Keys: ``DATASETS.TRAIN``, ``SOLVER.IMS_PER_BATCH`` (global),
            ``DATALOADER.{NUM_WORKERS, SKIP_CORRUPT}``, ``SEED`` (< 0: a seed shared by all
            processes), ``INPUT.{MIN,MAX}_SIZE_TRAIN``, ``INPUT.FLIP``.
        mapper: ``callable(record, seed=...)``; default
            ``SceneDatasetMapper.from_config(cfg, is_train=True)``.

    Returns:
        :class:`~reid_plugins.data.build.TrainLoader` (single source); iterating yields
        ``list[dict]`` batches forever; ``num_pids_per_domain = [labelled identities]`` (pids
        are offset per training set, so one count covers them all: the OIM lookup-table /
        classifier size).
    """
    if mapper is None:
        mapper = SceneDatasetMapper.from_config(cfg, is_train=True)
    records = get_scene_train_records(cfg)
    seed = _resolve_seed(cfg)
    index_sampler = SceneTrainBatchSampler(len(records), cfg.SOLVER.IMS_PER_BATCH, seed)
    batch_sampler = SeededBatchSampler(index_sampler, seed, index_sampler.position_offset)
    worker_seed = seed + 1_000_003 * index_sampler.rank
    dataloader = _make_loader(
        records, mapper, batch_sampler, cfg.DATALOADER.NUM_WORKERS, worker_seed
    )
    num_pids = num_scene_train_pids(records)
    logger.info(
        "Scene train loader: %s, %d images, %d labelled ids, %d images per batch per process, "
        "seed %d",
        list(cfg.DATASETS.TRAIN),
        len(records),
        num_pids,
        index_sampler.local_batch_size,
        seed,
    )
    return TrainLoader(
        [dataloader],
        multi_source=False,
        batch_size=index_sampler.local_batch_size,
        num_pids_per_domain=[num_pids],
    )


# ----------------------------------------------------------------------------- #
# Evaluation
# ----------------------------------------------------------------------------- #
def _test_batch_size(cfg) -> int:
    return max(1, int(cfg.TEST.SEARCH.IMS_PER_BATCH) // comm.get_world_size())


def _ordered_loader(cfg, records: Sequence[Record], mapper: Callable) -> DataLoader:
    sampler = BatchSampler(InferenceSampler(len(records)), _test_batch_size(cfg), drop_last=False)
    return _make_loader(records, mapper, sampler, cfg.DATALOADER.NUM_WORKERS, 0)


def build_scene_test_loader(cfg, dataset_name: str, mapper: Optional[Callable] = None):
    """Loader over the records of a scene set (e.g. ``cuhk_sysu_gallery``) in order.

    Args:
        cfg: config (``TEST.SEARCH.IMS_PER_BATCH`` summed over processes,
            ``INPUT.{MIN,MAX}_SIZE_TEST``, ``DATALOADER.*``).
        dataset_name: registered scene set.
        mapper: default ``SceneDatasetMapper.from_config(cfg, is_train=False)``.

    Returns:
        ``DataLoader`` yielding ``list[dict]`` batches (record + "image", "gt_boxes",
        "gt_pids"), each rank its contiguous share of the records.
    """
    records = _get_records(dataset_name)
    _check_scene_records(dataset_name, records)
    if mapper is None:
        mapper = SceneDatasetMapper.from_config(cfg, is_train=False)
    return _ordered_loader(cfg, records, mapper)


def _align_queries(
    name: str, records: Sequence[Record], queries: Sequence[Mapping]
) -> List[Record]:
    """One record per evaluator query (same order), with the query's box and index."""
    by_key: Dict[Tuple[str, int], List[Record]] = {}
    for r in records:
        by_key.setdefault((str(r["image_id"]), int(r["query_pid"])), []).append(r)
    out = []
    for i, q in enumerate(queries):
        key = (str(q["image_id"] if "image_id" in q else q["query_image_id"]), int(q["query_pid"]))
        found = by_key.get(key)
        if not found:
            raise KeyError(
                f"Query {i} {key} (image_id, query_pid) of the evaluator is not in the query "
                f"set '{name}'"
            )
        box = np.asarray(q["query_box"], dtype=np.float32).reshape(4)
        best = min(found, key=lambda r: float(np.abs(np.asarray(r["query_box"]) - box).sum()))
        r = dict(best)
        r["query_box"] = box
        r["query_index"] = i
        out.append(r)
    return out


def build_scene_query_loader(
    cfg,
    dataset_name: str,
    queries: Optional[Sequence[Mapping]] = None,
    mapper: Optional[Callable] = None,
) -> DataLoader:
    """Loader over the query records of ``dataset_name`` (e.g. ``cuhk_sysu_query``).

    Each item is the query image's scene dict plus ``"query_box"`` (4,) x1,y1,x2,y2 in
    original coordinates and ``"query_index"``.

    Args:
        cfg: config (as :func:`build_scene_test_loader`).
        dataset_name: registered query set (records with ``query_box`` / ``query_pid``).
        queries: the evaluator's query list (``PersonSearchEvaluator.queries``: dicts with
            ``image_id``, ``query_pid``, ``query_box``); the loader then follows its order and
            ``query_index`` is the position in it. None: the records' order.
        mapper: default ``SceneDatasetMapper.from_config(cfg, is_train=False)``.

    Raises:
        KeyError: an evaluator query has no record with the same (image_id, query_pid).
    """
    records = _get_records(dataset_name)
    _check_scene_records(dataset_name, records, query=True)
    if queries is None:
        records = [dict(r, query_index=i) for i, r in enumerate(records)]
    else:
        records = _align_queries(dataset_name, records, queries)
    if mapper is None:
        mapper = SceneDatasetMapper.from_config(cfg, is_train=False)
    return _ordered_loader(cfg, records, mapper)
