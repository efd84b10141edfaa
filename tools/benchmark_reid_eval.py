#!/usr/bin/env python
"""Speed / memory benchmark of the ReID evaluation (distances + CMC / mAP / mINP).

Two scenarios on synthetic features (identity centres + Gaussian noise, float32), with pids
and cameras drawn to mimic the real test sets:

* ``market``: Market-1501 size (3,368 queries x 15,913 gallery, 751 ids, 6 cameras, ~17.6 %
  distractors with pid 0). Times the full distance matrix (``compute_distance``) plus
  ``evaluate_rank`` on it (target: under 5 s on 2 cores), and the streamed
  ``evaluate_features``.
* ``msmt``: MSMT17 size (11,659 x 82,161, 3,060 ids, 15 cameras), streamed only
  (``evaluate_features``, never materialising the 11,659 x 82,161 matrix). Reports the numpy
  peak traced by ``tracemalloc`` during the evaluation and the process peak RSS
  (``resource.getrusage().ru_maxrss``, which includes the features themselves); target < 4 GB.

Each scenario runs in a fresh subprocess so that ``ru_maxrss`` is its own. Examples::

    python tools/benchmark_reid_eval.py                 # both, full size
    python tools/benchmark_reid_eval.py --scale 0.1     # quick run
    python tools/benchmark_reid_eval.py --only market --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from reid_plugins.utils.env import setup_environment  # noqa: E402

setup_environment()  # before torch is imported (OMP_WAIT_POLICY=PASSIVE unless set)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from reid_plugins.evaluation.distance import compute_distance  # noqa: E402
from reid_plugins.evaluation.rank import evaluate_features, evaluate_rank  # noqa: E402

_MB = 1024.0**2


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", choices=["market", "msmt", "all"], default="all")
    p.add_argument("--scale", type=float, default=1.0, help="multiply all set sizes and id counts")
    p.add_argument("--dim", type=int, default=2048, help="feature dimension")
    p.add_argument("--metric", choices=["cosine", "euclidean"], default="cosine")
    p.add_argument("--chunk-size", type=int, default=1024, help="queries per streamed chunk")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=1, help="timed runs of the market scenario")
    p.add_argument("--market-query", type=int, default=3368)
    p.add_argument("--market-gallery", type=int, default=15913)
    p.add_argument("--market-pids", type=int, default=751)
    p.add_argument("--market-cams", type=int, default=6)
    p.add_argument(
        "--market-distractors",
        type=float,
        default=0.176,
        help="fraction of gallery samples with distractor pid 0",
    )
    p.add_argument("--msmt-query", type=int, default=11659)
    p.add_argument("--msmt-gallery", type=int, default=82161)
    p.add_argument("--msmt-pids", type=int, default=3060)
    p.add_argument("--msmt-cams", type=int, default=15)
    p.add_argument(
        "--signal",
        type=float,
        default=0.25,
        help="identity-centre weight in the synthetic features (0 = pure noise)",
    )
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run scenarios in this process (ru_maxrss then covers all of them)",
    )
    p.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def make_set(rng, nq, ng, npids, ncams, distractor_frac, dim, signal):
    """Synthetic features/labels: every id has >= 1 query; gallery ids uniform + distractors."""
    npids = max(1, min(npids, nq))
    qp = np.concatenate([np.arange(1, npids + 1), rng.integers(1, npids + 1, nq - npids)])
    gp = rng.integers(1, npids + 1, ng)
    gp[rng.random(ng) < distractor_frac] = 0
    qc, gc = rng.integers(0, ncams, nq), rng.integers(0, ncams, ng)
    centres = rng.standard_normal((npids + 1, dim), dtype=np.float32) * np.float32(signal)

    def feats(pids):
        out = np.empty((len(pids), dim), dtype=np.float32)
        for s in range(0, len(pids), 8192):  # no full-size temporary
            blk = rng.standard_normal((min(8192, len(pids) - s), dim), dtype=np.float32)
            blk /= np.float32(np.sqrt(dim))
            blk += centres[pids[s : s + 8192]] / np.float32(np.sqrt(dim))
            out[s : s + 8192] = blk
        return out

    return feats(qp), feats(gp), qp, gp, qc, gc


def rss_now_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def maxrss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def measure(fn, repeat=1):
    """Run ``fn`` ``repeat`` times; returns its last result and per-run timings / numpy peak."""
    walls, cpus, peaks, out = [], [], [], None
    for _ in range(repeat):
        out = None  # free the previous result first
        tracemalloc.start()
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        peaks.append(tracemalloc.get_traced_memory()[1] / _MB)
        tracemalloc.stop()
    return out, dict(
        wall_s=float(np.median(walls)),
        best_s=min(walls),
        cpu_s=float(np.median(cpus)),
        numpy_peak_mb=max(peaks),
    )


def run_market(args, rng):
    s = args.scale
    nq, ng = int(args.market_query * s), int(args.market_gallery * s)
    q, g, qp, gp, qc, gc = make_set(
        rng,
        nq,
        ng,
        int(args.market_pids * s),
        args.market_cams,
        args.market_distractors,
        args.dim,
        args.signal,
    )
    qt, gt = torch.from_numpy(q), torch.from_numpy(g)
    rows = []
    split = {}

    def full():
        t0 = time.perf_counter()
        dist = compute_distance(qt, gt, args.metric).numpy()
        t1 = time.perf_counter()
        res = evaluate_rank(dist, qp, gp, qc, gc, 50)
        split.setdefault("dist", []).append(t1 - t0)
        split.setdefault("rank", []).append(time.perf_counter() - t1)
        return res

    res, m = measure(full, args.repeat)
    m.update(dist_s=float(np.median(split["dist"])), rank_s=float(np.median(split["rank"])))
    rows.append(dict(scenario="market full matrix", nq=nq, ng=ng, mAP=res["mAP"], **m))
    ap_full = res["all_AP"]
    res, m = measure(
        lambda: evaluate_features(q, g, qp, gp, qc, gc, args.metric, 50, args.chunk_size),
        args.repeat,
    )
    assert np.array_equal(res["all_AP"], ap_full), "streamed != full-matrix result"
    rows.append(dict(scenario="market streamed", nq=nq, ng=ng, mAP=res["mAP"], **m))
    for r in rows:
        r["r1"] = float(res["cmc"][0])
        r["maxrss_mb"] = maxrss_mb()
    return rows


def run_msmt(args, rng):
    s = args.scale
    nq, ng = int(args.msmt_query * s), int(args.msmt_gallery * s)
    q, g, qp, gp, qc, gc = make_set(
        rng, nq, ng, int(args.msmt_pids * s), args.msmt_cams, 0.0, args.dim, args.signal
    )
    base_rss = rss_now_mb()
    res, m = measure(
        lambda: evaluate_features(
            q, g, qp, gp, qc, gc, args.metric, 50, args.chunk_size, progress=True
        )
    )
    row = dict(scenario="msmt streamed", nq=nq, ng=ng, mAP=res["mAP"], r1=float(res["cmc"][0]))
    row.update(m, maxrss_mb=maxrss_mb(), rss_before_eval_mb=base_rss)
    return [row]


def print_table(rows, args):
    def f(x, fmt):
        return "-" if x is None else format(x, fmt)

    print(
        f"\nReID evaluation benchmark: dim={args.dim}, metric={args.metric}, "
        f"chunk_size={args.chunk_size}, torch threads={rows[0].get('threads', '?')}, "
        f"cpus={os.cpu_count()}, load average at start={rows[0].get('load', '?')}"
    )
    head = (
        f"{'scenario':<20}{'queries':>8}{'gallery':>8}{'dist s':>8}{'rank s':>8}"
        f"{'wall s':>8}{'best s':>8}{'cpu s':>8}{'np peak MB':>11}{'maxrss MB':>10}"
        f"{'mAP':>7}{'R-1':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['scenario']:<20}{r['nq']:>8}{r['ng']:>8}{f(r.get('dist_s'), '.2f'):>8}"
            f"{f(r.get('rank_s'), '.2f'):>8}{r['wall_s']:>8.2f}{r['best_s']:>8.2f}"
            f"{r['cpu_s']:>8.2f}{r['numpy_peak_mb']:>11.0f}{r['maxrss_mb']:>10.0f}"
            f"{100 * r['mAP']:>7.2f}{100 * r['r1']:>7.2f}"
        )
    print(
        f"(wall s = median over --repeat {args.repeat} runs, best s = fastest, cpu s = process "
        "CPU time; np peak = tracemalloc peak of numpy allocations during evaluation; maxrss = "
        "process peak RSS incl. features and torch)"
    )
    for r in rows:
        if "rss_before_eval_mb" in r:
            print(
                f"({r['scenario']}: RSS with features loaded, before evaluation: "
                f"{r['rss_before_eval_mb']:.0f} MB)"
            )


def run_scenarios(args, names):
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    torch.mm(torch.ones(64, 64), torch.ones(64, 64))  # start the BLAS thread pool
    load = "%.1f" % os.getloadavg()[0]
    rows = []
    for name in names:
        rng = np.random.default_rng(args.seed)
        rows += run_market(args, rng) if name == "market" else run_msmt(args, rng)
    for r in rows:
        r["threads"] = torch.get_num_threads()
        r["load"] = load
    return rows


def main(argv=None):
    args = parse_args(argv)
    names = ["market", "msmt"] if args.only == "all" else [args.only]
    if args._child or args.in_process:
        rows = run_scenarios(args, names)
        if args._child:
            print("RESULT " + json.dumps(rows))
            return
    else:
        rows = []
        base = [a for a in (argv if argv is not None else sys.argv[1:]) if a]
        for name in names:
            cmd = [sys.executable, os.path.abspath(__file__), *base, "--only", name, "--_child"]
            out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True).stdout
            rows += json.loads(next(ln for ln in out.splitlines() if ln.startswith("RESULT "))[7:])
    print_table(rows, args)


if __name__ == "__main__":
    from reid_plugins.utils.errors import run_cli

    raise SystemExit(run_cli(main))
