#!/usr/bin/env python
"""Speed / memory of k-reciprocal re-ranking against a restatement of the released code.

Market-1501 size by default (3,368 queries x 15,913 gallery, 2,048-d synthetic features,
cosine distances, k1 = 20, k2 = 6, lambda = 0.3). Two subprocesses, run one after the other,
each timing one implementation on the same three distance matrices:

* ``reference``: a dense restatement of the authors' released ``re_ranking`` (the copy in
  torchreid): the full N x N pool matrix, a full ``argsort`` of it, dense ``V`` and ``V_qe``,
  Python loops over the rows and the queries.
* ``ours``: :func:`reid_plugins.evaluation.rerank.re_ranking` (sparse, streamed row blocks).

Reported per implementation: wall and process CPU seconds of the re-ranking call, and the
peak RSS from the start of the call (``VmHWM`` reset just before it; it includes the ~1.3 GB
of input distance matrices and the features). The two outputs must agree to 1e-6. Examples::

    python tools/benchmark_rerank.py                 # Market size (the reference needs ~9 GB)
    python tools/benchmark_rerank.py --scale 0.2     # quick run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from reid_plugins.utils.env import setup_environment  # noqa: E402

setup_environment()  # before torch is imported (OMP_WAIT_POLICY=PASSIVE unless set)

import numpy as np  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--queries", type=int, default=3368)
    p.add_argument("--gallery", type=int, default=15913)
    p.add_argument("--scale", type=float, default=1.0, help="multiply both set sizes")
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--ids", type=int, default=751)
    p.add_argument("--k1", type=int, default=20)
    p.add_argument("--k2", type=int, default=6)
    p.add_argument("--lam", type=float, default=0.3)
    p.add_argument("--threads", type=int, default=1, help="BLAS / OpenMP threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", choices=["ours", "reference"], help="run one implementation")
    p.add_argument("--_child", choices=["ours", "reference"], help=argparse.SUPPRESS)
    p.add_argument("--_dir", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def distances(args):
    """Cosine distance matrices of synthetic identity-clustered features (float32)."""
    rng = np.random.default_rng(args.seed)
    nq, ng = int(args.queries * args.scale), int(args.gallery * args.scale)
    centres = rng.standard_normal((args.ids, args.dim), dtype=np.float32)

    def feats(n):
        f = centres[rng.integers(0, args.ids, n)] * np.float32(0.5)
        f += rng.standard_normal((n, args.dim), dtype=np.float32)
        return f / np.linalg.norm(f, axis=1, keepdims=True)

    q, g = feats(nq), feats(ng)
    out = []
    for a, b in ((q, g), (q, q), (g, g)):
        d = a @ b.T
        np.subtract(1, d, out=d)  # no second N x N temporary
        out.append(d)
    return tuple(out)


def _reset_peak_rss() -> bool:
    """Reset the process's peak RSS (VmHWM) so that it covers only what follows (Linux)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_gb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0**2
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0**2


def reference_re_ranking(q_g, q_q, g_g, k1, k2, lam):
    """Dense restatement of the authors' released ``re_ranking`` (same data structures)."""
    nq, n = q_g.shape[0], q_g.shape[0] + q_g.shape[1]
    d = np.concatenate([np.concatenate([q_q, q_g], 1), np.concatenate([q_g.T, g_g], 1)], 0)
    d = np.power(d, 2).astype(np.float32)
    d = np.transpose(d / np.max(d, axis=0))
    v = np.zeros_like(d, dtype=np.float32)
    rank = np.argsort(d).astype(np.int32)
    half = int(np.around(k1 / 2.0))

    def reciprocal(i, k):
        fwd = rank[i, : k + 1]
        return fwd[np.where(rank[fwd, : k + 1] == i)[0]]

    for i in range(n):
        r = reciprocal(i, k1)
        expanded = r
        for c in r:
            rc = reciprocal(c, half)
            if len(np.intersect1d(rc, r)) > 2.0 / 3 * len(rc):
                expanded = np.append(expanded, rc)
        expanded = np.unique(expanded)
        w = np.exp(-d[i, expanded])
        v[i, expanded] = w / np.sum(w)
    d = d[:nq]
    if k2 != 1:
        v_qe = np.zeros_like(v, dtype=np.float32)
        for i in range(n):
            v_qe[i] = np.mean(v[rank[i, :k2]], axis=0)
        v = v_qe
        del v_qe
    del rank
    inv = [np.where(v[:, j] != 0)[0] for j in range(n)]
    jac = np.zeros_like(d, dtype=np.float32)
    for i in range(nq):
        s = np.zeros((1, n), dtype=np.float32)
        nz = np.where(v[i] != 0)[0]
        for j in nz:
            s[0, inv[j]] += np.minimum(v[i, j], v[inv[j], j])
        jac[i] = 1 - s / (2.0 - s)
    return (jac * (1 - lam) + d * lam)[:, nq:]


def child(args):
    from reid_plugins.evaluation.rerank import re_ranking

    q_g, q_q, g_g = distances(args)
    fn = reference_re_ranking if args._child == "reference" else re_ranking
    reset = _reset_peak_rss()  # the peak then covers the inputs and the re-ranking only
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn(q_g, q_q, g_g, args.k1, args.k2, args.lam)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rss = _peak_rss_gb()
    np.save(os.path.join(args._dir, f"{args._child}.npy"), np.asarray(out, np.float32))
    print(
        json.dumps(
            {
                "wall_s": wall,
                "cpu_s": cpu,
                "peak_rss_gb": rss,
                "rss_reset": reset,
                "shape": out.shape,
            }
        )
    )


def main(argv=None):
    args = parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    if args._child:
        return child(args)
    base = [a for a in (argv if argv is not None else sys.argv[1:])]
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in [args.only] if args.only else ["ours", "reference"]:
            cmd = [sys.executable, os.path.abspath(__file__), *base, "--_child", name]
            out = subprocess.run(cmd + ["--_dir", tmp], capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
            res[name] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"  {name}: {res[name]}", flush=True)
        if args.only:
            return
        a, b = np.load(os.path.join(tmp, "ours.npy")), np.load(os.path.join(tmp, "reference.npy"))
        diff = float(np.abs(a - b).max())
    nq, ng = int(args.queries * args.scale), int(args.gallery * args.scale)
    print(
        f"\n{nq} x {ng}, k1={args.k1} k2={args.k2} lambda={args.lam}, max |ours - ref| {diff:.2e}"
    )
    print("| implementation | wall s | CPU s | peak RSS GB |")
    print("|---|---|---|---|")
    for name, r in res.items():
        print(f"| {name} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['peak_rss_gb']:.2f} |")
    ratio = res["reference"]["cpu_s"] / res["ours"]["cpu_s"]
    print(f"CPU speed-up {ratio:.1f}x")
    if diff > 1e-6:
        raise SystemExit(f"outputs differ by {diff:.2e} > 1e-6")


if __name__ == "__main__":
    from reid_plugins.utils.errors import run_cli

    raise SystemExit(run_cli(main))
