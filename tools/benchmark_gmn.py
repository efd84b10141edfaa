#!/usr/bin/env python
"""Benchmark GMN's test-time scoring on a Market-1501-size problem (CPU by default).

Runs the real evaluation path (:func:`reid_plugins.evaluation.evaluate_features`, chunked
distances + ranking, i.e. what ``ReIDEvaluator`` does) with random 2048-d features and
Market-like labels, in three modes, each in its own subprocess so that the peak resident
memory (``ru_maxrss``) is that mode's own:

* ``cosine``: plain cosine ranking (M-Net off at test time);
* ``topk``: M-Net re-scores each query's ``--topk`` nearest gallery items;
* ``full``: M-Net scores every query-gallery pair. Its cost grows linearly with the number
  of queries (each query chunk is independent), so by default it runs on the first
  ``--full-queries`` queries only and extrapolates the time to all queries; ``--full-queries
  0`` runs all of them.

    python tools/benchmark_gmn.py                       # 3368 x 15913, 2048-d, k = 100
    python tools/benchmark_gmn.py --full-queries 0      # full scoring of every query (slow)
    python tools/benchmark_gmn.py --modes cosine topk --hidden 512 128 --repeat 3

Prints a table and, with ``--output``, writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from reid_plugins.utils.env import setup_environment  # noqa: E402

setup_environment()  # before torch is imported (OMP_WAIT_POLICY=PASSIVE unless set)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--num-query", type=int, default=3368)
    p.add_argument("--num-gallery", type=int, default=15913)
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument(
        "--hidden",
        type=int,
        nargs="*",
        default=[256, 128],
        help="M-Net hidden widths (MODEL.GMN.MNET.HIDDEN_DIMS)",
    )
    p.add_argument("--topk", type=int, default=100, help="MODEL.GMN.TEST.TOPK of the top-k mode")
    p.add_argument(
        "--full-queries",
        type=int,
        default=32,
        help="queries scored in full mode (0 = all); the time is extrapolated",
    )
    p.add_argument("--chunk-size", type=int, default=1024, help="TEST.CHUNK_SIZE (queries)")
    p.add_argument("--pair-chunk", type=int, default=16384, help="MODEL.GMN.TEST.PAIR_CHUNK")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--modes", nargs="+", default=["cosine", "topk", "full"], choices=["cosine", "topk", "full"]
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="runs per mode; the fastest is reported (the machine may be shared)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="", help="write the results as JSON here")
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _problem(args, device):
    import numpy as np
    import torch

    g = torch.Generator().manual_seed(args.seed)
    num_ids = 750
    centres = torch.randn(num_ids, args.dim, generator=g)
    qp = torch.randint(0, num_ids, (args.num_query,), generator=g)
    gp = torch.randint(0, num_ids, (args.num_gallery,), generator=g)
    q = centres[qp] + 1.5 * torch.randn(args.num_query, args.dim, generator=g)
    gal = centres[gp] + 1.5 * torch.randn(args.num_gallery, args.dim, generator=g)
    rng = np.random.default_rng(args.seed)
    qc, gc = rng.integers(0, 6, args.num_query), rng.integers(0, 6, args.num_gallery)
    return q.to(device), gal.to(device), qp.numpy(), gp.numpy(), qc, gc


def run_worker(args) -> dict:
    """One mode in this process; returns its timings and peak memory."""
    import torch

    from reid_plugins.evaluation import evaluate_features
    from reid_plugins.methods.gmn import MetricNet
    from reid_plugins.methods.gmn.model import fused_pairwise_distance

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    mode = args.worker
    q, g, qp, gp, qc, gc = _problem(args, device)
    nq = args.num_query
    if mode == "full" and 0 < args.full_queries < nq:
        nq = args.full_queries
        q, qp, qc = q[:nq], qp[:nq], qc[:nq]
    torch.manual_seed(args.seed)
    mnet = MetricNet(in_dim=args.dim, hidden_dims=args.hidden).to(device).eval()
    k = args.topk if mode == "topk" else 0

    def fused(qc_, g_):
        return fused_pairwise_distance(mnet, qc_, g_, topk=k, pair_chunk=args.pair_chunk)

    fn = None if mode == "cosine" else fused
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    times = []
    for _ in range(max(1, args.repeat)):
        start = time.perf_counter()
        res = evaluate_features(
            q,
            g,
            qp,
            gp,
            qc,
            gc,
            "cosine",
            50,
            args.chunk_size,
            pairwise_fn=fn,
            device=device,
            progress=True,
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    seconds = min(times)
    out = {
        "all_seconds": times,
        "mode": mode,
        "queries_run": nq,
        "seconds": seconds,
        "seconds_all_queries": seconds * args.num_query / nq,
        "extrapolated": nq < args.num_query,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "rss_before_gb": rss0,
        "mAP": res["mAP"],
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        out["peak_cuda_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(run_worker(args)), flush=True)
        return 0
    base = [a for a in (argv if argv is not None else sys.argv[1:])]
    results = []
    for mode in args.modes:
        cmd = [sys.executable, os.path.abspath(__file__), *base, "--worker", mode]
        print(f"== {mode}: {' '.join(cmd[1:])}", flush=True)
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode != 0 or not line:
            print(proc.stdout)
            raise SystemExit(f"benchmark worker '{mode}' failed (exit code {proc.returncode})")
        results.append(json.loads(line[-1][len("RESULT ") :]))
        r = results[-1]
        print(
            f"   {r['seconds']:.1f} s on {r['queries_run']} queries, peak RSS "
            f"{r['peak_rss_gb']:.2f} GB",
            flush=True,
        )
    by_mode = {r["mode"]: r for r in results}
    print(
        f"\n{args.num_query} queries x {args.num_gallery} gallery, {args.dim}-d, M-Net "
        f"{[args.dim] + args.hidden + [1]}, k={args.topk}, query chunk {args.chunk_size}, "
        f"pair chunk {args.pair_chunk}, device {args.device}, "
        f"threads {results[0]['torch_threads']}"
    )
    print("| mode | queries run | time (s) | time for all queries (s) | peak RSS (GB) |")
    print("|------|-------------|----------|--------------------------|---------------|")
    for r in results:
        est = f"{r['seconds_all_queries']:.1f}" + (" (extrapolated)" if r["extrapolated"] else "")
        print(
            f"| {r['mode']} | {r['queries_run']} | {r['seconds']:.1f} | {est} | "
            f"{r['peak_rss_gb']:.2f} |"
        )
    if "cosine" in by_mode and "topk" in by_mode:
        ratio = by_mode["topk"]["seconds"] / by_mode["cosine"]["seconds"]
        print(f"top-k / cosine time ratio: {ratio:.2f} (target <= 3)")
    if args.output:
        with open(args.output, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    from reid_plugins.utils.errors import run_cli

    raise SystemExit(run_cli(main))
