"""InputConv2d: nn.Conv2d values and derivatives, without the image gradient at second order."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reid_plugins.modeling.backbone import InputConv2d, ResNet, input_conv2d


def _second_order(conv_fn, x, weight):
    """d/dW of a function of (dL/dW) where L is a non-linear function of conv(x, W)."""
    y = conv_fn(x, weight)
    (g,) = torch.autograd.grad((y.tanh() ** 2).sum(), weight, create_graph=True)
    (h,) = torch.autograd.grad((g.sin() * g).sum(), weight)
    return y, g, h


def _conv_calls(fn) -> int:
    with torch.profiler.profile() as prof:
        fn()
    names = ("aten::convolution", "aten::convolution_backward")
    return sum(e.count for e in prof.key_averages() if e.key in names)


def test_gradcheck_and_gradgradcheck():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 9, 7, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    for kw in ({"stride": (2, 2), "padding": (1, 1)}, {"stride": 1, "padding": 0, "dilation": 2}):
        fn = lambda w, kw=kw: input_conv2d(x, w, **kw)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (w,))
        assert torch.autograd.gradgradcheck(fn, (w,))


def test_matches_conv2d_to_second_order():
    torch.manual_seed(0)
    x = torch.randn(3, 3, 16, 8, dtype=torch.float64)
    w = torch.randn(5, 3, 7, 7, dtype=torch.float64, requires_grad=True)
    ref = _second_order(lambda x, w: F.conv2d(x, w, None, 2, 3), x, w)
    got = _second_order(lambda x, w: input_conv2d(x, w, 2, 3), x, w)
    for a, b in zip(ref, got):
        torch.testing.assert_close(a, b)


def test_module_is_a_conv2d_with_same_values_and_state_dict():
    torch.manual_seed(0)
    ref = nn.Conv2d(3, 4, 7, stride=2, padding=3, bias=False)
    mod = InputConv2d(3, 4, 7, stride=2, padding=3, bias=False)
    mod.load_state_dict(ref.state_dict())
    assert isinstance(mod, nn.Conv2d) and list(mod.state_dict()) == list(ref.state_dict())
    x = torch.randn(2, 3, 12, 10)
    assert mod._fast_path(x)
    for a, b in zip(
        _second_order(lambda x, w: ref(x), x, ref.weight),
        _second_order(lambda x, w: mod(x), x, mod.weight),
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_second_order_pass_skips_the_input_gradient():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 16)
    w = torch.randn(8, 3, 7, 7, requires_grad=True)

    def count(conv_fn):
        y = conv_fn(x, w)
        (g,) = torch.autograd.grad((y.relu() ** 2).sum(), w, create_graph=True)
        return _conv_calls(lambda: torch.autograd.grad((g * g).sum(), w))

    native = count(lambda x, w: F.conv2d(x, w, None, 2, 3))
    ours = count(lambda x, w: input_conv2d(x, w, 2, 3))
    # outer pass, native: the double backward's conv(x, ggW) and conv_transpose(gy, ggW) (the
    # unneeded image gradient), then the forward conv's backward; ours: conv(x, ggW) + backward
    assert ours == native - 1, (native, ours)


def test_falls_back_to_conv2d_where_the_fast_path_does_not_apply():
    mod = InputConv2d(3, 4, 3, padding=1, bias=False)
    x = torch.randn(1, 3, 6, 6)
    assert mod._fast_path(x)
    assert not mod._fast_path(x.clone().requires_grad_())
    with torch.no_grad():
        assert not mod._fast_path(x)
    mod.eval()
    assert not mod._fast_path(x)
    mod.train()
    mod.weight.requires_grad_(False)
    assert not mod._fast_path(x)
    mod.weight.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not mod._fast_path(x)
    assert not InputConv2d(3, 4, 3, bias=True)._fast_path(x)
    # the image gradient is still computed when asked for
    xr = x.clone().requires_grad_()
    mod(xr).sum().backward()
    assert xr.grad is not None and xr.grad.abs().sum() > 0


def test_input_requiring_grad_is_rejected_by_the_function():
    x = torch.randn(1, 3, 6, 6, requires_grad=True)
    with pytest.raises(ValueError, match="requires a gradient"):
        input_conv2d(x, torch.randn(2, 3, 3, 3, requires_grad=True))


def test_resnet_stem_uses_it():
    net = ResNet(depth=18, base_width=8)
    assert isinstance(net.stem.conv1, InputConv2d)
    assert "stem.conv1.weight" in net.state_dict()


def test_works_under_torch_func_transforms():
    from torch.func import functional_call, grad, vmap

    torch.manual_seed(0)
    mod = InputConv2d(3, 4, 3, padding=1, bias=False)
    ref = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    ref.load_state_dict(mod.state_dict())
    x = torch.randn(2, 3, 8, 8)
    results = []
    for m in (mod, ref):

        def loss(p, m=m):
            return functional_call(m, p, (x,)).tanh().pow(2).sum()

        params = {"weight": m.weight.detach()}
        g = grad(loss)(params)["weight"]
        h = grad(lambda p: grad(loss)(p)["weight"].pow(2).sum())(params)["weight"]
        v = vmap(lambda xi: functional_call(m, params, (xi[None],)).sum())(x)
        results.append((g, h, v))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)
