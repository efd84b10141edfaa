"""Identity classification loss: cross-entropy with label smoothing."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CrossEntropyLoss"]


class CrossEntropyLoss(nn.Module):
    """Cross-entropy with label smoothing (Szegedy et al. 2016), averaged over the batch.

    The target distribution of a sample with label ``y`` over ``K`` classes is
    ``q = (1 - epsilon) * onehot(y) + epsilon / K`` and the loss is
    ``weight * mean_i( -sum_k q_ik * log_softmax(logits_i)_k )``. ``epsilon = 0`` is plain
    cross-entropy (identical to :func:`torch.nn.functional.cross_entropy`).
    """

    def __init__(self, *, epsilon: float = 0.1, weight: float = 1.0):
        """
        Args:
            epsilon: label-smoothing factor in ``[0, 1)``.
            weight: multiplier of the returned loss.

        Raises:
            ValueError: if ``epsilon`` is outside ``[0, 1)``.
        """
        super().__init__()
        if not 0.0 <= float(epsilon) < 1.0:
            raise ValueError(
                f"CrossEntropyLoss: epsilon (MODEL.LOSSES.CE.EPSILON) must be in [0, 1), "
                f"got {epsilon}"
            )
        self.epsilon = float(epsilon)
        self.weight = float(weight)

    @classmethod
    def from_config(cls, cfg) -> "CrossEntropyLoss":
        """Build from ``MODEL.LOSSES.CE.{EPSILON, WEIGHT}``."""
        return cls(epsilon=cfg.MODEL.LOSSES.CE.EPSILON, weight=cfg.MODEL.LOSSES.CE.WEIGHT)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """
        Args:
            logits: ``(N, K)`` unnormalised class scores.
            targets: ``(N,)`` integer labels in ``[0, K)``.

        Returns:
            Scalar loss (``weight`` applied).
        """
        if logits.dim() != 2:
            raise ValueError(
                f"CrossEntropyLoss: logits must be (N, K), got shape {tuple(logits.shape)}"
            )
        if targets.shape != logits.shape[:1]:
            raise ValueError(
                f"CrossEntropyLoss: targets must have shape ({logits.shape[0]},), "
                f"got {tuple(targets.shape)}"
            )
        num_classes = logits.shape[1]
        if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= num_classes):
            raise ValueError(
                f"CrossEntropyLoss: targets must be in [0, {num_classes}), got values in "
                f"[{int(targets.min())}, {int(targets.max())}]; check MODEL.HEADS.NUM_CLASSES "
                "against the training set's number of identities"
            )
        log_probs = F.log_softmax(logits, dim=1)
        nll = -log_probs.gather(1, targets.long().unsqueeze(1)).squeeze(1)
        if self.epsilon > 0:
            uniform = -log_probs.mean(dim=1)
            per_sample = (1.0 - self.epsilon) * nll + self.epsilon * uniform
        else:
            per_sample = nll
        return self.weight * per_sample.mean()

    def extra_repr(self) -> str:
        return f"epsilon={self.epsilon}, weight={self.weight}"
