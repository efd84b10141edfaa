"""Data loaders for ReID training, evaluation and feature extraction.

Return types (all batches are ``list[dict]``: each dict is a record plus ``"image"``, a
float32 ``(3, H, W)`` tensor in 0-255 RGB, see :class:`~reid_plugins.data.ReIDDatasetMapper`):

* :func:`build_reid_train_loader` -> :class:`TrainLoader`, an infinite iterable.
    - ``DATALOADER.MULTI_SOURCE = False``: yields one ``list[dict]`` per iteration
      (``SOLVER.IMS_PER_BATCH // world_size`` images, P x K over the global pids of all
      ``DATASETS.TRAIN`` sets combined).
    - ``DATALOADER.MULTI_SOURCE = True``: yields ``[batch_domain0, batch_domain1, ...]``, a
      list with one ``list[dict]`` per source domain (in ``DATASETS.TRAIN`` order), each of
      ``SOLVER.IMS_PER_BATCH // world_size`` images of that domain only, P x K; every dict
      carries ``"domain"`` (its index), ``"domain_pid"`` and the global ``"pid"``.
* :func:`build_reid_test_loader` -> ``(DataLoader, info)``: query records then gallery records
  in dataset order, sharded contiguously over ranks; ``info = {"dataset_name", "num_query",
  "num_gallery"}``.
* :func:`build_feature_extraction_loader` -> ``DataLoader`` over the given records in order,
  evaluation transforms (e.g. to initialise per-domain memories).

One stack serves crops and scenes (:mod:`.scene_build` uses the same pieces): a
:class:`MapDataset` over serialised records, a :class:`SeededBatchSampler` that turns any index
batch sampler into batches of ``(index, sample_seed)`` with the **one seeding protocol**
``sample_seed = SeedSequence([seed, k, j])`` (batch ``k``, position ``j``), a
:class:`DropNoneCollator` and :class:`TrainLoader` (one ``DataLoader`` per domain). The
augmentation of a sample therefore depends only on ``(seed, k, j)``: training loaders are
exactly resumable (:meth:`TrainLoader.set_start_iter`) whatever the worker count.

Unreadable images raise :class:`~reid_plugins.data.ImageReadError` naming the file unless
``DATALOADER.SKIP_CORRUPT`` is set; then the mapper logs a warning naming the file and the
collate function drops the sample, logs a warning and counts it (``loader.num_dropped``), so
such a batch is smaller than requested.
"""

from __future__ import annotations

import inspect
import logging
import multiprocessing as mp
import pickle
import random
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from ..utils import comm
from .catalog import DatasetCatalog
from .mapper import ReIDDatasetMapper
from .samplers import InferenceSampler, RandomIdentitySampler, TrainingSampler

__all__ = [
    "DropNoneCollator",
    "MapDataset",
    "ReIDTrainLoader",
    "SeededBatchSampler",
    "TrainLoader",
    "sample_seed",
    "build_feature_extraction_loader",
    "build_reid_test_loader",
    "build_reid_train_loader",
    "get_reid_train_records",
    "get_train_pids_per_domain",
    "infer_num_classes",
    "worker_init_reset_seed",
]

logger = logging.getLogger(__name__)

Record = Dict[str, Any]


# ----------------------------------------------------------------------------- #
# Datasets and collation
# ----------------------------------------------------------------------------- #
class _SerializedRecords:
    """Records pickled into one numpy buffer.

    DataLoader workers forked from the main process would otherwise touch (and so copy) the
    pages of millions of small Python objects through reference counting.
    """

    def __init__(self, records: Sequence[Record]):
        blobs = [pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL) for r in records]
        self._ends = np.cumsum([len(b) for b in blobs], dtype=np.int64)
        self._data = np.frombuffer(b"".join(blobs), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, index: int) -> Record:
        start = int(self._ends[index - 1]) if index > 0 else 0
        return pickle.loads(self._data[start : int(self._ends[index])].tobytes())


