#!/usr/bin/env python
"""The stem's 3x3/2 max-pool on the CPU: ``nn.MaxPool2d`` vs
:class:`reid_plugins.modeling.backbone.pool.MaxPool2d` (channels-last kernel).

For each shape (the stems of the synthetic benchmark's runs and of ResNet-50 ReID training),
times forward and forward + backward of both modules, interleaved, median of ``--repeats``, and
checks that outputs, argmax indices and input gradients are bit-identical (the input is
rounded to one decimal so that windows hold ties). Examples::

    python tools/benchmark_maxpool.py                 # 1 thread, all shapes
    python tools/benchmark_maxpool.py --threads 2 --repeats 20
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from reid_plugins.utils.env import setup_environment  # noqa: E402

setup_environment()  # before torch is imported (OMP_WAIT_POLICY=PASSIVE unless set)

import torch  # noqa: E402
from torch import nn  # noqa: E402

from reid_plugins.modeling.backbone.pool import MaxPool2d  # noqa: E402

# name -> (N, C, H, W) of the tensor entering the stem's max-pool
SHAPES = {
    "synthetic DG step (3 x 32 crops 64x32, width 16)": (96, 16, 32, 16),
    "synthetic search step (4 scenes ~600x900, width 16)": (4, 16, 300, 450),
    "synthetic search inference (8 scenes ~400x600, width 16)": (8, 16, 200, 300),
    "ResNet-50 ReID step (16 crops 256x128, width 64)": (16, 64, 128, 64),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def _time(fn, repeats: int):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def identical(plain: nn.Module, fast: nn.Module, x: torch.Tensor) -> bool:
    """Outputs, argmax indices and input gradients of the two pools are bit-identical."""
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = plain(xa), fast(xb)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    _, ia = nn.functional.max_pool2d(x, 3, 2, 1, return_indices=True)
    xc = x.contiguous(memory_format=torch.channels_last)
    _, ib = nn.functional.max_pool2d(xc, 3, 2, 1, return_indices=True)
    return (
        torch.equal(ya, yb)
        and yb.is_contiguous()
        and torch.equal(ia, ib)
        and torch.equal(xa.grad, xb.grad)
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)
    plain = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    fast = MaxPool2d(kernel_size=3, stride=2, padding=1)
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.repeats}")
    print("| shape | nn.MaxPool2d fwd / fwd+bwd (ms) | ours fwd / fwd+bwd (ms) | speed-up | same |")
    print("|---|---|---|---|---|")
    ok = True
    for name, shape in SHAPES.items():
        x = torch.randn(shape, generator=gen).relu().round(decimals=1)
        xg = x.clone().requires_grad_()

        def step(m):
            y = m(xg)
            y.backward(torch.ones_like(y))

        with torch.no_grad():
            f_plain = _time(lambda: plain(x), args.repeats)
            f_fast = _time(lambda: fast(x), args.repeats)
        b_plain = _time(lambda: step(plain), args.repeats)
        b_fast = _time(lambda: step(fast), args.repeats)
        same = identical(plain, fast, x)
        ok &= same
        print(
            f"| {name} {tuple(shape)} | {f_plain * 1e3:.1f} / {b_plain * 1e3:.1f} "
            f"| {f_fast * 1e3:.1f} / {b_fast * 1e3:.1f} "
            f"| {f_plain / f_fast:.1f}x / {b_plain / b_fast:.1f}x | {'yes' if same else 'NO'} |"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    from reid_plugins.utils.errors import run_cli

    raise SystemExit(run_cli(main))
