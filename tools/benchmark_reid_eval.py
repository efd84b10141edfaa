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

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

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
    p.add_argument("--market-query", type=int, default=3368)
    p.add_argument("--market-gallery", type=int, default=15913)
    p.add_argument("--market-pids", type=int, default=751)
    p.add_argument("--market-cams", type=int, default=6)
    p.add_argument("--market-distractors", type=float, default=0.176,
                   help="fraction of gallery samples with distractor pid 0")
    p.add_argument("--msmt-query", type=int, default=11659)
    p.add_argument("--msmt-gallery", type=int, default=82161)
    p.add_argument("--msmt-pids", type=int, default=3060)
    p.add_argument("--msmt-cams", type=int, default=15)
    p.add_argument("--signal", type=float, default=0.25,
                   help="identity-centre weight in the synthetic features (0 = pure noise)")
    p.add_argument("--in-process", action="store_true",
                   help="run scenarios in this process (ru_maxrss then covers all of them)")
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


def run_market(args, rng):
    s = args.scale
    nq, ng = int(args.market_query * s), int(args.market_gallery * s)
    q, g, qp, gp, qc, gc = make_set(
        rng, nq, ng, int(args.market_pids * s), args.market_cams, args.market_distractors,
        args.dim, args.signal,
    )
    rows = []
    tracemalloc.start()
    t0 = time.perf_counter()
    dist = compute_distance(torch.from_numpy(q), torch.from_numpy(g), args.metric).numpy()
    t1 = time.perf_counter()
    res = evaluate_rank(dist, qp, gp, qc, gc, 50)
    t2 = time.perf_counter()
    peak = tracemalloc.get_traced_memory()[1] / _MB
    tracemalloc.stop()
    rows.append(dict(scenario="market full matrix", nq=nq, ng=ng, dist_s=t1 - t0, rank_s=t2 - t1,
                     total_s=t2 - t0, numpy_peak_mb=peak, mAP=res["mAP"], r1=res["cmc"][0]))
    del dist
    tracemalloc.start()
    t0 = time.perf_counter()
    res2 = evaluate_features(q, g, qp, gp, qc, gc, args.metric, 50, args.chunk_size)
    t1 = time.perf_counter()
    peak = tracemalloc.get_traced_memory()[1] / _MB
    tracemalloc.stop()
    assert np.array_equal(res2["all_AP"], res["all_AP"]), "streamed != full-matrix result"
    rows.append(dict(scenario="market streamed", nq=nq, ng=ng, dist_s=None, rank_s=None,
                     total_s=t1 - t0, numpy_peak_mb=peak, mAP=res2["mAP"], r1=res2["cmc"][0]))
    for r in rows:
        r["maxrss_mb"] = maxrss_mb()
    return rows


def run_msmt(args, rng):
    s = args.scale
    nq, ng = int(args.msmt_query * s), int(args.msmt_gallery * s)
    q, g, qp, gp, qc, gc = make_set(
        rng, nq, ng, int(args.msmt_pids * s), args.msmt_cams, 0.0, args.dim, args.signal
    )
    base_rss = rss_now_mb()
    tracemalloc.start()
    t0 = time.perf_counter()
    res = evaluate_features(q, g, qp, gp, qc, gc, args.metric, 50, args.chunk_size, progress=True)
    t1 = time.perf_counter()
    peak = tracemalloc.get_traced_memory()[1] / _MB
    tracemalloc.stop()
    return [dict(scenario="msmt streamed", nq=nq, ng=ng, dist_s=None, rank_s=None,
                 total_s=t1 - t0, numpy_peak_mb=peak, maxrss_mb=maxrss_mb(),
                 rss_before_eval_mb=base_rss, mAP=res["mAP"], r1=res["cmc"][0])]


def print_table(rows, args):
    def f(x, fmt):
        return "-" if x is None else format(x, fmt)

    print(f"\nReID evaluation benchmark: dim={args.dim}, metric={args.metric}, "
          f"chunk_size={args.chunk_size}, torch threads={rows[0].get('threads', '?')}, "
          f"cpus={os.cpu_count()}")
    head = (f"{'scenario':<20}{'queries':>9}{'gallery':>9}{'dist s':>9}{'rank s':>9}"
            f"{'total s':>9}{'np peak MB':>12}{'maxrss MB':>11}{'mAP':>8}{'R-1':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['scenario']:<20}{r['nq']:>9}{r['ng']:>9}{f(r['dist_s'], '.2f'):>9}"
              f"{f(r['rank_s'], '.2f'):>9}{r['total_s']:>9.2f}{r['numpy_peak_mb']:>12.0f}"
              f"{r['maxrss_mb']:>11.0f}{100 * r['mAP']:>8.2f}{100 * r['r1']:>8.2f}")
    for r in rows:
        if "rss_before_eval_mb" in r:
            print(f"({r['scenario']}: RSS with features loaded, before evaluation: "
                  f"{r['rss_before_eval_mb']:.0f} MB; ru_maxrss is the whole process's peak)")


def run_scenarios(args, names):
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    rows = []
    for name in names:
        rng = np.random.default_rng(args.seed)
        rows += run_market(args, rng) if name == "market" else run_msmt(args, rng)
    for r in rows:
        r["threads"] = torch.get_num_threads()
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
    main()
