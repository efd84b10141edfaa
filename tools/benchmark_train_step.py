#!/usr/bin/env python
"""Training-step time of the toolbox's default fast path vs fast-reid's float32 step.

Every variant trains the same model on the same in-memory batch (data loading excluded):
ResNet-50 with last stride 1, GAP, BNNeck, identity classifier without bias, cross-entropy
with label smoothing 0.1 + batch-hard triplet (margin 0.3), Adam (lr 3.5e-4, weight decay
5e-4), batch 16 (4 identities x 4), 256x128 crops, random initialisation.

Variants (``--variants``):

* ``fast``: the toolbox's defaults as ``DefaultTrainer`` builds them: ``SOLVER.AMP``,
  ``MODEL.CHANNELS_LAST`` and ``SOLVER.FUSED`` resolved for this machine (bfloat16 autocast,
  channels-last and fused Adam on CPUs with native bfloat16; float16 on CUDA), optionally
  ``--compile``.
* ``fp32``: the toolbox's step in float32 with contiguous tensors and torch's default Adam
  (what the toolbox ran before the fast path).
* ``peer``: fast-reid's float32 step built from its own package when ``fastreid`` is
  importable; otherwise an equivalent plain torchvision ResNet-50 float32 step (the printout
  says which);
* ``peer_fast`` (diagnostic, not in the default list): the plain torchvision step with the same
  fast path, separating the fast path's own gain from the toolbox's overheads.

Timing is interleaved: after ``--warmup`` steps of each, every repeat runs one step of each
variant (order alternating), so that all see the same machine load; the medians and the
ratios ``peer / variant`` come from that one run. On CPU ``OMP_WAIT_POLICY`` defaults to
``PASSIVE`` (idle OpenMP threads sleep; spinning ones steal the cores on a shared machine).

Example::

    python tools/benchmark_train_step.py --threads 2 --repeats 8
    python tools/benchmark_train_step.py --depth 18 --height 64 --width 32 --repeats 2  # tiny
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from reid_plugins.utils.env import setup_environment  # noqa: E402

setup_environment()  # before torch is imported (OMP_WAIT_POLICY=PASSIVE unless set)

import torch  # noqa: E402
from torch import nn  # noqa: E402


def make_batch(args) -> List[Dict]:
    """``--batch`` records of ``--ids`` identities, float 0-255 images as the mapper yields."""
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(args.batch, 3, args.height, args.width, generator=g) * 255).round()
    k = args.batch // args.ids
    return [{"image": images[i], "pid": i // k, "camid": 0} for i in range(args.batch)]


def toolbox_cfg(args, fast: bool):
    from reid_plugins.config import get_cfg

    cfg = get_cfg()
    cfg.MODEL.DEVICE = args.device
    cfg.MODEL.BACKBONE.DEPTH = args.depth
    cfg.MODEL.BACKBONE.LAST_STRIDE = 1
    cfg.MODEL.HEADS.NUM_CLASSES = args.num_classes
    cfg.INPUT.SIZE_TRAIN = [args.height, args.width]
    cfg.SOLVER.IMS_PER_BATCH = args.batch
    cfg.SOLVER.COMPILE = bool(fast and args.compile)
    if fast:  # the shipped defaults, spelled out (a test suite may pin float32 in get_cfg)
        cfg.SOLVER.AMP.ENABLED = "auto"
        cfg.MODEL.CHANNELS_LAST = "auto"
        cfg.SOLVER.FUSED = True
    else:
        cfg.SOLVER.AMP.ENABLED = False
        cfg.MODEL.CHANNELS_LAST = False
        cfg.SOLVER.FUSED = False
    return cfg


def toolbox_step(args, fast: bool):
    """``(step_fn, description)`` of the toolbox's step trainer as ``DefaultTrainer`` builds it."""
    from reid_plugins.engine.defaults import DefaultTrainer
    from reid_plugins.solver import build_optimizer

    cfg = toolbox_cfg(args, fast)
    torch.manual_seed(0)
    model = DefaultTrainer.build_model(cfg)
    model.train()
    opt = build_optimizer(cfg, model)
    batch = make_batch(args)

    def forever():
        while True:
            yield batch

    # build_step_trainer only uses ``self`` for ``amp_dtype`` (a classmethod)
    trainer = DefaultTrainer.build_step_trainer(DefaultTrainer, cfg, model, forever(), opt)
    amp = getattr(trainer, "dtype", None)
    cl = model.backbone.stem.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    impl = "fused" if opt.param_groups[0].get("fused") else "default"
    desc = (
        f"toolbox {'default fast path' if fast else 'float32'}: "
        f"{amp or 'float32'}, {'channels-last' if cl else 'contiguous'}, {impl} Adam"
        + (", torch.compile" if cfg.SOLVER.COMPILE else "")
    )

    def step():
        from reid_plugins.utils.events import EventStorage

        with EventStorage(0):
            trainer.run_step()

    return step, desc


