"""Per-domain identity-centroid memories and the memory-based identification loss (M3L).

Equations refer to Zhao et al., "Learning to Generalize Unseen Domains via Memory-based
Multi-Source Meta-Learning for Person Re-Identification", CVPR 2021:

* Eq. 2 (update): ``M[k] <- m * M[k] + (1 - m) * mean_{x in B_k} f(x)``, then L2-normalise.
* Eq. 3 (loss): cross-entropy over the logits ``M^T f / tau``.

Memories are buffers (saved in checkpoints with the model's ``state_dict``), are never
trained by an optimiser and never receive gradients.
"""

from __future__ import annotations

from typing import Callable, Iterable, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from reid_plugins.utils import comm

__all__ = ["MemoryBank", "MemoryLoss", "extract_and_initialize", "all_gather_cat"]


def all_gather_cat(*tensors: torch.Tensor) -> List[torch.Tensor]:
    """Concatenate each tensor over all processes (rank order); identity on one process.

    Used so that every process applies the same momentum updates and memories stay equal
    across processes. Tensors travel through CPU (pickled) and come back on their device.
    """
    if comm.get_world_size() == 1:
        return list(tensors)
    gathered = comm.all_gather([t.detach().cpu() for t in tensors])
    return [
        torch.cat([per_rank[i] for per_rank in gathered], dim=0).to(t.device)
        for i, t in enumerate(tensors)
    ]


