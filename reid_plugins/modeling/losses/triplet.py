"""Batch-hard triplet loss (Hermans et al. 2017) with Euclidean distance."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TripletLoss", "euclidean_dist"]

# Squared distances are clamped to this before the square root: keeps sqrt's gradient finite
# at zero distance (identical features, the diagonal) and absorbs negative rounding errors.
_MIN_SQ_DIST = 1e-12


def euclidean_dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pairwise Euclidean distances with a gradient that is finite everywhere.

    Args:
        x: ``(M, D)``.
        y: ``(N, D)``.

    Returns:
        ``(M, N)`` tensor ``sqrt(max(||x_i - y_j||^2, 1e-12))``.
    """
    sq = (
        x.pow(2).sum(dim=1, keepdim=True)
        + y.pow(2).sum(dim=1, keepdim=True).t()
        - 2.0 * (x @ y.t())
    )
    return sq.clamp(min=_MIN_SQ_DIST).sqrt()


class TripletLoss(nn.Module):
    """Batch-hard triplet loss.

    For every anchor ``a``: ``d_p`` = largest distance to another sample of the same identity
    (hardest positive), ``d_n`` = smallest distance to a sample of another identity (hardest
    negative). Per-anchor loss: ``max(d_p - d_n + margin, 0)`` when ``margin > 0``, otherwise
    the soft margin ``log(1 + exp(d_p - d_n))``. The loss is ``weight`` times the mean over
    anchors that have at least one positive *and* one negative in the batch; anchors lacking
    either are excluded. If no anchor qualifies the result is a zero that is still connected to
    ``features`` (so ``backward()`` works and yields zero gradients).
    """

    def __init__(self, *, margin: float = 0.3, norm_feat: bool = False, weight: float = 1.0):
        """
        Args:
            margin: hinge margin; ``<= 0`` selects the soft-margin formulation.
            norm_feat: L2-normalise features before computing distances.
            weight: multiplier of the returned loss.
        """
        super().__init__()
        self.margin = float(margin)
        self.norm_feat = bool(norm_feat)
        self.weight = float(weight)

    @classmethod
    def from_config(cls, cfg) -> "TripletLoss":
        """Build from ``MODEL.LOSSES.TRIPLET.{MARGIN, NORM_FEAT, WEIGHT}``."""
        c = cfg.MODEL.LOSSES.TRIPLET
        return cls(margin=c.MARGIN, norm_feat=c.NORM_FEAT, weight=c.WEIGHT)

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """
        Args:
            features: ``(N, D)`` embeddings (the pre-BN feature in the shared ReID model).
            targets: ``(N,)`` identity labels.

        Returns:
            Scalar loss (``weight`` applied).
        """
        if features.dim() != 2:
            raise ValueError(
                f"TripletLoss: features must be (N, D), got shape {tuple(features.shape)}"
            )
        if targets.shape != features.shape[:1]:
            raise ValueError(
                f"TripletLoss: targets must have shape ({features.shape[0]},), "
                f"got {tuple(targets.shape)}"
            )
        feats = F.normalize(features, dim=1) if self.norm_feat else features
        dist = euclidean_dist(feats, feats)

        n = features.shape[0]
        same = targets.view(n, 1) == targets.view(1, n)
        eye = torch.eye(n, dtype=torch.bool, device=features.device)
        pos_mask = same & ~eye
        neg_mask = ~same

        valid = pos_mask.any(dim=1) & neg_mask.any(dim=1)
        if not bool(valid.any()):
            return features.sum() * 0.0

        # Masked entries get -inf / +inf so they are never selected (their gradient is 0).
        d_p = dist.masked_fill(~pos_mask, float("-inf")).max(dim=1).values[valid]
        d_n = dist.masked_fill(~neg_mask, float("inf")).min(dim=1).values[valid]
        if self.margin > 0:
            per_anchor = F.relu(d_p - d_n + self.margin)
        else:
            per_anchor = F.softplus(d_p - d_n)
        return self.weight * per_anchor.mean()

    def extra_repr(self) -> str:
        return f"margin={self.margin}, norm_feat={self.norm_feat}, weight={self.weight}"
