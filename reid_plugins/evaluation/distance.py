"""Pairwise distances between ReID features (torch, float32).

Two metrics, chosen by ``TEST.METRIC``:

* ``"cosine"``: ``1 - cos(q, g)``; the features are L2-normalised inside, so any scale works.
  Values lie in ``[0, 2]`` (up to float rounding).
* ``"euclidean"``: the **squared** Euclidean distance ``||q - g||^2`` by default (cheaper, no
  square root); pass ``squared=False`` for the plain distance. Both give the same ranking, and
  so the same CMC / mAP / mINP, because the square root is monotonic.

Lower distance = more similar, everywhere in :mod:`reid_plugins.evaluation`.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["METRICS", "compute_distance", "GalleryDistance", "as_feature_tensor"]

#: Metrics understood by :func:`compute_distance`.
METRICS = ("cosine", "euclidean")

_EPS = 1e-12


def as_feature_tensor(
    x: Union[np.ndarray, torch.Tensor, Any], name: str, device: Optional[torch.device] = None
) -> torch.Tensor:
    """Convert ``x`` to a 2-D float32 tensor (no copy when already float32 on ``device``).

    Raises:
        ValueError: ``x`` is not 2-D; the message names ``name`` and the shape.
    """
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    t = t.detach()
    if t.dim() != 2:
        raise ValueError(
            f"{name} must be a 2-D (num_samples, dim) array, got shape {tuple(t.shape)}"
        )
    if device is not None:
        t = t.to(device)
    if t.dtype != torch.float32:
        t = t.float()
    return t


def _check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"Unknown ReID distance metric '{metric}'; expected one of {METRICS}")
    return metric


class GalleryDistance:
    """Distances from query chunks to a fixed gallery, with gallery statistics computed once.

    The gallery tensor is kept as given (no normalised copy): for cosine, ``q_n @ g.T`` is
    scaled by ``1 / ||g||`` per column; for Euclidean, ``||q||^2 + ||g||^2 - 2 q.g`` (clamped
    at 0). Memory per call is one ``(len(q), len(g))`` float32 matrix.

    Args:
        g: gallery features ``(N_g, D)`` (numpy or torch; converted to float32).
        metric: ``"cosine"`` or ``"euclidean"``.
        squared: Euclidean only: return ``||q-g||^2`` (True, default) or ``||q-g||``.
        device: where to compute (default: ``g``'s device).
    """

    def __init__(
        self,
        g: Union[np.ndarray, torch.Tensor],
        metric: str = "cosine",
        *,
        squared: bool = True,
        device: Optional[Union[str, torch.device]] = None,
    ) -> None:
        self.metric = _check_metric(metric)
        self.squared = bool(squared)
        self.g = as_feature_tensor(g, "gallery features", device)
        with torch.no_grad():
            norm2 = self._norm2()
            if metric == "cosine":
                self._col = norm2.sqrt().clamp_min(_EPS).reciprocal()
            else:
                self._col = norm2

    def _norm2(self) -> torch.Tensor:
        # Row norms in slices, so that no second gallery-sized tensor is ever allocated.
        out = torch.empty(self.g.shape[0], dtype=torch.float32, device=self.g.device)
        for s in range(0, self.g.shape[0], 65536):
            blk = self.g[s : s + 65536]
            out[s : s + 65536] = (blk * blk).sum(dim=1)
        return out

    @property
    def num_gallery(self) -> int:
        return int(self.g.shape[0])

    def __call__(self, q: Union[np.ndarray, torch.Tensor]) -> torch.Tensor:
        """Distances ``(len(q), N_g)`` float32 on the gallery's device.

        Raises:
            ValueError: ``q`` is not 2-D or its feature dimension differs from the gallery's.
        """
        q = as_feature_tensor(q, "query features", self.g.device)
        if q.shape[1] != self.g.shape[1]:
            raise ValueError(
                f"Query features have dimension {q.shape[1]} but gallery features have "
                f"dimension {self.g.shape[1]}"
            )
        with torch.no_grad():
            if self.metric == "cosine":
                qn = F.normalize(q, p=2.0, dim=1, eps=_EPS)
                dist = torch.mm(qn, self.g.t())
                dist.mul_(self._col.unsqueeze(0))
                dist.neg_().add_(1.0)
            else:
                dist = torch.mm(q, self.g.t())
                dist.mul_(-2.0)
                dist.add_((q * q).sum(dim=1, keepdim=True))
                dist.add_(self._col.unsqueeze(0))
                dist.clamp_min_(0.0)
                if not self.squared:
                    dist.sqrt_()
        return dist


def compute_distance(
    q: Union[np.ndarray, torch.Tensor],
    g: Union[np.ndarray, torch.Tensor],
    metric: str = "cosine",
    *,
    squared: bool = True,
) -> torch.Tensor:
    """Distance matrix between query and gallery features.

    Args:
        q: ``(N_q, D)`` features (numpy or torch).
        g: ``(N_g, D)`` features.
        metric: ``"cosine"`` (``1 - cos``, features L2-normalised inside) or ``"euclidean"``.
        squared: Euclidean only: squared distance (default) or plain distance; same ranking.

    Returns:
        float32 tensor ``(N_q, N_g)`` on ``g``'s device; lower = more similar.

    Raises:
        ValueError: unknown metric, inputs not 2-D, or different feature dimensions.
    """
    return GalleryDistance(g, metric, squared=squared)(q)
