#!/usr/bin/env python
"""Benchmark the person-search evaluation maths at CUHK-SYSU / PRW size.

Random cached detections and features stand in for a model's outputs: 6,978 gallery images
with 5-10 detections each (CUHK-SYSU test pool), 2,900 queries whose TestG-style gallery has
100 images, D = 2048 (TDN) or 256 (OIM, ``--dim 256``). Query features are noisy copies of one
gallery detection so the metrics are not trivial. Prints a table of wall-clock times.

    python tools/benchmark_search_eval.py --threads 2 [--dim 256] [--rcp] [--prw]

Target: gallery 100 in under 30 s on 2 cores.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from reid_plugins.utils.env import setup_environment  # noqa: E402

setup_environment()  # before torch is imported (OMP_WAIT_POLICY=PASSIVE unless set)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dim", type=int, default=2048, help="feature dimension (2048 TDN, 256 OIM)")
    p.add_argument("--images", type=int, default=6978, help="gallery images")
    p.add_argument("--queries", type=int, default=2900)
    p.add_argument("--gallery-size", type=int, default=100)
    p.add_argument("--min-dets", type=int, default=5)
    p.add_argument("--max-dets", type=int, default=10)
    p.add_argument("--threads", type=int, default=2, help="BLAS threads (set before numpy loads)")
    p.add_argument("--rcp", action="store_true", help="also time RCP (3 context persons/query)")
    p.add_argument("--prw", action="store_true", help="also time PRW size (2,057 x 6,112 frames)")
    p.add_argument("--skip-full", action="store_true", help="skip the full-set run")
    p.add_argument("--cache", default="", help="npz file to load/save the random dets/features")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def make_data(args, np):
    rng = np.random.default_rng(args.seed)
    counts = rng.integers(args.min_dets, args.max_dets + 1, args.images)
    total = int(counts.sum())
    xy = rng.uniform(0, 800, (total, 2)).astype(np.float32)
    wh = rng.uniform(20, 200, (total, 2)).astype(np.float32) * [0.5, 1.0]
    scores = rng.uniform(0.3, 1.0, total).astype(np.float32)  # ~30% below det_thresh 0.5
    dets = np.c_[xy, xy + wh, scores].astype(np.float32)
    feats = rng.standard_normal((total, args.dim), dtype=np.float32)
    return counts, dets, feats


def build(args, np, counts, dets, feats):
    rng = np.random.default_rng(args.seed + 1)
    names = [f"s{i}.jpg" for i in range(args.images)]
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    gallery = {n: (dets[s : s + c], feats[s : s + c]) for n, s, c in zip(names, starts, counts)}
    qimgs, qfeats, protocol, contexts = [], [], [], []
    for _ in range(args.queries):
        own = int(rng.integers(args.images))
        n_pos = int(rng.integers(1, 5))
        others = rng.choice(args.images - 1, size=args.gallery_size, replace=False)
        others = np.where(others >= own, others + 1, others)
        entries = []
        for k, g in enumerate(others):
            box = None
            if k < n_pos:
                j = starts[g] + int(rng.integers(counts[g]))
                box = (dets[j, :4] + rng.uniform(-5, 5, 4)).tolist()
                if k == 0:
                    qfeats.append(feats[j] + 0.8 * rng.standard_normal(args.dim).astype(np.float32))
            entries.append((names[g], box))
        qimgs.append(names[own])
        protocol.append(entries)
        ctx = starts[own] + rng.integers(counts[own], size=3)
        contexts.append(feats[ctx])
    return gallery, names, qimgs, np.stack(qfeats), protocol, contexts


def main(argv=None):
    args = parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import numpy as np

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from reid_plugins.evaluation.search_metrics import SearchGallery, search_cuhk_sysu, search_prw

    t0 = time.perf_counter()
    if args.cache and os.path.exists(args.cache):
        z = np.load(args.cache)
        counts, dets, feats = z["counts"], z["dets"], z["feats"]
    else:
        counts, dets, feats = make_data(args, np)
        if args.cache:
            np.savez(args.cache, counts=counts, dets=dets, feats=feats)
    gallery, names, qimgs, qfeats, protocol, contexts = build(args, np, counts, dets, feats)
    t_data = time.perf_counter() - t0
    print(
        f"data: {args.images} images, {len(dets)} detections ({(dets[:, 4] >= 0.5).sum()} kept), "
        f"{args.queries} queries, D={args.dim}, threads={args.threads} ({t_data:.1f}s to prepare)"
    )
    rows = []

    def timed(label, fn, ranked):
        t = time.perf_counter()
        res = fn()
        rows.append((label, ranked, time.perf_counter() - t, res["mAP"], res["top-1"]))
        print(f"  done: {label} ({rows[-1][2]:.1f}s)", flush=True)

    t = time.perf_counter()
    sg = SearchGallery(gallery, 0.5)
    rows.append(
        (
            "index gallery (det_thresh 0.5)",
            len(sg.scores),
            time.perf_counter() - t,
            float("nan"),
            float("nan"),
        )
    )
    per_q = int(np.mean([sg.counts[[sg.index[e[0]] for e in p]].sum() for p in protocol[:200]]))
    timed(
        f"CUHK-SYSU gallery {args.gallery_size}",
        lambda: search_cuhk_sysu(qfeats, qimgs, sg, protocol),
        per_q,
    )
    if args.rcp:
        timed(
            f"CUHK-SYSU gallery {args.gallery_size} + RCP",
            lambda: search_cuhk_sysu(
                qfeats, qimgs, sg, protocol, rcp=(0.3, 0.2), query_context_feats=contexts
            ),
            per_q,
        )
    if not args.skip_full:
        full = len(sg.scores)
        timed(
            "CUHK-SYSU full set",
            lambda: search_cuhk_sysu(qfeats, qimgs, sg, protocol, full_set=True),
            full,
        )
        if args.rcp:
            timed(
                "CUHK-SYSU full set + RCP",
                lambda: search_cuhk_sysu(
                    qfeats,
                    qimgs,
                    sg,
                    protocol,
                    full_set=True,
                    rcp=(0.3, 0.2),
                    query_context_feats=contexts,
                ),
                full,
            )
    if args.prw:
        n_frames, n_q = min(6112, args.images), min(2057, args.queries)
        rng = np.random.default_rng(args.seed + 2)
        ann = {}
        for i, n in enumerate(names[:n_frames]):
            d = gallery[n][0]
            ann[n] = {"boxes": d[:, :4], "pids": rng.permutation(450)[: len(d)], "camid": i % 6}
        q_pids = [int(ann[qimgs[i]]["pids"][0]) if qimgs[i] in ann else 0 for i in range(n_q)]
        q_cams = [ann[qimgs[i]]["camid"] if qimgs[i] in ann else 0 for i in range(n_q)]
        timed(
            f"PRW size ({n_q} queries x {n_frames} frames)",
            lambda: search_prw(qfeats[:n_q], qimgs[:n_q], q_pids, q_cams, sg, ann),
            int(sum(sg.counts[sg.index[n]] for n in ann)),
        )
    print()
    print(
        f"| {'run':<44} | {'dets ranked/query':>17} | {'time (s)':>8} | {'mAP':>6} | {'top-1':>6} |"
    )
    print(f"|{'-' * 46}|{'-' * 19}|{'-' * 10}|{'-' * 8}|{'-' * 8}|")
    for label, ranked, sec, m, t1 in rows:
        print(f"| {label:<44} | {ranked:>17} | {sec:>8.2f} | {100 * m:>6.2f} | {100 * t1:>6.2f} |")


if __name__ == "__main__":
    from reid_plugins.utils.errors import run_cli

    raise SystemExit(run_cli(main))
