#!/usr/bin/env python
"""Cost of one M3L meta-iteration vs one baseline iteration (same model, batch, machine).

    python tools/benchmark_m3l.py                                  # tiny model, CPU
    python tools/benchmark_m3l.py --depth 50 --base-width 64 --height 256 --width 128 \\
        --batch 64 --device cuda                                   # the paper's setting

Every variant runs through :class:`reid_plugins.methods.m3l.trainer.MetaStepTrainer` on the
same :class:`~reid_plugins.methods.m3l.M3L` model and the same fixed batches (one per source
domain): ``baseline`` is ``META_LEARNING=False`` with the memory updated from the iteration's
own features (exactly ``ReIDBaseline``'s step, the DG baseline's own default), and
``baseline_forward`` the same with the authors' extra no-grad memory-update forward. M3L
variants: ``m3l_forward`` (the default configuration: the authors' outer gradient and
memory-update forward), ``m3l_batch`` (memory from the iteration's features), ``m3l_full``
(``OUTER_GRADIENT full``) and ``m3l_first_order``. Timed iterations of the variants are interleaved
so that load drift on a shared machine affects them alike; the median wall-clock (and CPU)
time per iteration is reported with the ratio to ``baseline`` and (``same-mode``) to the
baseline with the same memory update (target: <= 2.5x ``baseline``).

``--phases`` also times the parts of each iteration, by wrapping (not changing) the trainer's
pieces: the model's forward per stage (``standard``; ``meta_train``; ``meta_test``, which is
the functional call with theta'), ``inner_update`` (the create-graph gradient of L_mtr and the
inner step), the outer backward (the rest of ``_finish``: backward, gradient checks, metrics),
the optimiser step and the memory update.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` per variant (reset in between); on
CPU each variant runs in a fresh child process that, after one untimed iteration, resets the
kernel's peak-RSS counter (``/proc/self/clear_refs``; ``ru_maxrss`` where unavailable) and
reports the peak resident set size of the next iterations and its increase over the RSS held
between iterations (model, optimiser state, memories): the transient memory of an iteration.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from reid_plugins.utils.env import setup_environment  # noqa: E402

setup_environment()  # before torch is imported (OMP_WAIT_POLICY=PASSIVE unless set)

import torch  # noqa: E402

import reid_plugins.methods  # noqa: F401,E402  (registers the methods)
from reid_plugins.config import add_all_configs, get_cfg  # noqa: E402
from reid_plugins.methods.m3l import M3L, M3LMemoryLoss, MetaBNHead  # noqa: E402
from reid_plugins.methods.m3l.trainer import MetaStepTrainer  # noqa: E402
from reid_plugins.modeling.backbone import build_backbone  # noqa: E402
from reid_plugins.modeling.losses import MemoryLoss, TripletLoss  # noqa: E402
from reid_plugins.solver import build_optimizer  # noqa: E402
from reid_plugins.utils.events import EventStorage  # noqa: E402

VARIANTS = {
    # name: MetaStepTrainer keyword arguments (the rest are the defaults: OUTER_GRADIENT
    # authors, the memories' sequential update rule for M3L, Eq. 2's mean for the baselines)
    "baseline": dict(meta_learning=False, memory_update="batch"),
    "baseline_forward": dict(meta_learning=False, memory_update="forward"),
    "m3l_forward": dict(memory_update="forward"),  # the default configuration
    "m3l_batch": dict(memory_update="batch"),
    "m3l_full": dict(memory_update="forward", outer_gradient="full"),
    "m3l_first_order": dict(memory_update="forward", first_order=True),
}
DEFAULT_VARIANTS = ["baseline", "baseline_forward", "m3l_forward", "m3l_batch", "m3l_full"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--depth", type=int, default=18)
    p.add_argument("--base-width", type=int, default=16)
    p.add_argument("--ibn", action="store_true", help="IBN-Net-a blocks")
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--batch", type=int, default=32, help="images per domain (P x 4)")
    p.add_argument("--domains", type=int, default=3, help="source domains (>= 2)")
    p.add_argument("--ids", type=int, default=100, help="identities per domain memory")
    p.add_argument("--iters", type=int, default=5, help="timed iterations per variant")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations per variant")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--channels-last", action="store_true", help="model in channels-last (all variants)"
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    p.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    p.add_argument("--phases", action="store_true", help="also time the parts of an iteration")
    p.add_argument("--json", default="", help="also write the results to this file")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    p.add_argument("--_child", default="", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def build(args, variant: str):
    """Model, trainer and the fixed batches, identical for every variant (seeded)."""
    torch.manual_seed(0)
    cfg = add_all_configs(get_cfg())
    cfg.MODEL.BACKBONE.DEPTH = args.depth
    cfg.MODEL.BACKBONE.BASE_WIDTH = args.base_width
    cfg.MODEL.BACKBONE.WITH_IBN = args.ibn
    backbone = build_backbone(cfg)
    dim = backbone.output_shape()["res5"].channels
    kwargs = dict(VARIANTS[variant])
    # ReIDBaseline's memories (Eq. 2 mean) for the baselines, M3L's (authors' rule) otherwise
    mem_cls = MemoryLoss if not kwargs.get("meta_learning", True) else M3LMemoryLoss
    memory = mem_cls(num_pids_per_domain=[args.ids] * args.domains, feat_dim=dim)
    for d in range(args.domains):
        memory.initialize(d, torch.randn(args.ids, dim), torch.arange(args.ids))
    model = M3L(
        backbone=backbone,
        head=MetaBNHead(feat_dim=dim),
        pixel_mean=cfg.MODEL.PIXEL_MEAN,
        pixel_std=cfg.MODEL.PIXEL_STD,
        triplet_loss=TripletLoss(margin=0.3),
        memory_loss=memory,
    ).to(args.device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    gen = torch.Generator().manual_seed(1)
    batches = [
        [
            {
                "image": torch.rand(3, args.height, args.width, generator=gen) * 255,
                "pid": d * args.ids + i // 4,
                "domain_pid": i // 4,
                "domain": d,
            }
            for i in range(args.batch)
        ]
        for d in range(args.domains)
    ]

    def stream():
        while True:
            yield batches

    trainer = MetaStepTrainer(
        model,
        stream(),
        build_optimizer(cfg, model),
        **kwargs,
        inner_lr=3.5e-4,
        base_lr=cfg.SOLVER.BASE_LR,
        seed=0,
    )
    return trainer


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


PHASES = (
    "forward standard",
    "forward meta_train",
    "inner_update",
    "forward meta_test",
    "outer backward",
    "optimizer step",
    "memory update",
)


def instrument(trainer, device: str) -> dict:
    """Wrap the trainer's pieces to record seconds per phase (``{phase: [seconds, ...]}``).

    The outer backward is ``_finish`` minus the optimiser step and the memory update inside it.
    """
    rec = {k: [] for k in PHASES}

    def timed(fn, key):
        def wrapper(*args, **kwargs):
            _sync(device)
            t = time.perf_counter()
            out = fn(*args, **kwargs)
            _sync(device)
            k = key(kwargs) if callable(key) else key
            rec[k].append(time.perf_counter() - t)
            return out

        return wrapper

    module = trainer.module
    module.forward = timed(module.forward, lambda kw: "forward " + kw.get("stage", "standard"))
    trainer.inner_update = timed(trainer.inner_update, "inner_update")
    trainer.optimizer.step = timed(trainer.optimizer.step, "optimizer step")
    trainer.update_memories = timed(trainer.update_memories, "memory update")
    finish = trainer._finish

    def finish_wrapper(*args, **kwargs):
        n_opt, n_mem = len(rec["optimizer step"]), len(rec["memory update"])
        _sync(device)
        t = time.perf_counter()
        finish(*args, **kwargs)
        _sync(device)
        inner = sum(rec["optimizer step"][n_opt:]) + sum(rec["memory update"][n_mem:])
        rec["outer backward"].append(time.perf_counter() - t - inner)

    trainer._finish = finish_wrapper
    return rec


def step(trainer, device: str, it: int):
    trainer.iter = it
    _sync(device)
    w, c = time.perf_counter(), time.process_time()
    trainer.run_step()
    _sync(device)
    return time.perf_counter() - w, time.process_time() - c


def _proc_status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(key)


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def run_child(args) -> None:
    """One variant in a fresh process: peak RSS (CPU) during its iterations."""
    trainer = build(args, args._child)
    with EventStorage(0):
        step(trainer, args.device, 0)  # first iteration: lazy allocations, Adam state
        rss_before = _proc_status_mb("VmRSS")
        exact = _reset_peak_rss()
        for it in range(1, args.warmup + 2):
            step(trainer, args.device, it)
    peak = (
        _proc_status_mb("VmHWM")
        if exact
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    print(json.dumps({"peak_rss_mb": peak, "increase_mb": peak - rss_before}))


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args._child:
        run_child(args)
        return {}
    trainers = {v: build(args, v) for v in args.variants}
    times = {v: [] for v in args.variants}
    phases = {v: instrument(tr, args.device) for v, tr in trainers.items()} if args.phases else {}
    with EventStorage(0):
        for v, tr in trainers.items():
            for it in range(args.warmup):
                step(tr, args.device, it)
        for rec in phases.values():  # keep the timed iterations only
            for k in rec:
                rec[k].clear()
        for it in range(args.iters):  # interleaved rounds
            for v, tr in trainers.items():
                times[v].append(step(tr, args.device, args.warmup + it))
    memory = {}
    for v in args.variants:
        if args.no_memory:
            memory[v] = {}
        elif args.device.startswith("cuda"):
            tr = build(args, v)
            torch.cuda.reset_peak_memory_stats()
            with EventStorage(0):
                step(tr, args.device, 0)
            memory[v] = {"max_allocated_mb": torch.cuda.max_memory_allocated() / 2**20}
            del tr
        else:
            cmd = [sys.executable, os.path.abspath(__file__), "--_child", v] + [
                a for a in (argv if argv is not None else sys.argv[1:])
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            memory[v] = json.loads(out.strip().splitlines()[-1])
    base_wall = statistics.median(t[0] for t in times.get("baseline", [(1.0, 1.0)]))
    base_cpu = statistics.median(t[1] for t in times.get("baseline", [(1.0, 1.0)]))
    results = {
        "settings": {k: v for k, v in vars(args).items() if not k.startswith("_")},
        "torch_threads": torch.get_num_threads(),
        "variants": {},
    }
    print(
        f"M3L benchmark: ResNet-{args.depth}{'-IBN' if args.ibn else ''} width "
        f"{args.base_width}, {args.domains} domains x {args.batch} images of "
        f"{args.height}x{args.width}, {args.device}, {torch.get_num_threads()} threads, "
        f"median of {args.iters} interleaved iterations"
    )
    print(
        f"{'variant':<17}{'wall s/it':>10}{'ratio':>7}{'cpu s/it':>10}{'ratio':>7}"
        f"{'same-mode':>10}  memory"
    )
    for v in args.variants:
        wall = statistics.median(t[0] for t in times[v])
        cpu = statistics.median(t[1] for t in times[v])
        # the baseline with the same memory update as this variant (the paper's baseline is
        # M3L without meta-learning, i.e. with the same memory update)
        twin = "baseline_forward" if VARIANTS[v]["memory_update"] == "forward" else "baseline"
        twin_wall = statistics.median(t[0] for t in times[twin]) if twin in times else None
        results["variants"][v] = {
            "wall_s": wall,
            "cpu_s": cpu,
            "wall_ratio": wall / base_wall,
            "cpu_ratio": cpu / base_cpu,
            "wall_ratio_same_memory_update": wall / twin_wall if twin_wall else None,
            "memory": memory[v],
            "all_wall_s": [t[0] for t in times[v]],
        }
        mem = ", ".join(f"{k} {val:.0f}" for k, val in memory[v].items())
        same = f"{wall / twin_wall:>10.2f}" if twin_wall else f"{'-':>10}"
        print(
            f"{v:<17}{wall:>10.3f}{wall / base_wall:>7.2f}{cpu:>10.3f}{cpu / base_cpu:>7.2f}"
            f"{same}  {mem}"
        )
    if phases:
        print("\nmedian ms per iteration and phase (- = not in this variant):")
        print(f"{'phase':<20}" + "".join(f"{v:>17}" for v in args.variants))
        for k in PHASES:
            cells = []
            for v in args.variants:
                vals = phases[v][k]
                n = len(vals) // max(args.iters, 1)  # calls per iteration (1, or 0)
                cells.append(f"{statistics.median(vals) * 1e3 * n:>17.1f}" if n else f"{'-':>17}")
            print(f"{k:<20}" + "".join(cells))
        for v in args.variants:
            results["variants"][v]["phases_ms"] = {
                k: statistics.median(vals) * 1e3 for k, vals in phases[v].items() if vals
            }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    from reid_plugins.utils.errors import run_cli

    raise SystemExit(run_cli(main))