class MemoryBank(nn.Module):
    """One memory of L2-normalised identity centroids per source domain.

    Buffers (all in ``state_dict``): ``memory_{i}`` (``n_i x feat_dim``, float32) and
    ``initialized_{i}`` (bool scalar) for every domain ``i``. ``forward`` is :meth:`loss`.

    Order of operations, everywhere: each input feature is L2-normalised first, then features
    are averaged per identity, then (update only) mixed with the old centroid by momentum,
    and finally every touched row is L2-normalised again.
    """

    def __init__(
        self,
        *,
        num_pids_per_domain: Sequence[int],
        feat_dim: int,
        momentum: float = 0.2,
        temperature: float = 0.05,
    ):
        """
        Args:
            num_pids_per_domain: ``n_i``, number of identities of each source domain (pids of
                domain ``i`` are its per-domain relabelled pids, ``0..n_i-1``).
            feat_dim: feature dimension ``d``.
            momentum: ``m`` in Eq. 2, in ``[0, 1]`` (weight of the old centroid).
            temperature: ``tau`` in Eq. 3, ``> 0``.

        Raises:
            ValueError: on an empty domain list, a non-positive size, momentum outside
                ``[0, 1]`` or a non-positive temperature.
        """
        super().__init__()
        sizes = [int(n) for n in num_pids_per_domain]
        if not sizes or any(n <= 0 for n in sizes):
            raise ValueError(
                "MemoryBank: num_pids_per_domain must be a non-empty list of positive "
                f"identity counts (one per DATASETS.TRAIN entry), got {list(num_pids_per_domain)}"
            )
        if int(feat_dim) <= 0:
            raise ValueError(f"MemoryBank: feat_dim must be positive, got {feat_dim}")
        if not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(
                f"MemoryBank: momentum (MODEL.LOSSES.MEMORY.MOMENTUM) must be in [0, 1], "
                f"got {momentum}"
            )
        if float(temperature) <= 0:
            raise ValueError(
                f"MemoryBank: temperature (MODEL.LOSSES.MEMORY.TEMP) must be > 0, "
                f"got {temperature}"
            )
        self.num_pids_per_domain = sizes
        self.feat_dim = int(feat_dim)
        self.momentum = float(momentum)
        self.temperature = float(temperature)
        for i, n in enumerate(sizes):
            self.register_buffer(f"memory_{i}", torch.zeros(n, self.feat_dim))
            self.register_buffer(f"initialized_{i}", torch.tensor(False))

    @classmethod
    def from_config(cls, cfg, *, num_pids_per_domain: Sequence[int], feat_dim: int):
        """Build from ``MODEL.LOSSES.MEMORY.{MOMENTUM, TEMP}``.

        ``num_pids_per_domain`` (from the training sets' metadata) and ``feat_dim`` (the
        head's output dimension) are not config keys and must be given.
        """
        c = cfg.MODEL.LOSSES.MEMORY
        return cls(
            num_pids_per_domain=num_pids_per_domain,
            feat_dim=feat_dim,
            momentum=c.MOMENTUM,
            temperature=c.TEMP,
        )

    # ------------------------------------------------------------------ accessors
    @property
    def num_domains(self) -> int:
        return len(self.num_pids_per_domain)

    def _check_domain(self, domain: int) -> int:
        domain = int(domain)
        if not 0 <= domain < self.num_domains:
            raise ValueError(
                f"MemoryBank: domain {domain} out of range; there are {self.num_domains} "
                "domains (one per DATASETS.TRAIN entry)"
            )
        return domain

    def get_memory(self, domain: int) -> torch.Tensor:
        """The ``n_i x d`` memory buffer of ``domain`` (the live buffer, not a copy)."""
        return getattr(self, f"memory_{self._check_domain(domain)}")

    def is_initialized(self, domain: int) -> bool:
        return bool(getattr(self, f"initialized_{self._check_domain(domain)}"))

    def _check_inputs(self, features: torch.Tensor, pids: torch.Tensor, domain: int) -> None:
        if features.dim() != 2 or features.shape[1] != self.feat_dim:
            raise ValueError(
                f"MemoryBank: features must be (N, {self.feat_dim}), got {tuple(features.shape)}"
            )
        if pids.shape != features.shape[:1]:
            raise ValueError(
                f"MemoryBank: pids must have shape ({features.shape[0]},), got {tuple(pids.shape)}"
            )
        n = self.num_pids_per_domain[domain]
        if pids.numel() and (int(pids.min()) < 0 or int(pids.max()) >= n):
            raise ValueError(
                f"MemoryBank: pids of domain {domain} must be in [0, {n}) (per-domain "
                f"'domain_pid'), got values in [{int(pids.min())}, {int(pids.max())}]"
            )

    def _require_initialized(self, domain: int, what: str) -> None:
        if not self.is_initialized(domain):
            raise RuntimeError(
                f"MemoryBank.{what}: memory of domain {domain} is not initialised; call "
                "initialize() or extract_and_initialize() before training"
            )

    # ------------------------------------------------------------------ initialisation
    @torch.no_grad()
    def set_from_sums(self, domain: int, sums: torch.Tensor, counts: torch.Tensor) -> None:
        """Set ``memory_i = normalize(sums / counts)`` row-wise and mark it initialised.

        ``sums`` are per-identity sums of L2-normalised features (``n_i x d``), ``counts``
        the number of features per identity (``n_i``).

        Raises:
            ValueError: if an identity has no feature (lists the first missing pids).
        """
        domain = self._check_domain(domain)
        mem = self.get_memory(domain)
        if sums.shape != mem.shape or counts.shape != mem.shape[:1]:
            raise ValueError(
                f"MemoryBank: domain {domain} expects sums {tuple(mem.shape)} and counts "
                f"({mem.shape[0]},), got {tuple(sums.shape)} and {tuple(counts.shape)}"
            )
        missing = (counts == 0).nonzero().flatten()
        if missing.numel():
            shown = missing[:10].tolist()
            raise ValueError(
                f"MemoryBank: cannot initialise memory of domain {domain}: {missing.numel()} "
                f"of {mem.shape[0]} identities have no feature (pids {shown}"
                f"{' ...' if missing.numel() > 10 else ''}); every training identity needs "
                "at least one image"
            )
        means = sums.to(mem) / counts.to(mem).unsqueeze(1)
        mem.copy_(F.normalize(means, dim=1))
        getattr(self, f"initialized_{domain}").fill_(True)

    @torch.no_grad()
    def initialize(self, domain: int, features: torch.Tensor, pids: torch.Tensor) -> None:
        """Initialise ``memory_domain`` with per-identity means of the given features.

        Each feature is L2-normalised, features are averaged per identity, and the means are
        L2-normalised. Features are gathered from all processes first.

        Args:
            domain: domain index.
            features: ``(N, d)`` features of (all) training images of the domain.
            pids: ``(N,)`` per-domain pids.

        Raises:
            ValueError: if some identity of the domain has no feature.
        """
        domain = self._check_domain(domain)
        self._check_inputs(features, pids, domain)
        mem = self.get_memory(domain)
        feats = F.normalize(features.detach().to(mem), dim=1)
        pids = pids.to(mem.device).long()
        feats, pids = all_gather_cat(feats, pids)
        sums = torch.zeros_like(mem).index_add_(0, pids, feats)
        counts = torch.bincount(pids, minlength=mem.shape[0])
        self.set_from_sums(domain, sums, counts)

    # ------------------------------------------------------------------ loss / update
    def loss(self, features: torch.Tensor, pids: torch.Tensor, domain: int) -> torch.Tensor:
        """Memory-based identification loss (Eq. 3), mean over the batch.

        ``-log softmax(M^T normalize(f) / tau)[pid]``. The memory enters as a detached copy,
        so gradients reach ``features`` only, and a later in-place :meth:`update` cannot
        invalidate the autograd graph.
        """
        domain = self._check_domain(domain)
        self._check_inputs(features, pids, domain)
        self._require_initialized(domain, "loss")
        mem = self.get_memory(domain).detach().clone()
        feats = F.normalize(features.float(), dim=1)
        logits = feats @ mem.t() / self.temperature
        return F.cross_entropy(logits, pids.to(features.device).long())

    def forward(self, features: torch.Tensor, pids: torch.Tensor, domain: int) -> torch.Tensor:
        """Same as :meth:`loss`."""
        return self.loss(features, pids, domain)

    @torch.no_grad()
    def update(self, features: torch.Tensor, pids: torch.Tensor, domain: int) -> None:
        """Momentum update of the centroids of the identities in the batch (Eq. 2).

        For every identity ``k`` present: ``M[k] <- m * M[k] + (1 - m) * mean_k`` where
        ``mean_k`` is the mean of the L2-normalised features of ``k``; then ``M[k]`` is
        L2-normalised. Features are gathered from all processes first. Other rows are
        unchanged. Call after the optimiser step (M3L).
        """
        domain = self._check_domain(domain)
        self._check_inputs(features, pids, domain)
        self._require_initialized(domain, "update")
        mem = self.get_memory(domain)
        feats = F.normalize(features.detach().to(mem), dim=1)
        pids = pids.to(mem.device).long()
        feats, pids = all_gather_cat(feats, pids)
        uniq, inverse = torch.unique(pids, return_inverse=True)
        sums = torch.zeros(uniq.numel(), mem.shape[1], dtype=mem.dtype, device=mem.device)
        sums.index_add_(0, inverse, feats)
        counts = torch.bincount(inverse, minlength=uniq.numel()).to(mem).unsqueeze(1)
        new_rows = self.momentum * mem[uniq] + (1.0 - self.momentum) * (sums / counts)
        mem.index_copy_(0, uniq, F.normalize(new_rows, dim=1))

    def extra_repr(self) -> str:
        return (
            f"num_pids_per_domain={self.num_pids_per_domain}, feat_dim={self.feat_dim}, "
            f"momentum={self.momentum}, temperature={self.temperature}"
        )