def _takes_seed(mapper: Callable) -> bool:
    try:
        return "seed" in inspect.signature(mapper).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False


class MapDataset(Dataset):
    """``dataset[i] = mapper(records[i])`` (records are serialised once, never modified).

    ``dataset[(i, sample_seed)]`` (what a :class:`SeededBatchSampler` yields) makes the
    sample's randomness depend only on ``sample_seed``: a mapper with a ``seed`` keyword
    (e.g. :class:`~reid_plugins.data.scene_mapper.SceneDatasetMapper`) gets it as
    ``mapper(record, seed=sample_seed)``; any other mapper runs with torch / numpy /
    ``random`` seeded from it (states restored afterwards).

    Args:
        records: list of record dicts.
        mapper: callable record -> dict, or None to drop the sample.
    """

    def __init__(self, records: Sequence[Record], mapper: Callable[..., Optional[Record]]):
        self._records = _SerializedRecords(records)
        self._mapper = mapper
        self._mapper_takes_seed = _takes_seed(mapper)

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index) -> Optional[Record]:
        if isinstance(index, tuple):
            index, seed = int(index[0]), int(index[1])
            if self._mapper_takes_seed:
                return self._mapper(self._records[index], seed=seed)
            with _seeded_rng(seed):
                return self._mapper(self._records[index])
        return self._mapper(self._records[int(index)])


class _seeded_rng:
    """Context seeding torch/numpy/random with ``seed`` and restoring their states after."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def __enter__(self):
        self._states = (torch.get_rng_state(), np.random.get_state(), random.getstate())
        # The CPU generator only: ``torch.manual_seed`` would also queue a re-seed of every
        # CUDA device (formatting the Python stack, half of a ReID sample's loading time) and,
        # in a main-process loader on a GPU, overwrite the model's CUDA RNG without restoring it.
        torch.default_generator.manual_seed(self.seed)
        np.random.seed(self.seed % 2**32)
        random.seed(self.seed)

    def __exit__(self, *exc):
        torch.set_rng_state(self._states[0])
        np.random.set_state(self._states[1])
        random.setstate(self._states[2])


def sample_seed(seed: int, k: int, j: int) -> int:
    """The seed of position ``j`` of training batch ``k``: ``SeedSequence([seed, k, j])``
    (the one seeding protocol of every training loader)."""
    return int(np.random.SeedSequence([int(seed), int(k), int(j)]).generate_state(1)[0])


class SeededBatchSampler(Sampler):
    """Wraps an (infinite) batch sampler so that batch ``k`` is ``[(index, sample_seed),
    ...]`` with ``sample_seed = sample_seed(seed, k, position_offset + j)``.

    The augmentations of batch ``k`` therefore do not depend on how many batches were drawn
    before or by which worker. :meth:`set_start_iter` starts at batch ``k``: it is passed on
    to a wrapped sampler that has ``set_start_iter`` (which then yields batch ``k`` first),
    otherwise the first ``k`` index batches are skipped (cheap: no image is read).

    Args:
        batch_sampler: yields lists of record indices.
        seed: base seed.
        position_offset: added to the position in the batch (a rank's slice of a global
            batch uses its offset, so that seeds do not depend on the number of processes).
    """

    def __init__(self, batch_sampler: Sampler, seed: int, position_offset: int = 0):
        self.batch_sampler = batch_sampler
        self.seed = int(seed)
        self.position_offset = int(position_offset)
        self.start_iter = 0

    def set_start_iter(self, start_iter: int) -> None:
        if start_iter < 0:
            raise ValueError(f"start_iter must be >= 0, got {start_iter}")
        self.start_iter = int(start_iter)

    def __iter__(self):
        delegate = hasattr(self.batch_sampler, "set_start_iter")
        if delegate:
            self.batch_sampler.set_start_iter(self.start_iter)
        k = 0 if not delegate else self.start_iter
        off = self.position_offset
        for batch in self.batch_sampler:
            if k >= self.start_iter:
                yield [(int(i), sample_seed(self.seed, k, off + j)) for j, i in enumerate(batch)]
            k += 1


class DropNoneCollator:
    """``collate_fn`` returning the batch as a plain ``list``, without ``None`` items.

    ``None`` items (images skipped by a mapper with ``skip_corrupt``) are dropped with a
    warning and counted in :attr:`num_dropped`, a counter shared with DataLoader worker
    processes (it counts collated batches, including those workers have prefetched).
    """

    def __init__(self):
        self._dropped = mp.Value("q", 0)

    @property
    def num_dropped(self) -> int:
        """Samples dropped so far, over all worker processes."""
        return int(self._dropped.value)

    def __call__(self, batch: List[Optional[Record]]) -> List[Record]:
        kept = [x for x in batch if x is not None]
        dropped = len(batch) - len(kept)
        if dropped:
            with self._dropped.get_lock():
                self._dropped.value += dropped
                total = self._dropped.value
            logger.warning(
                "Dropped %d unreadable sample(s) from a batch of %d (%d dropped so far)",
                dropped,
                len(batch),
                total,
            )
        return kept


def worker_init_reset_seed(worker_id: int) -> None:
    """Seed numpy and ``random`` in a DataLoader worker from torch's per-worker seed.

    torch seeds each worker with ``base_seed + worker_id`` where ``base_seed`` comes from the
    DataLoader's generator, which the builders seed from ``cfg.SEED``.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def _resolve_seed(cfg) -> int:
    if cfg.SEED >= 0:
        return int(cfg.SEED)
    seed = int(comm.shared_random_seed())
    logger.info("cfg.SEED < 0: data loading uses the shared random seed %d", seed)
    return seed


