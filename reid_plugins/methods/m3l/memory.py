"""M3L's memories with a choice of momentum-update rule (Eq. 2 vs the authors' code).

:class:`M3LMemoryLoss` is the shared :class:`~reid_plugins.modeling.losses.MemoryLoss` (same
buffers, loss and initialisation) whose :meth:`~M3LMemoryLoss.update` follows
``MODEL.M3L.MEMORY_UPDATE_RULE``:

* ``"sequential"`` (default, the authors' released code): the batch is applied sample by
  sample in batch order, ``M[y] <- normalize(m * M[y] + (1 - m) * f)`` for each
  L2-normalised feature ``f`` of identity ``y``. An identity with ``n`` images in the batch
  is thus updated ``n`` times, its last image weighing most.
* ``"mean"`` (the paper's Eq. 2): one update per identity with the mean of its
  L2-normalised features, ``M[k] <- normalize(m * M[k] + (1 - m) * mean_k)``.

The sequential rule is computed exactly but without a Python loop over samples: identities
are independent, so the ``r``-th occurrences of all identities are applied together, in
``max_k n_k`` vectorised steps (4 for P x K = 16 x 4).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from reid_plugins.modeling.losses import MemoryLoss
from reid_plugins.modeling.losses.memory import all_gather_cat

__all__ = ["M3LMemoryLoss", "MEMORY_UPDATE_RULES", "occurrence_rank", "sequential_update_"]

MEMORY_UPDATE_RULES = ("sequential", "mean")


def occurrence_rank(ids: torch.Tensor) -> torch.Tensor:
    """``r[j]`` = how many earlier entries of ``ids`` equal ``ids[j]`` (0 for the first)."""
    n = ids.numel()
    if n == 0:
        return ids.new_zeros(0)
    order = torch.argsort(ids, stable=True)  # equal ids stay in batch order
    sorted_ids = ids[order]
    pos = torch.arange(n, device=ids.device)
    starts = torch.ones(n, dtype=torch.bool, device=ids.device)
    starts[1:] = sorted_ids[1:] != sorted_ids[:-1]
    first = torch.cummax(torch.where(starts, pos, torch.zeros_like(pos)), 0).values
    rank = torch.empty_like(pos)
    rank[order] = pos - first
    return rank


@torch.no_grad()
def sequential_update_(
    mem: torch.Tensor, feats: torch.Tensor, ids: torch.Tensor, momentum: float
) -> None:
    """In place: for each ``(f, y)`` in order, ``mem[y] <- normalize(m mem[y] + (1-m) f)``."""
    rank = occurrence_rank(ids)
    for r in range(int(rank.max()) + 1 if rank.numel() else 0):
        sel = rank == r
        rows = ids[sel]  # distinct identities
        new = momentum * mem[rows] + (1.0 - momentum) * feats[sel]
        mem.index_copy_(0, rows, F.normalize(new, dim=1))


class M3LMemoryLoss(MemoryLoss):
    """:class:`MemoryLoss` whose update follows ``update_rule`` (see the module docstring).

    Args:
        num_pids_per_domain, feat_dim, momentum, temperature, weight: see
            :class:`~reid_plugins.modeling.losses.MemoryLoss`.
        update_rule: ``"sequential"`` (authors' code) or ``"mean"`` (Eq. 2).
    """

    def __init__(
        self,
        *,
        num_pids_per_domain: Sequence[int],
        feat_dim: int,
        momentum: float = 0.2,
        temperature: float = 0.05,
        weight: float = 1.0,
        update_rule: str = "sequential",
    ) -> None:
        super().__init__(
            num_pids_per_domain=num_pids_per_domain,
            feat_dim=feat_dim,
            momentum=momentum,
            temperature=temperature,
            weight=weight,
        )
        if update_rule not in MEMORY_UPDATE_RULES:
            raise ValueError(
                f"MODEL.M3L.MEMORY_UPDATE_RULE must be one of {MEMORY_UPDATE_RULES}, "
                f"got {update_rule!r}"
            )
        self.update_rule = update_rule

    @classmethod
    def from_config(cls, cfg, *, num_pids_per_domain: Sequence[int], feat_dim: int):
        """``MODEL.LOSSES.MEMORY.{MOMENTUM, TEMP, WEIGHT}`` and ``MODEL.M3L.MEMORY_UPDATE_RULE``."""
        return super().from_config(
            cfg,
            num_pids_per_domain=num_pids_per_domain,
            feat_dim=feat_dim,
            update_rule=cfg.MODEL.M3L.MEMORY_UPDATE_RULE,
        )

    @torch.no_grad()
    def update(self, features: torch.Tensor, pids: torch.Tensor, domain: int) -> None:
        """Momentum update of the batch's identities (features gathered from all processes,
        rank order, as one batch); ``"mean"`` = :meth:`MemoryLoss.update`."""
        if self.update_rule == "mean":
            return super().update(features, pids, domain)
        domain = self._check_domain(domain)
        self._check_inputs(features, pids, domain)
        self._require_initialized(domain, "update")
        mem = self.get_memory(domain)
        feats = F.normalize(features.detach().to(mem), dim=1)
        feats, pids = all_gather_cat(feats, pids.to(mem.device).long())
        sequential_update_(mem, feats, pids, self.momentum)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", update_rule={self.update_rule}"