# ----------------------------------------------------------------------------- peer
def _batch_hard_triplet(feat: torch.Tensor, pids: torch.Tensor, margin: float) -> torch.Tensor:
    dist = torch.cdist(feat, feat).clamp_min(1e-12)
    same = pids[:, None] == pids[None, :]
    hardest_pos = (dist * same).max(1).values
    hardest_neg = dist.masked_fill(same, float("inf")).min(1).values
    return nn.functional.relu(hardest_pos - hardest_neg + margin).mean()


class TorchvisionReID(nn.Module):
    """Plain torchvision ResNet + BNNeck + bias-free classifier (the fast-reid baseline's
    architecture), float32, written independently of the toolbox's modules."""

    def __init__(self, depth: int, num_classes: int) -> None:
        super().__init__()
        import torchvision

        net = getattr(torchvision.models, f"resnet{depth}")(weights=None)
        block = net.layer4[0]
        for m in (getattr(block, "conv2", None), getattr(block, "conv1", None)):
            if m is not None and m.stride != (1, 1):
                m.stride = (1, 1)
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1)
        self.body = nn.Sequential(*list(net.children())[:-2])
        dim = net.fc.in_features
        self.neck = nn.BatchNorm1d(dim)
        self.neck.bias.requires_grad_(False)
        self.classifier = nn.Linear(dim, num_classes, bias=False)
        mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
        std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, images: torch.Tensor, pids: torch.Tensor) -> torch.Tensor:
        x = self.body((images - self.mean) / self.std)
        feat = x.mean((2, 3))
        logits = self.classifier(self.neck(feat))
        ce = nn.functional.cross_entropy(logits, pids, label_smoothing=0.1)
        return ce + _batch_hard_triplet(feat, pids, 0.3)


def fastreid_step(args) -> Optional[tuple]:
    """fast-reid's own baseline step, or None when ``fastreid`` is not importable."""
    try:
        from fastreid.config import get_cfg as fr_get_cfg
        from fastreid.modeling import build_model as fr_build_model
    except Exception:  # not installed (or broken install): use the torchvision equivalent
        return None
    cfg = fr_get_cfg()
    cfg.MODEL.DEVICE = args.device
    cfg.MODEL.BACKBONE.DEPTH = f"{args.depth}x"
    cfg.MODEL.BACKBONE.LAST_STRIDE = 1
    cfg.MODEL.BACKBONE.PRETRAIN = False
    cfg.MODEL.HEADS.NUM_CLASSES = args.num_classes
    cfg.MODEL.LOSSES.NAME = ("CrossEntropyLoss", "TripletLoss")
    cfg.MODEL.LOSSES.CE.EPSILON = 0.1
    cfg.MODEL.LOSSES.TRI.MARGIN = 0.3
    cfg.MODEL.LOSSES.TRI.HARD_MINING = True
    torch.manual_seed(0)
    model = fr_build_model(cfg).train()
    opt = torch.optim.Adam(model.parameters(), lr=3.5e-4, weight_decay=5e-4)
    batch = make_batch(args)
    data = {
        "images": torch.stack([b["image"] for b in batch]).to(args.device),
        "targets": torch.tensor([b["pid"] for b in batch], device=args.device),
    }

    def step():
        losses = model(data)
        opt.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        opt.step()

    return step, "fast-reid (its own package) float32"