def _make_loader(
    records: Sequence[Record],
    mapper: Callable[[Record], Optional[Record]],
    batch_sampler: Sampler,
    num_workers: int,
    seed: int,
) -> DataLoader:
    generator = torch.Generator()
    generator.manual_seed(seed)
    # Workers prefetch batches while the model computes; on CUDA the batches are also put in
    # pinned memory so that the model's ``.to(device, non_blocking=True)`` overlaps the copy.
    return DataLoader(
        MapDataset(records, mapper),
        batch_sampler=batch_sampler,
        num_workers=num_workers,
        collate_fn=DropNoneCollator(),
        worker_init_fn=worker_init_reset_seed,
        generator=generator,
        pin_memory=torch.cuda.is_available(),
    )


# ----------------------------------------------------------------------------- #
# Training records
# ----------------------------------------------------------------------------- #
def _check_train_records(name: str, records: Sequence[Record]) -> None:
    if not isinstance(records, list) or len(records) == 0:
        raise ValueError(f"Training dataset '{name}' is empty (DatasetCatalog returned no records)")
    for i, r in enumerate(records):
        missing = [k for k in ("file_name", "pid", "camid") if k not in r]
        if missing:
            raise ValueError(f"Record {i} of training dataset '{name}' lacks {missing}: {r}")
        if int(r["pid"]) < 0:
            raise ValueError(
                f"Record {i} of training dataset '{name}' has a negative pid {r['pid']} "
                f"({r['file_name']}); training pids must be relabelled to 0..N-1"
            )


def _combine(names: Sequence[str], record_lists: Sequence[Sequence[Record]]) -> List[Record]:
    from .datasets.common import combine_sources  # lazy: importing it registers datasets

    return combine_sources(list(zip(names, record_lists)))


def get_reid_train_records(cfg) -> List[Record]:
    """All training records of ``cfg.DATASETS.TRAIN`` combined into one list.

    Each record gets ``"domain"`` (index of its set in ``DATASETS.TRAIN``), ``"domain_pid"``
    (pid within its domain) and a global, collision-free ``"pid"``.

    Raises:
        ValueError: ``DATASETS.TRAIN`` is empty, a set is empty or a record is malformed.
        KeyError: a name is not registered.
    """
    names = list(cfg.DATASETS.TRAIN)
    if not names:
        raise ValueError("cfg.DATASETS.TRAIN is empty: name at least one registered dataset")
    from . import datasets  # noqa: F401  (lazy: importing it registers the built-in sets)

    record_lists = []
    for name in names:
        records = DatasetCatalog.get(name)
        _check_train_records(name, records)
        record_lists.append(records)
    return _combine(names, record_lists)


