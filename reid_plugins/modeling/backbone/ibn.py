"""Normalisation layers used by the backbones: the norm factory, IBN-a and BN freezing.

* :func:`get_norm` builds ``"BN"`` / ``"SyncBN"`` / ``"FrozenBN"`` layers from a config string.
* :class:`IBN` is the IBN-Net-a normalisation (Pan et al., ECCV 2018): the first half of the
  channels goes through ``InstanceNorm2d(affine=True)``, the rest through batch norm, and the
  two halves are concatenated again.
* :func:`convert_frozen_batchnorm` replaces the batch norms of a module by
  :class:`~torchvision.ops.misc.FrozenBatchNorm2d` (statistics and affine copied).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

__all__ = ["NORM_TYPES", "get_norm", "IBN", "convert_frozen_batchnorm"]

#: Accepted values of ``MODEL.BACKBONE.NORM``.
NORM_TYPES = ("BN", "SyncBN", "FrozenBN")


def get_norm(norm: str, num_channels: int) -> nn.Module:
    """Build a 2-D normalisation layer.

    Args:
        norm: ``"BN"`` (:class:`nn.BatchNorm2d`), ``"SyncBN"`` (:class:`nn.SyncBatchNorm`, for
            multi-process training) or ``"FrozenBN"`` (torchvision's ``FrozenBatchNorm2d``:
            fixed statistics and affine, no parameters).
        num_channels: number of channels normalised.

    Raises:
        ValueError: ``norm`` is not one of :data:`NORM_TYPES`.
    """
    if norm == "BN":
        return nn.BatchNorm2d(num_channels)
    if norm == "SyncBN":
        return nn.SyncBatchNorm(num_channels)
    if norm == "FrozenBN":
        return FrozenBatchNorm2d(num_channels)
    raise ValueError(f"MODEL.BACKBONE.NORM='{norm}' is not supported; choose one of {NORM_TYPES}")


class IBN(nn.Module):
    """IBN-Net-a normalisation: instance norm on the first half of the channels, BN on the rest.

    The split is ``half = int(num_channels * ratio)``: channels ``[0, half)`` go through
    ``InstanceNorm2d(half, affine=True)`` (no running statistics), channels
    ``[half, num_channels)`` through the batch norm chosen by ``norm``; the outputs are
    concatenated in the same order.

    The sub-modules are named ``IN`` and ``BN`` so that the state-dict keys match the official
    IBN-Net checkpoints (``layer1.0.bn1.IN.weight``, ``layer1.0.bn1.BN.running_mean``, ...).
    """

    def __init__(self, *, num_channels: int, ratio: float = 0.5, norm: str = "BN") -> None:
        """
        Args:
            num_channels: total channels of the input.
            ratio: fraction of the channels that are instance-normalised (0.5 in IBN-Net-a).
            norm: batch-norm type of the remaining channels (see :func:`get_norm`).

        Raises:
            ValueError: the split leaves one of the halves empty.
        """
        super().__init__()
        half = int(num_channels * ratio)
        if not 0 < half < num_channels:
            raise ValueError(
                f"IBN: ratio={ratio} of {num_channels} channels leaves an empty half; "
                "use a larger MODEL.BACKBONE.BASE_WIDTH"
            )
        self.half = half
        self.IN = nn.InstanceNorm2d(half, affine=True)
        self.BN = get_norm(norm, num_channels - half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` (N, C, H, W); returns a new tensor of the same shape."""
        first, second = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        return torch.cat([self.IN(first.contiguous()), self.BN(second.contiguous())], dim=1)


def _to_frozen(bn: nn.modules.batchnorm._BatchNorm) -> FrozenBatchNorm2d:
    tensors = list(bn.parameters()) + list(bn.buffers())
    frozen = FrozenBatchNorm2d(bn.num_features, eps=bn.eps)
    if tensors:
        frozen.to(tensors[0].device)
    with torch.no_grad():
        if bn.affine:
            frozen.weight.copy_(bn.weight.detach())
            frozen.bias.copy_(bn.bias.detach())
        if bn.track_running_stats:
            frozen.running_mean.copy_(bn.running_mean)
            frozen.running_var.copy_(bn.running_var)
    return frozen


def convert_frozen_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d``/``SyncBatchNorm`` inside ``module`` by ``FrozenBatchNorm2d``.

    Weights, biases and running statistics are copied, so outputs in eval mode are unchanged;
    afterwards the layers never update their statistics, whatever the train/eval mode.
    Instance norms are left alone (they keep no statistics). The conversion is in place for
    children; the (possibly new) module is returned so that a bare BN can be converted too.
    """
    if isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
        return _to_frozen(module)
    for name, child in module.named_children():
        new_child = convert_frozen_batchnorm(child)
        if new_child is not child:
            setattr(module, name, new_child)
    return module
