#!/usr/bin/env python
"""Benchmark the person-search evaluation maths at CUHK-SYSU / PRW size.

Random cached detections and features stand in for a model's outputs: 6,978 gallery images
with 5-10 detections each (CUHK-SYSU test pool), 2,900 queries whose TestG-style gallery has
100 images, D = 2048 (TDN) or 256 (OIM, ``--dim 256``). Query features are noisy copies of one
gallery detection so the metrics are not trivial. Prints a table of wall-clock times.

    python tools/benchmark_search_eval.py --threads 2 [--dim 256] [--rcp] [--prw]

Target: gallery 100 in under 30 s on 2 cores.

``--reference`` compares with a restatement of the reference CUHK-SYSU search evaluation
(``eval_search_cuhk`` of the OIM / NAE / SeqNet code: ``scipy.io.loadmat`` of ``TestG<N>.mat``,
a Python loop over each query's gallery images, sklearn's ``average_precision_score``) on the
same detections and L2-normalised features, with a ``TestG<N>.mat`` written in the real files'
layout under ``--workdir``. Runs, interleaved ``--repeat`` times: the reference; ours from the
cold ``.mat`` (parsed-protocol cache removed first); ours with the parsed protocol cached. Each
time covers protocol loading + gallery indexing + ranking, as process CPU seconds and wall
seconds; the results (mAP, top-1/5/10) must agree to 1e-9. Needs scikit-learn (the ``tools``
extra)::

    python tools/benchmark_search_eval.py --threads 1 --reference --repeat 3
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
    p.add_argument("--reference", action="store_true", help="compare with the reference code")
    p.add_argument("--repeat", type=int, default=1, help="interleaved rounds of --reference")
    p.add_argument("--workdir", default="output/benchmark_search_eval", help="TestG .mat folder")
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
                box = np.round(dets[j, :4] + rng.uniform(-5, 5, 4)).tolist()  # integer, as real
                if k == 0:
                    qfeats.append(feats[j] + 0.8 * rng.standard_normal(args.dim).astype(np.float32))
            entries.append((names[g], box))
        qimgs.append(names[own])
        protocol.append(entries)
        ctx = starts[own] + rng.integers(counts[own], size=3)
        contexts.append(feats[ctx])
    return gallery, names, qimgs, np.stack(qfeats), protocol, contexts


def write_testg(path, key, qimgs, qboxes, protocol, np):
    """``TestG<N>.mat`` in the real files' layout: 1 x Q struct (Query 1x1 struct with imname,
    idlocate (x, y, w, h), ishard, idname; Gallery 1 x N struct with imname, idlocate (1x0
    when the person is absent), ishard)."""
    import scipy.io

    def struct(rows, fields):
        arr = np.zeros((1, len(rows)), dtype=[(f, object) for f in fields])
        for i, r in enumerate(rows):
            for f in fields:
                arr[f][0, i] = r[f]
        return arr

    def xywh(b):
        if b is None:
            return np.zeros((1, 0))
        return np.array([[b[0], b[1], b[2] - b[0], b[3] - b[1]]], dtype=np.float64)

    g_fields = ["imname", "idlocate", "ishard"]
    rows = []
    for i, (name, box, entries) in enumerate(zip(qimgs, qboxes, protocol)):
        q = {"imname": name, "idlocate": xywh(box), "ishard": 0.0, "idname": f"p{i}"}
        gal = [{"imname": n, "idlocate": xywh(b), "ishard": 0.0} for n, b in entries]
        rows.append({"Query": struct([q], g_fields + ["idname"]), "Gallery": struct(gal, g_fields)})
    os.makedirs(os.path.dirname(path), exist_ok=True)
    scipy.io.savemat(path, {key: struct(rows, ["Query", "Gallery"])})


def reference_search_cuhk(mat_path, key, names, dets, feats, qfeats, det_thresh, np):
    """Restatement of the reference ``eval_search_cuhk`` (no CBGM, no JSON dump): features
    are L2-normalised by the caller, as the reference expects."""
    import scipy.io
    from sklearn.metrics import average_precision_score

    def iou(a, b):
        x1, y1 = max(a[0], b[0]), max(a[1], b[1])
        x2, y2 = min(a[2], b[2]), min(a[3], b[3])
        inter = max(0, x2 - x1) * max(0, y2 - y1)
        return inter * 1.0 / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

    protoc = scipy.io.loadmat(mat_path)[key].squeeze()
    by_name = {}
    for name, d, f in zip(names, dets, feats):
        keep = np.where(d[:, 4] >= det_thresh)[0]
        if len(keep):
            by_name[name] = (d[keep], f[keep])
    aps, accs = [], []
    for i in range(len(qfeats)):
        fq = qfeats[i].ravel()
        y_true, y_score, count_gt, count_tp = [], [], 0, 0
        sims, gts = {}, {}
        for item in protoc["Gallery"][i].squeeze():
            gname = str(item[0][0])
            gt = item[1][0].astype(np.int32)
            count_gt += gt.size > 0
            if gname not in by_name:
                continue
            d, fg = by_name[gname]
            sim = fg.dot(fq).ravel()
            if gname in sims:
                continue
            sims[gname], gts[gname] = sim, gt
        for gname, sim in sims.items():
            gt, d = gts[gname], by_name[gname][0]
            label = np.zeros(len(sim), dtype=np.int32)
            if gt.size > 0:
                w, h = gt[2], gt[3]
                gt[2:] += gt[:2]
                thr = min(0.5, (w * h * 1.0) / ((w + 10) * (h + 10)))
                order = np.argsort(sim)[::-1]
                sim, d = sim[order], d[order]
                for j, roi in enumerate(d[:, :4]):
                    if iou(roi, gt) >= thr:
                        label[j] = 1
                        count_tp += 1
                        break
            y_true.extend(list(label))
            y_score.extend(list(sim))
        y_score, y_true = np.asarray(y_score), np.asarray(y_true)
        recall = count_tp * 1.0 / count_gt
        aps.append(0 if count_tp == 0 else average_precision_score(y_true, y_score) * recall)
        y_true = y_true[np.argsort(y_score)[::-1]]
        accs.append([min(1, sum(y_true[:k])) for k in (1, 5, 10)])
    accs = np.mean(accs, axis=0)
    return {"mAP": float(np.mean(aps)), "top-1": accs[0], "top-5": accs[1], "top-10": accs[2]}


def compare_with_reference(args, np, counts, dets, feats, qimgs, qfeats, protocol):
    """Interleaved reference / ours-cold / ours-cached rounds; prints a table of CPU and wall
    seconds and checks that the metrics agree."""
    from reid_plugins.data.datasets.cuhk_sysu import load_cuhk_sysu_protocol, protocol_cache_path
    from reid_plugins.evaluation.search_metrics import SearchGallery, search_cuhk_sysu

    key = f"TestG{args.gallery_size}"
    root = os.path.abspath(args.workdir)
    mat = os.path.join(root, "annotation", "test", "train_test", f"{key}.mat")
    if not os.path.exists(mat):
        rng = np.random.default_rng(args.seed + 3)
        qboxes = [np.round(rng.uniform(0, 400, 2)).tolist() for _ in qimgs]
        qboxes = [[x, y, x + 40, y + 90] for x, y in qboxes]
        t = time.perf_counter()
        write_testg(mat, key, qimgs, qboxes, protocol, np)
        print(f"wrote {mat} ({time.perf_counter() - t:.1f}s)")
    names = [f"s{i}.jpg" for i in range(args.images)]
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    feats_n = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    qfeats_n = qfeats / np.linalg.norm(qfeats, axis=1, keepdims=True)
    dets_l = [dets[s : s + c] for s, c in zip(starts, counts)]
    feats_l = [feats_n[s : s + c] for s, c in zip(starts, counts)]
    gallery = {n: (d, f) for n, d, f in zip(names, dets_l, feats_l)}
    cache = protocol_cache_path(root, args.gallery_size)

    def reference():
        return reference_search_cuhk(mat, key, names, dets_l, feats_l, qfeats_n, 0.5, np)

    def ours():
        prot = load_cuhk_sysu_protocol(root, args.gallery_size)
        qi = [p["query_image_id"] for p in prot]
        return search_cuhk_sysu(qfeats_n, qi, SearchGallery(gallery, 0.5), prot, record_topn=0)

    def ours_cold():
        if os.path.exists(cache):
            os.remove(cache)
        return ours()

    runs = {"reference": reference, "ours, cold .mat": ours_cold, "ours, cached protocol": ours}
    times = {k: [] for k in runs}
    results = {}
    for r in range(args.repeat):
        for label, fn in runs.items():
            c0, w0 = time.process_time(), time.perf_counter()
            results[label] = fn()
            times[label].append((time.process_time() - c0, time.perf_counter() - w0))
            print(f"  round {r}: {label}: {times[label][-1][0]:.2f} CPU-s", flush=True)
    ref = results["reference"]
    for label, res in results.items():
        for m in ("mAP", "top-1", "top-5", "top-10"):
            if abs(res[m] - ref[m]) > 1e-9:
                raise SystemExit(f"{label}: {m} {res[m]!r} differs from the reference {ref[m]!r}")
    print(f"\nall runs agree: mAP {100 * ref['mAP']:.4f}, top-1 {100 * ref['top-1']:.4f}")
    print(
        f"| {'run':<24} | {'CPU s (median)':>14} | {'wall s (median)':>15} | {'CPU speed-up':>12} |"
    )
    print(f"|{'-' * 26}|{'-' * 16}|{'-' * 17}|{'-' * 14}|")
    med = {k: (float(np.median([t[0] for t in v])), float(np.median([t[1] for t in v])))
           for k, v in times.items()}  # fmt: skip
    for label, (cpu, wall) in med.items():
        print(
            f"| {label:<24} | {cpu:>14.2f} | {wall:>15.2f} | "
            f"{med['reference'][0] / cpu:>11.1f}x |"
        )


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
    if args.reference:
        return compare_with_reference(args, np, counts, dets, feats, qimgs, qfeats, protocol)
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