def _split_by_domain(records: Sequence[Record], num_domains: int) -> List[List[Record]]:
    by_domain: "OrderedDict[int, List[Record]]" = OrderedDict((d, []) for d in range(num_domains))
    for r in records:
        by_domain[int(r["domain"])].append(r)
    return list(by_domain.values())


def get_train_pids_per_domain(cfg, records: Optional[Sequence[Record]] = None) -> List[int]:
    """Number of training identities of each source domain, in ``DATASETS.TRAIN`` order.

    Args:
        cfg: config (``DATASETS.TRAIN``).
        records: combined records from :func:`get_reid_train_records` (loaded when None).
    """
    from .datasets.common import domain_pid_counts

    if records is None:
        records = get_reid_train_records(cfg)
    counts = domain_pid_counts(records)
    return counts + [0] * (len(cfg.DATASETS.TRAIN) - len(counts))


def infer_num_classes(cfg, records: Optional[Sequence[Record]] = None) -> int:
    """``MODEL.HEADS.NUM_CLASSES`` when > 0, else the number of global training pids.

    The global pids of the combined training sets are ``0..N-1``; N is returned.
    """
    if cfg.MODEL.HEADS.NUM_CLASSES > 0:
        return int(cfg.MODEL.HEADS.NUM_CLASSES)
    if records is None:
        records = get_reid_train_records(cfg)
    return max(int(r["pid"]) for r in records) + 1


# ----------------------------------------------------------------------------- #
# Training loader
# ----------------------------------------------------------------------------- #
class TrainLoader:
    """Infinite training iterable over one DataLoader per domain (see the module docstring);
    the training loader of crops (ReID) and scenes (person search) alike.

    Attributes:
        dataloaders: the underlying ``DataLoader`` objects (one, or one per domain); their
            batch samplers are :class:`SeededBatchSampler`.
        multi_source: True when iterating yields ``[batch_domain0, batch_domain1, ...]``;
            False when it yields a single ``list[dict]`` batch.
        batch_size: images per batch (per domain) in this process.
        num_pids_per_domain: identities of each domain (single source: one entry, all
            combined global pids); what the trainer passes to ``build_model``.
    """

    def __init__(
        self,
        dataloaders: Sequence[DataLoader],
        *,
        multi_source: bool,
        batch_size: int,
        num_pids_per_domain: Sequence[int],
    ):
        if not multi_source and len(dataloaders) != 1:
            raise ValueError(f"A single-source loader needs 1 DataLoader, got {len(dataloaders)}")
        self.dataloaders = list(dataloaders)
        self.multi_source = multi_source
        self.batch_size = batch_size
        self.num_pids_per_domain = list(num_pids_per_domain)

    @property
    def num_dropped(self) -> int:
        """Samples dropped so far because their image was unreadable (SKIP_CORRUPT)."""
        return sum(dl.collate_fn.num_dropped for dl in self.dataloaders)

    def set_start_iter(self, start_iter: int) -> None:
        """Make the next iteration yield batch ``start_iter`` (for an exact ``--resume``)."""
        for dl in self.dataloaders:
            dl.batch_sampler.set_start_iter(start_iter)

    def __iter__(self) -> Iterator[Any]:
        if not self.multi_source:
            yield from self.dataloaders[0]
            return
        iterators = [iter(dl) for dl in self.dataloaders]
        while True:
            yield [next(it) for it in iterators]


