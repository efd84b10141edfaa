"""GMN's pair loss L_gmn: binary cross-entropy of M-Net logits on positive/negative pairs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PairBCELoss"]


class PairBCELoss(nn.Module):
    """Binary cross-entropy on sample pairs (label 1 = same identity).

    With ``balanced`` the loss is ``weight * 0.5 * (mean_pos + mean_neg)`` of the per-pair
    BCE (so the few positives of a P x K batch weigh as much as the many negatives); if one
    of the two sets is empty the mean of the other is used. Without it, ``weight`` times the
    plain mean over pairs. An empty pair set gives a zero connected to ``logits``.

    Args:
        weight: multiplier of the returned loss.
        balanced: positive/negative balancing described above.
    """

    def __init__(self, *, weight: float = 1.0, balanced: bool = True) -> None:
        super().__init__()
        self.weight = float(weight)
        self.balanced = bool(balanced)

    @classmethod
    def from_config(cls, cfg) -> "PairBCELoss":
        """Build from ``MODEL.GMN.LOSSES.BCE.{WEIGHT, BALANCED}``."""
        c = cfg.MODEL.GMN.LOSSES.BCE
        return cls(weight=c.WEIGHT, balanced=c.BALANCED)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """
        Args:
            logits: ``(M,)`` M-Net logits.
            labels: ``(M,)`` 0/1 targets.

        Returns:
            Scalar loss (``weight`` applied).
        """
        if logits.dim() != 1 or labels.shape != logits.shape:
            raise ValueError(
                f"PairBCELoss: logits and labels must both be (M,), got {tuple(logits.shape)} "
                f"and {tuple(labels.shape)}"
            )
        if logits.numel() == 0:
            return logits.sum() * 0.0
        labels = labels.to(logits.dtype)
        per_pair = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
        if not self.balanced:
            return self.weight * per_pair.mean()
        pos = labels > 0.5
        parts = [per_pair[m].mean() for m in (pos, ~pos) if bool(m.any())]
        return self.weight * torch.stack(parts).mean()

    def extra_repr(self) -> str:
        return f"weight={self.weight}, balanced={self.balanced}"