class MemoryLoss(MemoryBank):
    """:class:`MemoryBank` whose ``forward`` returns ``weight * loss`` (the configured loss).

    Same buffers, accessors, :meth:`initialize` and :meth:`update` as :class:`MemoryBank`.
    """

    def __init__(
        self,
        *,
        num_pids_per_domain: Sequence[int],
        feat_dim: int,
        momentum: float = 0.2,
        temperature: float = 0.05,
        weight: float = 1.0,
    ):
        """
        Args:
            num_pids_per_domain, feat_dim, momentum, temperature: see :class:`MemoryBank`.
            weight: multiplier of the loss returned by ``forward``.
        """
        super().__init__(
            num_pids_per_domain=num_pids_per_domain,
            feat_dim=feat_dim,
            momentum=momentum,
            temperature=temperature,
        )
        self.weight = float(weight)

    @classmethod
    def from_config(cls, cfg, *, num_pids_per_domain: Sequence[int], feat_dim: int, **kwargs):
        """Build from ``MODEL.LOSSES.MEMORY.{MOMENTUM, TEMP, WEIGHT}``; ``kwargs`` go to the
        constructor unchanged (what a subclass adds)."""
        c = cfg.MODEL.LOSSES.MEMORY
        return cls(
            num_pids_per_domain=num_pids_per_domain,
            feat_dim=feat_dim,
            momentum=c.MOMENTUM,
            temperature=c.TEMP,
            weight=c.WEIGHT,
            **kwargs,
        )

    def forward(self, features: torch.Tensor, pids: torch.Tensor, domain: int) -> torch.Tensor:
        return self.weight * self.loss(features, pids, domain)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", weight={self.weight}"


