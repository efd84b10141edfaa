"""``MaxPool2d``: the channels-last CPU forward gives ``nn.MaxPool2d``'s values, argmax and
first- and second-order gradients bit for bit (ties included), and falls back where it must."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reid_plugins.modeling.backbone.pool import MaxPool2d, channels_last_max_pool2d
from reid_plugins.modeling.backbone.resnet import Stem


def _tied(*shape, seed=0):
    """Non-negative values on a 0.1 grid with constant blocks: most windows hold ties."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).relu().round(decimals=1)
    x[:, :, 2:9, 1:6] = 0.7
    return x


@pytest.mark.parametrize(
    "kw",
    [
        dict(kernel_size=3, stride=2, padding=1),
        dict(kernel_size=2),
        dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
        dict(kernel_size=3, stride=1, padding=1, dilation=2),
    ],
)
def test_values_and_gradients_equal_nn_maxpool_bit_for_bit(kw):
    plain, fast = nn.MaxPool2d(**kw), MaxPool2d(**kw)
    x = _tied(3, 5, 19, 13)
    w = torch.randn(5, 5, 3, 3, generator=torch.Generator().manual_seed(1), requires_grad=True)
    results = []
    for pool in (plain, fast):
        y = pool(F.conv2d(x, w, padding=1))
        assert y.is_contiguous()
        loss = (y * torch.linspace(-1, 1, y.numel()).view_as(y)).pow(2).sum()
        (g,) = torch.autograd.grad(loss, w, create_graph=True)  # M3L-style second order
        (gg,) = torch.autograd.grad(g.pow(2).sum(), w)
        xi = x.clone().requires_grad_()
        pool(xi).backward(torch.arange(y.numel(), dtype=x.dtype).view(y.shape))
        results.append((y.detach(), g.detach(), gg, xi.grad))
    for a, b in zip(*results):
        assert torch.equal(a, b)
    assert results[0][3].sum() > 0  # the input gradient is not trivially zero


def test_no_grad_path_and_functional_form():
    x = _tied(2, 4, 16, 10)
    with torch.no_grad():
        assert torch.equal(MaxPool2d(3, 2, 1)(x), F.max_pool2d(x, 3, 2, 1))
    assert torch.equal(channels_last_max_pool2d(x, 3, 2, 1), F.max_pool2d(x, 3, 2, 1))
    with pytest.raises(ValueError, match="contiguous 4-D"):
        channels_last_max_pool2d(x[:, :, :, ::2], 3)


def test_fallbacks_keep_nn_maxpool_behaviour():
    pool = MaxPool2d(3, 2, 1)
    cl = _tied(2, 4, 16, 10).contiguous(memory_format=torch.channels_last)
    assert not pool._fast_path(cl)  # channels-last input: already the fast kernel
    assert pool(cl).is_contiguous(memory_format=torch.channels_last)
    assert not pool._fast_path(torch.zeros(4, 16, 10))  # 3-D input
    assert not MaxPool2d(3, return_indices=True)._fast_path(torch.zeros(1, 4, 8, 8))
    assert pool._fast_path(torch.zeros(1, 4, 8, 8))
    # torch.func: vmap cannot query a channels-last layout, so the plain path runs
    xs = torch.randn(3, 2, 4, 9, 9)
    assert torch.equal(torch.func.vmap(pool)(xs), torch.func.vmap(nn.MaxPool2d(3, 2, 1))(xs))
    w = torch.randn(4, 4, 3, 3)
    x = _tied(2, 4, 9, 9)

    def loss(p):
        return lambda w: p(F.conv2d(x, w, padding=1)).pow(2).sum()

    assert torch.equal(
        torch.func.grad(loss(pool))(w), torch.func.grad(loss(nn.MaxPool2d(3, 2, 1)))(w)
    )


def test_stem_uses_it_and_state_dict_is_unchanged():
    stem = Stem(in_channels=3, out_channels=8)
    assert isinstance(stem.maxpool, MaxPool2d)
    assert not any(k.startswith("maxpool") for k in stem.state_dict())
