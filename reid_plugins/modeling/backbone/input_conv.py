"""A first-layer convolution whose double backward skips the input image's gradient.

Second-order meta-learning (M3L) differentiates the gradient of the meta-train loss once more.
For a convolution ``y = conv(x, W)`` PyTorch's double backward (``ConvolutionBackwardBackward``)
also computes ``conv_transpose(dL/dy, ggW)``, the gradient of the *input* ``x``, even where ``x``
is an image that does not require a gradient; at the stem this transposed convolution runs at
image resolution outside oneDNN's fast path and costs more than the stem's forward pass.

:class:`InputConv2d` is an :class:`torch.nn.Conv2d` (same parameters, state-dict keys and
forward values) that, while training with gradients enabled on an input that does not require
a gradient, routes the convolution through two small autograd functions:

* the first backward gives ``None`` for ``x`` and ``gW = dW(gy)``, the weight gradient as a
  function of ``gy`` alone (``x`` is a constant, ``y`` is linear in ``W``);
* the derivative of ``gW`` with respect to ``gy`` (what the second-order pass needs) is
  ``conv(x, ggW)``: one forward-size convolution and no input gradient.

Everywhere else (evaluation, ``torch.no_grad``, tracing/export, autocast, an input that
requires a gradient, a non-zero padding mode) it is exactly ``nn.Conv2d.forward``. The autograd
functions use ``setup_context``, so ``torch.func.grad``/``vmap`` work through them (tested).
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import Function

__all__ = ["InputConv2d", "input_conv2d", "int_pair"]

_ConvArgs = Tuple[Tuple[int, int], Tuple[int, int], Tuple[int, int], int]


def int_pair(v) -> Tuple[int, int]:
    """``(v, v)`` for an int, else the first two entries of ``v``, as ints (a conv/pool
    size, stride, padding or dilation argument)."""
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


class _WeightGrad(Function):
    """``gy -> dL/dW`` of ``y = conv(x, W)`` for a constant ``x`` (linear in ``gy``)."""

    generate_vmap_rule = True  # forward/setup_context split: works under torch.func transforms

    @staticmethod
    def forward(gy, x, weight_shape, conv: _ConvArgs):
        stride, padding, dilation, groups = conv
        weight = x.new_empty(weight_shape)  # only its shape is read
        return torch.ops.aten.convolution_backward(
            gy,
            x,
            weight,
            None,
            stride,
            padding,
            dilation,
            False,
            [0, 0],
            groups,
            [False, True, False],
        )[1]

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, x, _, conv = inputs
        ctx.save_for_backward(x)
        ctx.conv = conv

    @staticmethod
    def backward(ctx, gg_weight):
        (x,) = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
        # <gg_weight, dW(gy)> = <conv(x, gg_weight), gy>
        return F.conv2d(x, gg_weight, None, stride, padding, dilation, groups), None, None, None


class _InputConv(Function):
    """``conv(x, W)`` for an ``x`` that needs no gradient (no bias)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, conv: _ConvArgs):
        stride, padding, dilation, groups = conv
        return F.conv2d(x, weight, None, stride, padding, dilation, groups)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, conv = inputs
        ctx.save_for_backward(x)
        ctx.conv = conv
        ctx.weight_shape = weight.shape

    @staticmethod
    def backward(ctx, gy):
        (x,) = ctx.saved_tensors
        return None, _WeightGrad.apply(gy, x, ctx.weight_shape, ctx.conv), None


def input_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    stride=(1, 1),
    padding=(0, 0),
    dilation=(1, 1),
    groups: int = 1,
) -> torch.Tensor:
    """``F.conv2d(x, weight, None, ...)`` for an ``x`` that requires no gradient.

    Values and first/second derivatives with respect to ``weight`` equal ``F.conv2d``'s; the
    second-order pass computes no gradient of ``x``.

    Raises:
        ValueError: ``x`` requires a gradient (use ``F.conv2d``) or ``padding`` is a string.
    """
    if x.requires_grad:
        raise ValueError("input_conv2d: the input requires a gradient; use F.conv2d")
    if isinstance(padding, str):
        raise ValueError(f"input_conv2d: padding must be numbers, got {padding!r}")

    conv = (int_pair(stride), int_pair(padding), int_pair(dilation), int(groups))
    return _InputConv.apply(x, weight, conv)


class InputConv2d(nn.Conv2d):
    """``nn.Conv2d`` for a network's first layer (same constructor, parameters and values).

    While training with gradients enabled, for an input that requires no gradient, a bias-free
    zero-padded convolution is computed by :func:`input_conv2d`, whose second-order backward
    skips the input gradient (module docstring); otherwise ``nn.Conv2d.forward``.
    """

    def _fast_path(self, x: torch.Tensor) -> bool:
        return (
            self.training
            and torch.is_grad_enabled()
            and not x.requires_grad
            and self.weight.requires_grad
            and self.bias is None
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
            and not torch.jit.is_tracing()
            and not torch.jit.is_scripting()
            and not torch.is_autocast_enabled(x.device.type)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fast_path(x):
            return input_conv2d(
                x, self.weight, self.stride, self.padding, self.dilation, self.groups
            )
        return super().forward(x)