def peer_step(args, fast: bool = False):
    """The peer's float32 step; with ``fast`` the plain torchvision step with the same fast
    path as the toolbox's (autocast dtype, channels-last, fused Adam): a diagnostic that
    separates the fast path's own gain from the toolbox's overheads."""
    if not fast:
        found = fastreid_step(args)
        if found is not None:
            return found
    from reid_plugins.solver.precision import autocast, resolve_amp_dtype

    torch.manual_seed(0)
    model = TorchvisionReID(args.depth, args.num_classes).to(args.device).train()
    dtype = resolve_amp_dtype("auto", "auto", args.device) if fast else None
    if fast and dtype is not None:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(
        model.parameters(), lr=3.5e-4, weight_decay=5e-4, **({"fused": True} if fast else {})
    )
    scaler = torch.amp.GradScaler(args.device, enabled=dtype == torch.float16)
    batch = make_batch(args)
    images = torch.stack([b["image"] for b in batch]).to(args.device)
    pids = torch.tensor([b["pid"] for b in batch], device=args.device)

    def step():
        with autocast(args.device, dtype):
            loss = model(images, pids)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss.float()).backward()
        scaler.step(opt)
        scaler.update()

    if fast:
        return step, f"plain torchvision ResNet with the fast path: {dtype or 'float32'}, " + (
            "channels-last, fused Adam" if dtype is not None else "fused Adam"
        )
    return step, (
        "fast-reid not importable: equivalent plain torchvision ResNet float32 step "
        "(contiguous, torch's default Adam)"
    )


# ----------------------------------------------------------------------------- timing
def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(step: Callable, device: str):
    _sync(device)
    w, c = time.perf_counter(), time.process_time()
    step()
    _sync(device)
    return time.perf_counter() - w, time.process_time() - c


def interleaved(steps: Dict[str, Callable], warmup: int, repeats: int, device: str, log=print):
    """``{name: (wall list, cpu list)}`` of ``repeats`` interleaved steps after ``warmup``."""
    for _ in range(warmup):
        for s in steps.values():
            s()
    walls: Dict[str, List[float]] = {k: [] for k in steps}
    cpus: Dict[str, List[float]] = {k: [] for k in steps}
    names = list(steps)
    for r in range(repeats):
        for k in names if r % 2 == 0 else names[::-1]:
            w, c = timed(steps[k], device)
            walls[k].append(w)
            cpus[k].append(c)
            log(f"repeat {r + 1}/{repeats} {k}: {w:.3f} s")
    return walls, cpus


def main(argv: Optional[List[str]] = None) -> Dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", nargs="+", default=["fast", "fp32", "peer"])
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--ids", type=int, default=4, help="identities per batch")
    parser.add_argument("--num-classes", type=int, default=751)
    parser.add_argument("--compile", action="store_true", help="SOLVER.COMPILE for 'fast'")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (0 = default)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    builders = {
        "fast": lambda: toolbox_step(args, True),
        "fp32": lambda: toolbox_step(args, False),
        "peer": lambda: peer_step(args),
        "peer_fast": lambda: peer_step(args, fast=True),
    }
    unknown = set(args.variants) - set(builders)
    if unknown:
        parser.error(f"unknown --variants {sorted(unknown)}; choose from {sorted(builders)}")
    steps, descs = {}, {}
    for v in args.variants:
        steps[v], descs[v] = builders[v]()
    walls, cpus = interleaved(steps, args.warmup, args.repeats, args.device)
    device = args.device if args.device == "cpu" else torch.cuda.get_device_name()
    result = {
        "device": device,
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "setting": f"ResNet-{args.depth} last stride 1, BNNeck, CE+triplet, batch {args.batch}, "
        f"{args.height}x{args.width}",
        "repeats": args.repeats,
        "variants": {
            v: {
                "what": descs[v],
                "s_per_iter": statistics.median(walls[v]),
                "cpu_s_per_iter": statistics.median(cpus[v]),
                "all_s": walls[v],
            }
            for v in args.variants
        },
    }
    print(f"\nTraining step on {device} ({result['threads']} threads), {result['setting']}, "
          f"median of {args.repeats} interleaved steps")  # fmt: skip
    ref = "peer" if "peer" in steps else args.variants[-1]
    print(f"{'variant':<9} {'s/iter':>8} {'CPU s/iter':>11} {'speed-up vs ' + ref:>16}  what")
    for v, r in result["variants"].items():
        r["speedup_vs_" + ref] = result["variants"][ref]["s_per_iter"] / r["s_per_iter"]
        print(f"{v:<9} {r['s_per_iter']:8.3f} {r['cpu_s_per_iter']:11.3f} "
              f"{r['speedup_vs_' + ref]:15.2f}x  {r['what']}")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    from reid_plugins.utils.errors import run_cli

    raise SystemExit(run_cli(main))
