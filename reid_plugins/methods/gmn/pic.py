"""GMN's Pair-Identity Centre loss L_pic."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PairIdentityCenterLoss"]


class PairIdentityCenterLoss(nn.Module):
    """Pulls the M-Net embeddings of pairs with the same pair-identity to their centre.

    Pairs are grouped by pair-identity key (e.g. :func:`~reid_plugins.modeling.heads.
    metric_net.pair_identity_keys`: the unordered identity pair ``{a, b}``; ``{a, a}`` for
    positives). For every group ``G`` of at least two pairs in the batch, with centre
    ``c_G = mean_{i in G} e_i``::

        L_pic = weight * sum_G sum_{i in G} ||e_i - c_G||^2 / sum_G |G|

    i.e. the mean squared distance to the group centre over all pairs that belong to a group
    of two or more (singletons have no centre to agree with and are excluded). Embeddings are
    L2-normalised first when ``norm_feat``. No qualifying group -> a zero connected to ``emb``.
    Since the deviations from a mean sum to zero, the gradient w.r.t. ``e_i`` is
    ``2 (e_i - c_G) * weight / sum_G |G|`` whether or not the centre is detached.

    Args:
        weight: lambda, the multiplier of the loss.
        norm_feat: L2-normalise the embeddings.
    """

    def __init__(self, *, weight: float = 0.1, norm_feat: bool = True) -> None:
        super().__init__()
        self.weight = float(weight)
        self.norm_feat = bool(norm_feat)

    @classmethod
    def from_config(cls, cfg) -> "PairIdentityCenterLoss":
        """Build from ``MODEL.GMN.LOSSES.PIC.{WEIGHT, NORM_FEAT}``."""
        c = cfg.MODEL.GMN.LOSSES.PIC
        return cls(weight=c.WEIGHT, norm_feat=c.NORM_FEAT)

    def forward(self, emb: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """
        Args:
            emb: ``(M, E)`` embeddings of M pairs.
            keys: ``(M,)`` integer pair-identity keys.

        Returns:
            Scalar loss (``weight`` applied).
        """
        if emb.dim() != 2 or keys.shape != emb.shape[:1]:
            raise ValueError(
                f"PairIdentityCenterLoss: need emb (M, E) and keys (M,), got "
                f"{tuple(emb.shape)} and {tuple(keys.shape)}"
            )
        if emb.shape[0] == 0:
            return emb.sum() * 0.0
        x = F.normalize(emb, dim=1) if self.norm_feat else emb
        _, inverse, counts = torch.unique(keys, return_inverse=True, return_counts=True)
        num_groups = counts.shape[0]
        sums = x.new_zeros(num_groups, x.shape[1]).index_add_(0, inverse, x)
        centres = sums / counts.unsqueeze(1).to(x.dtype)
        member = counts[inverse] >= 2
        if not bool(member.any()):
            return emb.sum() * 0.0
        sq = (x - centres[inverse]).pow(2).sum(dim=1)
        return self.weight * sq[member].mean()

    def extra_repr(self) -> str:
        return f"weight={self.weight}, norm_feat={self.norm_feat}"