def _batch_pids(batch, pid_key: Optional[str]) -> torch.Tensor:
    if not isinstance(batch, (list, tuple)) or not batch or not isinstance(batch[0], dict):
        raise TypeError(
            "extract_and_initialize: each loader batch must be a non-empty list of record "
            f"dicts (the ReID loader format), got {type(batch).__name__} of length "
            f"{len(batch) if hasattr(batch, '__len__') else '?'}"
        )
    key = pid_key or ("domain_pid" if "domain_pid" in batch[0] else "pid")
    try:
        return torch.as_tensor([int(r[key]) for r in batch], dtype=torch.long)
    except KeyError:
        raise KeyError(
            f"extract_and_initialize: a record has no '{key}' key (record keys: "
            f"{sorted(batch[0].keys())})"
        ) from None


@torch.no_grad()
def extract_and_initialize(
    memory: MemoryBank,
    feature_fn: Callable[[list], torch.Tensor],
    data_loaders: Sequence[Iterable],
    *,
    pid_key: Optional[str] = None,
) -> None:
    """Initialise every domain's memory by extracting features of its training images.

    Per-identity sums are accumulated batch by batch (memory use independent of the data
    set size), summed over processes, then :meth:`MemoryBank.set_from_sums` is applied.
    Works whether each process sees the whole data set or a shard of it (duplicated images
    do not change per-identity means when every image is duplicated equally).

    Args:
        memory: the bank to initialise.
        feature_fn: maps one loader batch (``list[dict]``) to an ``(N, d)`` feature tensor;
            called under ``torch.no_grad()``. The caller chooses the model mode (e.g.
            ``model.eval()`` and restore afterwards).
        data_loaders: one iterable per domain, index = domain (ordered like DATASETS.TRAIN);
            each yields batches of record dicts that are not infinite.
        pid_key: record key holding the per-domain pid; default ``"domain_pid"`` when the
            records have it, else ``"pid"`` (single-source training).
    """
    if len(data_loaders) != memory.num_domains:
        raise ValueError(
            f"extract_and_initialize: got {len(data_loaders)} data loaders for "
            f"{memory.num_domains} memory domains"
        )
    for domain, loader in enumerate(data_loaders):
        mem = memory.get_memory(domain)
        sums = torch.zeros_like(mem)
        counts = torch.zeros(mem.shape[0], dtype=torch.long, device=mem.device)
        total = len(loader) if hasattr(loader, "__len__") else None
        for batch in tqdm(
            loader,
            total=total,
            desc=f"Initialising memory of domain {domain}",
            disable=not comm.is_main_process(),
        ):
            feats = feature_fn(batch)
            pids = _batch_pids(batch, pid_key).to(mem.device)
            memory._check_inputs(feats, pids, domain)
            sums.index_add_(0, pids, F.normalize(feats.detach().to(mem), dim=1))
            counts += torch.bincount(pids, minlength=mem.shape[0])
        if comm.get_world_size() > 1:
            per_rank = comm.all_gather((sums.cpu(), counts.cpu()))
            sums = sum(s for s, _ in per_rank).to(mem.device)
            counts = sum(c for _, c in per_rank).to(mem.device)
        memory.set_from_sums(domain, sums, counts)
