"""A max-pool whose CPU forward runs PyTorch's channels-last kernel.

PyTorch's CPU max-pool kernel for contiguous NCHW tensors is several times slower than its
channels-last kernel: on the synthetic person-search benchmark the stem's 3x3/2 max-pool of a
batch of scenes took as long as half of all the step's convolutions
(``tools/benchmark_maxpool.py`` measures both). Both kernels scan each window in the same
order and keep the first maximum, so they return the same values and the same argmax.

:class:`MaxPool2d` is an :class:`torch.nn.MaxPool2d` (same constructor, no parameters, same
values) that, for a contiguous 4-D CPU tensor, pools a channels-last copy and returns the
result NCHW-contiguous. With gradients enabled it goes through a small autograd function whose
backward is the very call the plain path makes (``aten.max_pool2d_with_indices_backward`` with
NCHW indices), so input gradients and second-order gradients (M3L's meta-gradient) are
bit-identical to ``nn.MaxPool2d``'s, ties included. CUDA tensors, other layouts, other ranks,
``return_indices``, TorchScript tracing/scripting and ``torch.func`` transforms (``vmap`` cannot
query a channels-last layout) take ``nn.MaxPool2d.forward`` unchanged.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import Function

from .input_conv import int_pair

__all__ = ["MaxPool2d", "channels_last_max_pool2d"]

_PoolArgs = Tuple[Tuple[int, int], Tuple[int, int], Tuple[int, int], Tuple[int, int], bool]


class _ChannelsLastMaxPool(Function):
    """``(x) -> (max_pool2d(x), NCHW argmax indices)``; the backward of the plain path."""

    @staticmethod
    def forward(x, args: _PoolArgs):
        k, s, p, d, ceil = args
        out, idx = F.max_pool2d(
            x.contiguous(memory_format=torch.channels_last), k, s, p, d, ceil, return_indices=True
        )
        return out.contiguous(), idx.contiguous()

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, args = inputs
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(x, output[1])
        ctx.args = args

    @staticmethod
    def backward(ctx, grad, _grad_idx):
        x, idx = ctx.saved_tensors
        k, s, p, d, ceil = ctx.args
        gx = torch.ops.aten.max_pool2d_with_indices_backward(grad, x, k, s, p, d, ceil, idx)
        return gx, None


def channels_last_max_pool2d(
    x: torch.Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode: bool = False
) -> torch.Tensor:
    """``F.max_pool2d(x, ...)`` of a contiguous 4-D tensor computed by the channels-last
    kernel; NCHW-contiguous output, values and derivatives bit-identical to ``F.max_pool2d``.

    Raises:
        ValueError: ``x`` is not a contiguous 4-D tensor.
    """
    if x.dim() != 4 or not x.is_contiguous():
        raise ValueError(
            f"channels_last_max_pool2d needs a contiguous 4-D tensor, got shape {tuple(x.shape)}"
        )
    args = (
        int_pair(kernel_size),
        int_pair(kernel_size if stride is None else stride),
        int_pair(padding),
        int_pair(dilation),
        bool(ceil_mode),
    )
    if not (torch.is_grad_enabled() and x.requires_grad):
        k, s, p, d, ceil = args
        out = F.max_pool2d(x.contiguous(memory_format=torch.channels_last), k, s, p, d, ceil)
        return out.contiguous()
    return _ChannelsLastMaxPool.apply(x, args)[0]


def _functorch_wrapped(x: torch.Tensor) -> bool:
    """Inside ``torch.func`` transforms (vmap cannot query a channels-last layout)."""
    check = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
    return bool(check(x)) if check is not None else False


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` whose CPU forward uses the channels-last kernel (module docstring).

    Same constructor, (empty) state dict and values as ``nn.MaxPool2d``.
    """

    def _fast_path(self, x: torch.Tensor) -> bool:
        return (
            x.dim() == 4
            and x.device.type == "cpu"
            and x.is_contiguous()
            and x.shape[1] > 1  # one channel: NCHW-contiguous is already channels-last
            and not self.return_indices
            and not torch.jit.is_tracing()
            and not torch.jit.is_scripting()
            and not _functorch_wrapped(x)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fast_path(x):
            return channels_last_max_pool2d(
                x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode
            )
        return super().forward(x)