def _train_batch_sampler(cfg, pids: Sequence[int], batch_size: int, seed: int) -> BatchSampler:
    name = cfg.DATALOADER.SAMPLER_TRAIN
    if name == "RandomIdentitySampler":
        sampler = RandomIdentitySampler(pids, batch_size, cfg.DATALOADER.NUM_INSTANCE, seed)
    elif name == "TrainingSampler":
        sampler = TrainingSampler(len(pids), shuffle=True, seed=seed)
    else:
        raise ValueError(
            f"Unknown cfg.DATALOADER.SAMPLER_TRAIN = {name!r}; "
            "use 'RandomIdentitySampler' or 'TrainingSampler'"
        )
    return BatchSampler(sampler, batch_size // comm.get_world_size(), drop_last=True)


ReIDTrainLoader = TrainLoader  # the name used before crops and scenes shared the loader


def build_reid_train_loader(cfg, mapper: Optional[Callable] = None) -> TrainLoader:
    """Infinite ReID training loader (P x K batches, one per domain for multi-source).

    Args:
        cfg: config. Used keys: ``DATASETS.TRAIN``, ``DATALOADER.{MULTI_SOURCE, SAMPLER_TRAIN,
            NUM_INSTANCE, NUM_WORKERS, SKIP_CORRUPT}``, ``SOLVER.IMS_PER_BATCH`` (global batch,
            per domain when multi-source), ``SEED``, ``INPUT.*``.
        mapper: record -> dict callable; default ``ReIDDatasetMapper.from_config(cfg, True)``.

    Returns:
        :class:`TrainLoader`. Iterating yields, forever, ``list[dict]`` batches
        (single source) or ``list[list[dict]]`` = ``[batch_domain0, batch_domain1, ...]``
        (``DATALOADER.MULTI_SOURCE``), each domain batch holding that domain's images only.

    Raises:
        ValueError: ``SOLVER.IMS_PER_BATCH`` not divisible by the world size, by K, or too few
            identities for P x K (message names the domain), or an invalid dataset.
    """
    world_size = comm.get_world_size()
    total_batch = cfg.SOLVER.IMS_PER_BATCH
    if total_batch % world_size != 0:
        raise ValueError(
            f"cfg.SOLVER.IMS_PER_BATCH ({total_batch}) must be divisible by the number of "
            f"processes ({world_size})"
        )
    if mapper is None:
        mapper = ReIDDatasetMapper.from_config(cfg, is_train=True)
    seed = _resolve_seed(cfg)
    records = get_reid_train_records(cfg)
    names = list(cfg.DATASETS.TRAIN)
    multi = bool(cfg.DATALOADER.MULTI_SOURCE)
    groups = _split_by_domain(records, len(names)) if multi else [records]
    group_names = names if multi else ["+".join(names)]
    loaders = []
    for i, (name, group) in enumerate(zip(group_names, groups)):
        pids = [int(r["pid"]) for r in group]
        try:
            batch_sampler = _train_batch_sampler(cfg, pids, total_batch, seed + i)
        except ValueError as e:
            raise ValueError(f"Training set '{name}': {e}") from e
        # Augmentation seeds differ across ranks and domains; index streams do not.
        loader_seed = seed + 1000 * (i + 1) + 1_000_003 * comm.get_rank()
        batch_sampler = SeededBatchSampler(batch_sampler, loader_seed)
        loaders.append(
            _make_loader(group, mapper, batch_sampler, cfg.DATALOADER.NUM_WORKERS, loader_seed)
        )
    num_pids = [len({r["pid"] for r in g}) for g in groups]
    logger.info(
        "ReID train loader: %s, %s, %d images per batch per process, identities %s",
        group_names,
        "one batch per domain" if multi else "single source",
        total_batch // world_size,
        num_pids,
    )
    return TrainLoader(
        loaders,
        multi_source=multi,
        batch_size=total_batch // world_size,
        num_pids_per_domain=num_pids,
    )


# ----------------------------------------------------------------------------- #
# Test / feature-extraction loaders
# ----------------------------------------------------------------------------- #
def _test_batch_size(cfg) -> int:
    return max(1, cfg.TEST.IMS_PER_BATCH // comm.get_world_size())


def build_reid_test_loader(
    cfg, dataset_name: str, mapper: Optional[Callable] = None
) -> Tuple[DataLoader, Dict[str, Any]]:
    """Loader over the query then gallery records of a ReID test set.

    Args:
        cfg: config (``TEST.IMS_PER_BATCH`` summed over processes, ``DATALOADER.NUM_WORKERS``,
            ``INPUT.SIZE_TEST``, ``DATALOADER.SKIP_CORRUPT``).
        dataset_name: a registered test set whose records carry ``"is_query"``.
        mapper: record -> dict callable; default ``ReIDDatasetMapper.from_config(cfg, False)``.

    Returns:
        ``(loader, info)``: ``loader`` yields ``list[dict]`` batches (each dict has
        ``"image"``, ``"is_query"``, ``"pid"``, ``"camid"``, ``"file_name"`` ...) covering
        all query records then all gallery records, in dataset order, each rank its
        contiguous share; ``info = {"dataset_name", "num_query", "num_gallery"}``.

    Raises:
        ValueError: a record lacks a required field, or the query or gallery set is empty;
            the message names the dataset.
    """
    from . import datasets  # noqa: F401  (lazy: importing it registers the built-in sets)

    records = DatasetCatalog.get(dataset_name)
    for i, r in enumerate(records):
        missing = [k for k in ("file_name", "pid", "camid", "is_query") if k not in r]
        if missing:
            raise ValueError(f"Record {i} of test set '{dataset_name}' lacks {missing}: {r}")
    query = [r for r in records if r["is_query"]]
    gallery = [r for r in records if not r["is_query"]]
    if not query or not gallery:
        raise ValueError(
            f"Test set '{dataset_name}' has {len(query)} query and {len(gallery)} gallery "
            "records; both must be non-empty"
        )
    if mapper is None:
        mapper = ReIDDatasetMapper.from_config(cfg, is_train=False)
    ordered = query + gallery
    batch_sampler = BatchSampler(InferenceSampler(len(ordered)), _test_batch_size(cfg), False)
    loader = _make_loader(ordered, mapper, batch_sampler, cfg.DATALOADER.NUM_WORKERS, 0)
    info = {"dataset_name": dataset_name, "num_query": len(query), "num_gallery": len(gallery)}
    return loader, info


def build_feature_extraction_loader(
    records: Sequence[Record],
    cfg,
    mapper: Optional[Callable] = None,
    *,
    batch_size: Optional[int] = None,
    distributed: bool = False,
) -> DataLoader:
    """Loader over ``records`` in order with evaluation transforms (e.g. memory initialisation).

    Args:
        records: record dicts (e.g. one domain's training records).
        cfg: config (``INPUT.SIZE_TEST``, ``DATALOADER.*``, ``TEST.IMS_PER_BATCH``).
        mapper: default ``ReIDDatasetMapper.from_config(cfg, is_train=False)``.
        batch_size: images per batch; default ``TEST.IMS_PER_BATCH`` (divided by the world
            size when ``distributed``).
        distributed: shard the records contiguously over ranks; False = every process sees
            all records.

    Returns:
        ``DataLoader`` yielding ``list[dict]`` batches, the records (plus "image") in order.
    """
    if len(records) == 0:
        raise ValueError("build_feature_extraction_loader: got no records")
    if mapper is None:
        mapper = ReIDDatasetMapper.from_config(cfg, is_train=False)
    if batch_size is None:
        batch_size = _test_batch_size(cfg) if distributed else cfg.TEST.IMS_PER_BATCH
    sampler = (
        InferenceSampler(len(records))
        if distributed
        else InferenceSampler(len(records), rank=0, world_size=1)
    )
    batch_sampler = BatchSampler(sampler, batch_size, drop_last=False)
    return _make_loader(records, mapper, batch_sampler, cfg.DATALOADER.NUM_WORKERS, 0)
