"""Online Instance Matching (OIM) loss (Xiao et al., "Joint Detection and Identification
Feature Learning for Person Search", CVPR 2017), used by TDN's "OIM*" baseline.

A labelled lookup table (LUT, one L2-normalised row per labelled identity) and a circular
queue of L2-normalised features of unlabelled persons act as a non-parametric classifier:
``logits = (1 / temperature) * normalize(x) @ [LUT; queue]^T``, and the loss is the
cross-entropy of the *labelled* samples over these logits. Both tables are buffers, saved in
checkpoints, and never receive gradients.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from reid_plugins.modeling.losses.memory import all_gather_cat

__all__ = ["OIMLoss", "UNLABELED_PID"]

#: pid of a person box without identity (see the person-search record format).
UNLABELED_PID = -1


class OIMLoss(nn.Module):
    """OIM loss with a labelled lookup table and an unlabelled circular queue.

    Buffers (all in ``state_dict``): ``lut`` (``num_pids x feat_dim``, starts at zero),
    ``queue`` (``queue_size x feat_dim``, starts at zero), ``queue_ptr`` (next slot to write)
    and ``queue_count`` (number of filled slots, saturating at ``queue_size``). Only filled
    queue slots take part in the softmax.

    **When the tables are updated:** in ``forward`` when the module is in training mode,
    *after* the loss has been computed from a detached snapshot of the tables (so the in-place
    update cannot break autograd and does not influence the current loss). In eval mode
    ``forward`` never updates; :meth:`update` can also be called explicitly.

    Update rules (features L2-normalised first; features from all processes are gathered
    first so that tables stay equal across processes):

    * labelled sample ``x`` with pid ``t``, applied sequentially in batch order as in the
      paper: ``v_t <- gamma * v_t + (1 - gamma) * x``, then ``v_t <- v_t / ||v_t||``;
    * unlabelled samples (pid == ``UNLABELED_PID`` = -1) are written into the queue at
      ``queue_ptr`` in batch order, wrapping around and overwriting the oldest entries
      (if a batch holds more than ``queue_size`` of them, only the last ``queue_size`` stay).

    Pids must be in ``[-1, num_pids)``; callers drop background proposals beforehand.
    """

    def __init__(
        self,
        *,
        num_pids: int,
        feat_dim: int,
        queue_size: int = 5000,
        momentum: float = 0.5,
        temperature: float = 1.0 / 30,
        weight: float = 1.0,
    ):
        """
        Args:
            num_pids: LUT size = number of labelled training identities (pids ``0..L-1``).
            feat_dim: feature dimension.
            queue_size: number of unlabelled features kept (0 disables the queue).
            momentum: ``gamma`` of the LUT update, in ``[0, 1]``.
            temperature: softmax temperature; logits are multiplied by ``1 / temperature``.
            weight: multiplier of the returned loss.

        Raises:
            ValueError: on non-positive ``num_pids``/``feat_dim``, negative ``queue_size``,
                ``momentum`` outside ``[0, 1]`` or non-positive ``temperature``.
        """
        super().__init__()
        if int(num_pids) <= 0:
            raise ValueError(
                f"OIMLoss: num_pids (MODEL.LOSSES.OIM.NUM_PIDS) must be positive, got {num_pids}"
            )
        if int(feat_dim) <= 0:
            raise ValueError(f"OIMLoss: feat_dim must be positive, got {feat_dim}")
        if int(queue_size) < 0:
            raise ValueError(
                f"OIMLoss: queue_size (MODEL.LOSSES.OIM.QUEUE_SIZE) must be >= 0, got {queue_size}"
            )
        if not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(
                f"OIMLoss: momentum (MODEL.LOSSES.OIM.MOMENTUM) must be in [0, 1], got {momentum}"
            )
        if float(temperature) <= 0:
            raise ValueError(
                f"OIMLoss: temperature (MODEL.LOSSES.OIM.TEMP) must be > 0, got {temperature}"
            )
        self.num_pids = int(num_pids)
        self.feat_dim = int(feat_dim)
        self.queue_size = int(queue_size)
        self.momentum = float(momentum)
        self.temperature = float(temperature)
        self.weight = float(weight)
        self.register_buffer("lut", torch.zeros(self.num_pids, self.feat_dim))
        self.register_buffer("queue", torch.zeros(self.queue_size, self.feat_dim))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("queue_count", torch.zeros((), dtype=torch.long))

    @classmethod
    def from_config(cls, cfg, *, feat_dim: int, num_pids: Optional[int] = None) -> "OIMLoss":
        """Build from ``MODEL.LOSSES.OIM.{NUM_PIDS, QUEUE_SIZE, MOMENTUM, TEMP, WEIGHT}``.

        Args:
            cfg: config.
            feat_dim: the re-ID feature dimension (not a config key).
            num_pids: number of labelled identities of the training set; used when
                ``MODEL.LOSSES.OIM.NUM_PIDS`` is 0 (a positive config value wins).
        """
        c = cfg.MODEL.LOSSES.OIM
        size = int(c.NUM_PIDS) if int(c.NUM_PIDS) > 0 else num_pids
        if size is None or int(size) <= 0:
            raise ValueError(
                "OIMLoss.from_config: MODEL.LOSSES.OIM.NUM_PIDS is 0 (= from the training set) "
                "and no num_pids was given; pass num_pids=MetadataCatalog.get(<train set>)"
                ".num_pids or set MODEL.LOSSES.OIM.NUM_PIDS"
            )
        return cls(
            num_pids=size,
            feat_dim=feat_dim,
            queue_size=c.QUEUE_SIZE,
            momentum=c.MOMENTUM,
            temperature=c.TEMP,
            weight=c.WEIGHT,
        )

    def _check_inputs(self, features: torch.Tensor, pids: torch.Tensor) -> None:
        if features.dim() != 2 or features.shape[1] != self.feat_dim:
            raise ValueError(
                f"OIMLoss: features must be (N, {self.feat_dim}), got {tuple(features.shape)}"
            )
        if pids.shape != features.shape[:1]:
            raise ValueError(
                f"OIMLoss: pids must have shape ({features.shape[0]},), got {tuple(pids.shape)}"
            )
        if pids.numel() and (int(pids.min()) < UNLABELED_PID or int(pids.max()) >= self.num_pids):
            raise ValueError(
                f"OIMLoss: pids must be in [{UNLABELED_PID}, {self.num_pids}) (labelled ids or "
                f"UNLABELED_PID={UNLABELED_PID}), got values in [{int(pids.min())}, "
                f"{int(pids.max())}]; drop background proposals and check "
                "MODEL.LOSSES.OIM.NUM_PIDS"
            )

    def table(self) -> torch.Tensor:
        """Detached copy of ``[LUT; filled queue slots]``, the classifier of the logits."""
        count = int(self.queue_count)
        return torch.cat([self.lut, self.queue[:count]], dim=0).detach().clone()

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """``(N, num_pids + filled queue)`` scaled cosine logits (no table update)."""
        feats = F.normalize(features.float(), dim=1)
        return feats @ self.table().t() / self.temperature

    def forward(self, features: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
        """
        Args:
            features: ``(N, feat_dim)`` re-ID features of person boxes.
            pids: ``(N,)`` labelled pids in ``[0, num_pids)`` or ``UNLABELED_PID`` (-1).

        Returns:
            ``weight *`` mean cross-entropy over the labelled samples; a zero still connected
            to ``features`` when the batch has no labelled sample. In training mode the tables
            are then updated with this batch (see the class docstring).
        """
        self._check_inputs(features, pids)
        pids = pids.to(features.device).long()
        labelled = pids >= 0
        if bool(labelled.any()):
            logits = self.logits(features[labelled])
            loss = F.cross_entropy(logits, pids[labelled])
        else:
            loss = features.sum() * 0.0
        if self.training:
            self.update(features, pids)
        return self.weight * loss

    @torch.no_grad()
    def update(self, features: torch.Tensor, pids: torch.Tensor) -> None:
        """Update LUT rows of labelled samples and push unlabelled samples into the queue."""
        self._check_inputs(features, pids)
        feats = F.normalize(features.detach().to(self.lut), dim=1)
        pids = pids.to(self.lut.device).long()
        feats, pids = all_gather_cat(feats, pids)

        labelled = pids >= 0
        for x, t in zip(feats[labelled], pids[labelled].tolist()):
            row = self.momentum * self.lut[t] + (1.0 - self.momentum) * x
            self.lut[t] = F.normalize(row, dim=0)

        unlabelled = feats[pids == UNLABELED_PID]
        n = unlabelled.shape[0]
        if self.queue_size == 0 or n == 0:
            return
        if n > self.queue_size:
            # Writing them all would wrap over itself; only the newest queue_size survive.
            ptr = (int(self.queue_ptr) + n - self.queue_size) % self.queue_size
            unlabelled, n = unlabelled[-self.queue_size :], self.queue_size
        else:
            ptr = int(self.queue_ptr)
        slots = (ptr + torch.arange(n, device=self.queue.device)) % self.queue_size
        self.queue.index_copy_(0, slots, unlabelled)
        self.queue_ptr.fill_((ptr + n) % self.queue_size)
        self.queue_count.fill_(min(int(self.queue_count) + n, self.queue_size))

    def extra_repr(self) -> str:
        return (
            f"num_pids={self.num_pids}, feat_dim={self.feat_dim}, queue_size={self.queue_size}, "
            f"momentum={self.momentum}, temperature={self.temperature}, weight={self.weight}"
        )
