#!/usr/bin/env python
"""The built-in synthetic benchmark: every method's claimed effect, over seeds, with intervals.

Runs the benchmark rows (the project configs plus KEY VALUE overrides) over seeds through
``tools/train_net.py`` (one subprocess per run, ``--jobs`` at a time, each with
``OMP_NUM_THREADS=--threads``), then writes, under ``--out``:

* ``benchmark.md``: per row mean +- std over seeds of mAP / Rank-1 (search: top-1 and
  detection AP), the mean bootstrap standard error of mAP over queries, and for every paper
  claim the paired difference (same seeds, same data) against the claim's reference row with a
  95 % t-interval over seeds and a verdict ("reproduced" when the interval is on the claimed
  side of 0, "opposite" when it is on the other side, "inconclusive" otherwise);
* ``runs.csv`` (one line per run), ``summary.json`` (everything), ``benchmark.png`` (means with
  std error bars).

Rows (``--rows`` selects by key or group ``dg`` / ``search``):

* ReID DG, leave-one-out over the four synthetic domains (``--targets``; the three others are
  the sources): ``dg_baseline`` (projects/baseline/synthetic_dg.yaml), ``m3l_baseline`` (the
  M3L schedule with meta-learning and MetaBN off), ``m3l`` (the config's default: the
  authors' outer gradient), ``m3l_full_grad`` (``MODEL.M3L.OUTER_GRADIENT full``), ``m3l_no_metabn``, ``gmn``, ``gmn_no_mnet``
  (GMN's baseline), ``gmn_cosine`` (the ``gmn`` model ranked by cosine: a diagnostic),
  ``gmn_no_dp``, ``gmn_no_pic``, ``upper_bound`` (trained on the target);
* person search on the synthetic CUHK-SYSU scenes: ``oim``, ``tdn_baseline``,
  ``tdn_teacher_only``, ``tdn_ktb_only``, ``tdn``, ``tdn_rcp``; the teacher is trained once
  per seed. ``tdn`` and ``tdn_rcp`` are one run evaluated with RCP: the same gallery and query
  passes ranked without (``tdn``) and with context persons (``tdn_rcp``).

Hyperparameters are chosen without the test sets (``--validation``): the data are drawn at
another data seed (``--data-seed`` + 1000: new identities, images and scenes from the same
generators), each DG fold trains on two of its three sources and is evaluated on the third
(the target domain is never used), person search trains and evaluates on the validation
draw's scenes; ``--choose KEY V1 V2 ...`` runs every selected row once per value and reports
the best value with paired differences.

Data (``--data``): the ReID domains with their test splits doubled (:data:`REID_TEST`:
1,544-2,403 queries per domain) and a CUHK-SYSU test split of 1,500 queries in 2,250 images
(:data:`SCENES_TEST`), so that the bootstrap SE of mAP stays below one point at the configs'
schedules; ``--quick`` keeps the generators' default splits (a smoke run, not evidence).

A row whose override key is not in the config tree (e.g. a switch another branch adds) is
reported as skipped. Data are generated once into ``--data-root`` under a folder keyed on the
generator versions and parameters; a finished run is reused when its arguments and the key of
the data it uses (:func:`data_keys`) are unchanged (delete ``--out`` to redo).

Examples::

    python tools/run_benchmark.py --quick                    # < 10 min on 2 cores
    python tools/run_benchmark.py                            # full: 5 seeds, 4 targets
    python tools/run_benchmark.py --rows m3l m3l_baseline --seeds 0 1 2 --targets synA
    python tools/run_benchmark.py --validation --rows tdn --seeds 0 1 --scale 1 \
        --choose MODEL.TDN.REID.TRAIN_ROIS detections gt_and_proposals
"""

import argparse
import csv
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from reid_plugins.utils.env import setup_environment  # noqa: E402

setup_environment()  # before numpy / torch are imported (OMP_WAIT_POLICY=PASSIVE unless set)

import numpy as np  # noqa: E402

DOMAINS = ("synA", "synB", "synC", "synD")
ITER_KEYS = ("SOLVER.WARMUP_ITERS", "SOLVER.CHECKPOINT_PERIOD", "SOLVER.ITERS_PER_EPOCH")
ITER_KEYS_OPTIONAL = ("MODEL.GMN.DP.WARMUP_ITERS",)


@dataclass
class Row:
    """One benchmark row: a config plus overrides; ``eval_of``: evaluate another row's model;
    ``view_of``: no run of its own, read another row's run under the results key ``metric``
    (``""``: ``"reid"`` / ``"search"``)."""

    key: str
    group: str  # "dg" or "search"
    label: str
    config: str
    opts: List[str] = field(default_factory=list)
    teacher: bool = False  # TDN rows: pass the per-seed teacher checkpoint
    on_target: bool = False  # DG upper bound: train on the target's train split
    eval_of: Optional[str] = None
    view_of: Optional[str] = None
    metric: str = ""


_M3L = "projects/m3l/synthetic_m3l.yaml"
_GMN = "projects/gmn"
_TDN = "projects/tdn"
_NO_RCP = ["TEST.SEARCH.RCP.ENABLED", "False"]
_RCP = ["TEST.SEARCH.RCP.ENABLED", "True"]
ROWS: List[Row] = [
    Row("dg_baseline", "dg", "DG baseline (memory + triplet)", "projects/baseline/synthetic_dg.yaml"),
    Row(
        "m3l_baseline",
        "dg",
        "M3L schedule, meta-learning and MetaBN off",
        _M3L,
        ["MODEL.M3L.META_LEARNING", "False", "MODEL.M3L.METABN", "False"],
    ),
    Row("m3l", "dg", "M3L (config default: the authors' outer gradient)", _M3L),
    Row("m3l_full_grad", "dg", "M3L (full outer gradient)", _M3L, ["MODEL.M3L.OUTER_GRADIENT", "full"]),
    Row("m3l_no_metabn", "dg", "M3L without MetaBN", _M3L, ["MODEL.M3L.METABN", "False"]),
    Row("gmn", "dg", "GMN (M-Net + DP + PIC)", f"{_GMN}/synthetic.yaml"),
    Row(
        "gmn_cosine",
        "dg",
        "GMN's model ranked by cosine (no M-Net at test)",
        f"{_GMN}/synthetic.yaml",
        ["MODEL.GMN.TEST.ENABLED", "False"],
        eval_of="gmn",
    ),
    Row("gmn_no_mnet", "dg", "GMN without M-Net (its baseline)", f"{_GMN}/synthetic_no_mnet.yaml"),
    Row("gmn_no_dp", "dg", "GMN without DP", f"{_GMN}/synthetic_no_dp.yaml"),
    Row("gmn_no_pic", "dg", "GMN without PIC", f"{_GMN}/synthetic_no_pic.yaml"),
    Row(
        "upper_bound",
        "dg",
        "trained on the target (upper bound)",
        "projects/baseline/synthetic_supervised.yaml",
        on_target=True,
    ),
    Row("oim", "search", "OIM*", "projects/oim/synthetic.yaml", list(_NO_RCP)),
    Row("tdn_baseline", "search", "TDN baseline (no teacher, no KTB)", f"{_TDN}/synthetic_baseline.yaml", list(_NO_RCP)),
    Row("tdn_teacher_only", "search", "TDN teacher only (no KTB)", f"{_TDN}/synthetic_teacher_only.yaml", list(_NO_RCP), teacher=True),
    Row("tdn_ktb_only", "search", "TDN KTB only (no teacher)", f"{_TDN}/synthetic_ktb_only.yaml", list(_NO_RCP)),
    # one run evaluated with RCP gives both rows: the ranking without (PersonSearchEvaluator's
    # "search_without_rcp") and with context persons, from the same gallery and query passes
    Row("tdn", "search", "TDN (teacher + KTB)", f"{_TDN}/synthetic.yaml", list(_RCP), teacher=True, metric="search_without_rcp"),
    Row("tdn_rcp", "search", "TDN + RCP", f"{_TDN}/synthetic.yaml", list(_RCP), teacher=True, view_of="tdn", metric="search"),
]  # fmt: skip
TEACHER = Row(
    "teacher", "teacher", "TDN teacher (strong baseline on crops)", f"{_TDN}/teacher_synthetic.yaml"
)

#: (row, reference, claimed sign of row - reference, claim) -- the papers' claims.
CLAIMS: List[Tuple[str, str, int, str]] = [
    ("m3l", "m3l_baseline", 1, "M3L beats the same-schedule baseline (M3L Table 3)"),
    ("m3l_full_grad", "m3l_baseline", 1, "M3L with the full outer gradient beats the baseline"),
    ("m3l_no_metabn", "m3l_baseline", 1, "meta-learning alone beats the baseline (M3L Table 3)"),
    ("m3l", "m3l_no_metabn", 1, "MetaBN adds to meta-learning (M3L Table 3)"),
    ("gmn", "gmn_no_mnet", 1, "GMN beats its baseline (GMN ablation)"),
    ("gmn", "gmn_cosine", 1, "M-Net scoring beats cosine ranking of the same GMN model"),
    ("gmn", "gmn_no_dp", 1, "DP helps GMN (GMN ablation)"),
    ("gmn", "gmn_no_pic", 1, "PIC helps GMN (GMN ablation)"),
    ("upper_bound", "dg_baseline", 1, "training on the target beats DG (the gap DG must close)"),
    ("tdn", "oim", 1, "TDN beats OIM* (TDN Table II)"),
    ("tdn_teacher_only", "tdn_baseline", 1, "the teacher helps (TDN Table III)"),
    ("tdn_ktb_only", "tdn_baseline", 1, "KTB helps (TDN Table III)"),
    ("tdn", "tdn_teacher_only", 1, "KTB adds to the teacher (TDN Table III)"),
    ("tdn_rcp", "tdn", 1, "RCP improves TDN (TDN Table II: +1.1 CUHK-SYSU, +1.5 PRW mAP)"),
]

#: Data of the benchmark (generator defaults unless stated); "tiny" is for the tool's tests.
#: The scenes' test split is larger than the generator's default (400 queries in 600 images)
#: so that the bootstrap SE of search mAP stays below one point at the configs' schedules
#: (per-query AP s.d. ~35 points at mAP 30-45: 1,500 queries -> SE ~0.9); same images per
#: query (1.5), and only the TestG<N> files the synthetic configs evaluate.
SCENES_TEST = dict(num_test_images=2250, num_test_ids=1500, gallery_sizes=(10, 20, 50, 100))
#: The ReID domains' test splits doubled (same ratios across domains, same train splits): at
#: the configs' schedules the DG models reach 30-66 mAP on synA, where its generator-default
#: 755 queries gave a bootstrap SE of 0.9-1.2 per run; 2x (1,544 queries): 0.55-0.81 measured.
REID_TEST = dict(test_ids_scale=2.0)
DATA = {
    "default": {"reid": REID_TEST, "scenes": SCENES_TEST},
    # --quick: the generators' own test splits (755-1,214 ReID queries per domain, 400 search
    # queries; a smoke run, not evidence)
    "quick": {"reid": {}, "scenes": {}},
    "tiny": {
        "reid": dict(num_train_ids=8, num_test_ids=4, images_per_id_per_cam=2, num_cams=2,
                     num_distractors=2, num_junk=1),
        "scenes": dict(num_train_images=16, num_test_images=52, num_train_ids=8,
                       num_test_ids=4, num_cams=2, image_size=(96, 128)),
    },
}  # fmt: skip
QUICK = dict(seeds=[0], targets=["synA"], scale=0.25, data="quick")
#: ``--gpu``: the same rows at a larger scale in one call on one GPU (several runs share it)
GPU = dict(seeds=[0, 1, 2], targets=["synA"], scale=1.0, jobs=4, threads=4, depth=50, width=64)
#: ``--validation`` draws its data at ``--data-seed`` + this (never the benchmark's test sets)
VALIDATION_SEED_OFFSET = 1000
FULL = dict(seeds=[0, 1, 2, 3, 4], targets=list(DOMAINS), scale=0.25)


def _log(msg: str) -> None:
    print(f"[run_benchmark {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------- #
# Statistics (pure functions)
# --------------------------------------------------------------------------------------- #
def bootstrap_se(values: Sequence[float], num: int = 1000, seed: int = 0) -> float:
    """Bootstrap standard error of the mean of ``values`` (resampling them with replacement
    ``num`` times); NaN for fewer than two values."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(num, v.size))].mean(axis=1)
    return float(means.std(ddof=1))


def t_interval(diffs: Sequence[float], level: float = 0.95) -> Tuple[float, float, float]:
    """``(mean, low, high)``: Student-t interval of the mean of paired differences (NaN bounds
    for fewer than two)."""
    d = np.asarray(diffs, dtype=np.float64)
    mean = float(d.mean()) if d.size else float("nan")
    if d.size < 2:
        return mean, float("nan"), float("nan")
    from scipy.stats import t

    half = float(t.ppf(0.5 + level / 2, d.size - 1)) * float(d.std(ddof=1)) / math.sqrt(d.size)
    return mean, mean - half, mean + half


def verdict(low: float, high: float, sign: int) -> str:
    """ "reproduced" if the interval lies on the claimed side of 0, "opposite" if on the other
    side, "inconclusive" otherwise (or without an interval)."""
    if math.isnan(low) or math.isnan(high):
        return "inconclusive (n < 2)"
    lo, hi = (low, high) if sign > 0 else (-high, -low)
    if lo > 0:
        return "reproduced"
    if hi < 0:
        return "opposite"
    return "inconclusive"


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


# --------------------------------------------------------------------------------------- #
# Jobs
# --------------------------------------------------------------------------------------- #
def _spec_digest(spec: Dict) -> str:
    return hashlib.sha1(json.dumps(spec, sort_keys=True, default=list).encode()).hexdigest()


def _generator_versions() -> Dict[str, int]:
    """``{"reid": ..., "scenes": ...}``: the versions of the two data generators."""
    from reid_plugins.data import synthetic_reid, synthetic_scenes

    return dict(reid=synthetic_reid.GENERATOR_VERSION, scenes=synthetic_scenes._VERSION)


def data_key(data: Dict, data_seed: int) -> str:
    """Folder name of the generated data (generator versions, seed, a digest of the sizes)."""
    versions = _generator_versions()
    spec = dict(
        reid_version=versions["reid"], scenes_version=versions["scenes"], seed=data_seed, **data
    )
    tag = f"v{versions['reid']}.{versions['scenes']}"
    return f"{tag}-seed{data_seed}-{_spec_digest(spec)[:10]}"


def data_keys(data: Dict, data_seed: int) -> Dict[str, str]:
    """``{"reid": key, "scenes": key}``: what each run group's data depends on (its
    generator's version, the seed, its sizes). A finished run is reused only when its key is
    unchanged, so changing the scenes' size reruns the search rows and keeps the DG runs."""
    versions = _generator_versions()
    return {
        part: f"{part}-v{versions[part]}-seed{data_seed}-"
        + _spec_digest(dict(version=versions[part], seed=data_seed, sizes=data[part]))[:10]
        for part in ("reid", "scenes")
    }


def prepare_data(root: str, data: Dict, data_seed: int, need_dg: bool, need_search: bool) -> None:
    """Generate (or reuse) the ReID domains, the CUHK-SYSU scenes and their crops; when both
    are needed the ReID domains are generated in a second process meanwhile (each generator is
    single-process and deterministic, so the data are the same)."""
    from reid_plugins.data.synthetic_reid import generate_synthetic_reid

    reid = dict(seed=data_seed, progress=False, **data["reid"])
    if not need_search:
        if need_dg:
            generate_synthetic_reid(root, **reid)
        return
    from reid_plugins.data.person_crops import build_person_crops
    from reid_plugins.data.synthetic_scenes import generate_synthetic_scenes

    pending = None
    if need_dg:  # python -c: no re-import of this script in the child
        code = (
            "import json, sys; from reid_plugins.data.synthetic_reid import "
            "generate_synthetic_reid as g; g(sys.argv[1], **json.loads(sys.argv[2]))"
        )
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        pending = subprocess.Popen(
            [sys.executable, "-c", code, root, json.dumps(reid)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
    try:
        generate_synthetic_scenes(
            root, seed=data_seed, fmt="cuhk_sysu", progress=False, **data["scenes"]
        )
        os.environ["REID_DATASETS"] = root
        build_person_crops("synthetic_cuhk_sysu", root, progress=False)
    finally:
        if pending is not None:
            err = pending.communicate()[1]
            if pending.returncode:
                raise SystemExit(f"generating the ReID domains in {root} failed:\n{err[-3000:]}")


def _load_cfg(config: str):
    import reid_plugins.methods  # noqa: F401  (registers every method's config subtree)
    from reid_plugins.config import add_all_configs, get_cfg

    cfg = get_cfg()
    add_all_configs(cfg)
    cfg.merge_from_file(os.path.join(REPO, config))
    return cfg


def _get(cfg, key: str):
    node = cfg
    for part in key.split("."):
        if part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def missing_keys(config: str, opts: Sequence[str]) -> List[str]:
    """Override keys of ``opts`` that the config tree of ``config`` does not have."""
    cfg = _load_cfg(config)
    out = []
    for k in opts[0::2]:
        try:
            _get(cfg, k)
        except KeyError:
            out.append(k)
    return out


def schedule_opts(config: str, scale: float, max_iter: Optional[int]) -> List[str]:
    """Overrides scaling the config's iteration counts (``max_iter`` sets the length
    directly); LR steps beyond the end are dropped."""
    cfg = _load_cfg(config)
    base = int(cfg.SOLVER.MAX_ITER)
    new = max(1, int(max_iter) if max_iter else int(round(base * scale)))
    f = new / base

    def sc(v: int) -> int:
        return max(1, int(round(v * f)))

    steps = sorted({sc(s) for s in cfg.SOLVER.STEPS if sc(s) < new})
    opts = ["SOLVER.MAX_ITER", str(new), "SOLVER.STEPS", json.dumps(steps)]
    for k in ITER_KEYS + ITER_KEYS_OPTIONAL:
        try:
            v = int(_get(cfg, k))
        except KeyError:
            continue
        if v > 0:
            value = min(sc(v), new) if k != "SOLVER.ITERS_PER_EPOCH" else sc(v)
            if k == "SOLVER.WARMUP_ITERS":
                value = min(value, max(new - 1, 1))
            opts += [k, str(value)]
    return opts + ["TEST.EVAL_PERIOD", "0"]


@dataclass
class Job:
    name: str  # "<row>/<target>/seed<k>"
    row: Row
    target: str
    seed: int
    out_dir: str
    args: List[str]
    deps: List[str] = field(default_factory=list)
    data: str = ""  # data_keys(...)[its group's data]: a finished run is reused only on it
    view_of: str = ""  # the job whose run this one reads (Row.view_of); runs nothing itself
    status: str = "pending"
    seconds: float = 0.0
    result: Dict = field(default_factory=dict)


def validation_split(target: str) -> Tuple[str, List[str]]:
    """``(validation domain, training domains)`` of the DG fold ``target`` in ``--validation``
    mode: the first source after ``target`` (cyclically) is held out, the other two train; the
    target domain itself is never used."""
    i = DOMAINS.index(target)
    sources = [DOMAINS[(i + k) % len(DOMAINS)] for k in range(1, len(DOMAINS))]
    return sources[0], sources[1:]


def expand_choices(rows: List[Row], key: Optional[str], values: Sequence[str]) -> List[Row]:
    """One row per candidate value of ``key`` (``--choose KEY V1 V2 ...``): ``<row>@<value>``
    with ``KEY value`` appended to the row's overrides (an eval-only row follows its source)."""
    if not key:
        return rows
    out = []
    for r in rows:
        for v in values:
            out.append(
                Row(f"{r.key}@{v}", r.group, f"{r.label}, {key} {v}", r.config,
                    list(r.opts) + [key, str(v)], teacher=r.teacher, on_target=r.on_target,
                    eval_of=f"{r.eval_of}@{v}" if r.eval_of else None,
                    view_of=f"{r.view_of}@{v}" if r.view_of else None, metric=r.metric)
            )  # fmt: skip
    return out


def backbone_opts(args) -> List[str]:
    """Overrides of every run's backbone (``--backbone-depth`` / ``--backbone-width``)."""
    out = []
    if getattr(args, "backbone_depth", None):
        out += ["MODEL.BACKBONE.DEPTH", str(args.backbone_depth)]
    if getattr(args, "backbone_width", None):
        out += ["MODEL.BACKBONE.BASE_WIDTH", str(args.backbone_width)]
    return out


def build_jobs(
    rows: List[Row], args, out: str, keys: Optional[Dict[str, str]] = None
) -> Tuple[List[Job], Dict[str, str]]:
    """Jobs of the selected rows (plus the per-seed teachers); ``skipped`` rows with reasons.
    ``keys`` (:func:`data_keys`) are stamped on the jobs: DG rows on ``"reid"``, the others
    on ``"scenes"``."""
    keys = keys or {}
    jobs: Dict[str, Job] = {}
    skipped: Dict[str, str] = {}
    need_teacher = any(r.teacher for r in rows)
    backbone = backbone_opts(args)
    for r in rows:
        miss = missing_keys(r.config, r.opts)
        if miss:
            skipped[r.key] = f"config has no key {', '.join(miss)} ({r.config})"
    if need_teacher:
        rows = [TEACHER] + rows
    for r in rows:
        if r.key in skipped:
            continue
        targets = args.targets if r.group == "dg" else ["cuhk_sysu"]
        sched = schedule_opts(r.config, args.scale, args.max_iter)
        for tgt in targets:
            for s in args.seeds:
                name = f"{r.key}/{tgt}/seed{s}"
                out_dir = os.path.join(out, "runs", r.key, tgt, f"seed{s}")
                if r.view_of:
                    src = f"{r.view_of}/{tgt}/seed{s}"
                    src_dir = os.path.join(out, "runs", r.view_of, tgt, f"seed{s}")
                    jobs[name] = Job(name, r, tgt, s, src_dir, [], [src], view_of=src)
                    continue
                a = ["--config-file", os.path.join(REPO, r.config)]
                deps = []
                if r.eval_of:
                    src = os.path.join(out, "runs", r.eval_of, tgt, f"seed{s}", "model_final.pth")
                    a += ["--eval-only", "MODEL.WEIGHTS", src]
                    deps.append(f"{r.eval_of}/{tgt}/seed{s}")
                a += sched + list(r.opts) + backbone
                a += ["SEED", str(s), "OUTPUT_DIR", out_dir, "DATALOADER.NUM_WORKERS", "0"]
                label = tgt  # the set evaluated: the target, or the held-out source (validation)
                if r.group == "dg":
                    test, sources = tgt, [d for d in DOMAINS if d != tgt]
                    if getattr(args, "validation", False):
                        test, sources = validation_split(tgt)
                        label = test
                    train = [f"synthetic_reid_{d}_train" for d in sources]
                    if r.on_target:
                        train = [f"synthetic_reid_{test}_train"]
                    a += ["DATASETS.TRAIN", json.dumps(train)]
                    a += ["DATASETS.TEST", json.dumps([f"synthetic_reid_{test}_test"])]
                if r.teacher:
                    teacher = os.path.join(out, "runs", "teacher", tgt, f"seed{s}")
                    a += ["MODEL.TDN.TEACHER.WEIGHTS", os.path.join(teacher, "model_final.pth")]
                    if backbone:  # the teacher was trained with them too
                        a += ["MODEL.TDN.TEACHER.OPTS", json.dumps(backbone)]
                    deps.append(f"teacher/{tgt}/seed{s}")
                part = "reid" if r.group == "dg" else "scenes"
                jobs[name] = Job(name, r, label, s, out_dir, a, deps, data=keys.get(part, ""))
    # seed-major order: an interrupted run has every row for the first seeds
    order = sorted(jobs.values(), key=lambda j: list(args.seeds).index(j.seed))
    return order, skipped


def _read_eval(out_dir: str, metric: str = "") -> Dict:
    """Metrics and per-query APs of a finished run (``eval_results.json`` and the dumps);
    ``metric``: the person-search results key (default ``"search"``; ``"search_without_rcp"``
    of an RCP evaluation reads its ``search_results_*_without_rcp.json``)."""
    with open(os.path.join(out_dir, "eval_results.json")) as f:
        res = json.load(f)
    (dataset, inner), *_ = res.items()
    out: Dict = {"dataset": dataset}
    if "reid" in inner:
        out["mAP"], out["rank1"] = inner["reid"]["mAP"], inner["reid"]["Rank-1"]
        dump = os.path.join(out_dir, "inference", dataset, f"reid_topk_{dataset}.json")
    else:
        key = metric or "search"
        s = inner.get(key, {})
        out["mAP"], out["rank1"] = s.get("mAP"), s.get("top-1")
        det, thresh = inner.get("detection", {}), s.get("det_thresh", 0.5)
        out["det_AP"] = det.get(f"AP@{thresh:g}", det.get("AP"))  # AP at the search threshold
        folder = os.path.join(out_dir, "inference", dataset)
        names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        plain = key == "search_without_rcp"
        dumps = [
            n
            for n in names
            if n.startswith("search_results_") and n.endswith("_without_rcp.json") == plain
        ]
        dump = os.path.join(folder, dumps[0]) if dumps else ""
    if dump and os.path.isfile(dump):
        with open(dump) as f:
            queries = json.load(f)["queries"]
        aps = [100.0 * q["ap"] for q in queries if q.get("ap") is not None]
        out["num_queries"] = len(aps)
        out["se_mAP"] = bootstrap_se(aps)
        out["mean_query_ap"] = float(np.mean(aps)) if aps else float("nan")
    return out


def worker_loop() -> int:
    """``--worker``: run ``train_net`` jobs in this process, one per stdin line ``{"args",
    "out_dir"}``; console output goes to ``<out_dir>/benchmark.log`` and the exit status to
    ``<out_dir>/benchmark_rc.json`` (saves the ~5-10 s import per run of a subprocess)."""
    import logging
    import traceback

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    import importlib.util

    from reid_plugins.engine import default_argument_parser

    spec = importlib.util.spec_from_file_location(
        "train_net_tool", os.path.join(REPO, "tools", "train_net.py")
    )
    train_net = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train_net)
    saved = os.dup(1), os.dup(2)
    for line in sys.stdin:
        job = json.loads(line)
        os.makedirs(job["out_dir"], exist_ok=True)
        rc = 0
        with open(os.path.join(job["out_dir"], "benchmark.log"), "w") as log:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(log.fileno(), 1), os.dup2(log.fileno(), 2)
            try:
                # --overwrite: a run is only redone when it has no benchmark_done.json
                train_net.main(default_argument_parser().parse_args(["--overwrite"] + job["args"]))
            except BaseException:  # noqa: BLE001 - recorded, the next job runs
                traceback.print_exc()
                rc = 1
            finally:
                sys.stdout.flush(), sys.stderr.flush()
                logging.shutdown()
                os.dup2(saved[0], 1), os.dup2(saved[1], 2)
        with open(os.path.join(job["out_dir"], "benchmark_rc.json"), "w") as f:
            json.dump({"rc": rc}, f)
    return 0


def run_jobs(
    jobs: List[Job], env: Dict[str, str], num_workers: int, reuse: bool = True, run: bool = True
) -> None:
    """Run the jobs (dependencies first) on ``num_workers`` persistent worker processes
    (:func:`worker_loop`); progress with ETA on the console."""
    by_name = {j.name: j for j in jobs}
    views = [j for j in jobs if j.view_of]
    jobs = [j for j in jobs if not j.view_of]
    todo = []
    for j in jobs:
        if reuse and os.path.isfile(os.path.join(j.out_dir, "benchmark_done.json")):
            with open(os.path.join(j.out_dir, "benchmark_done.json")) as f:
                done = json.load(f)
            if done.get("args") == j.args and done.get("data", "") == j.data:
                j.status, j.seconds, j.result = "done", done["seconds"], done["result"]
                continue
        todo.append(j)
    _log(
        f"{len(jobs)} runs, {len(jobs) - len(todo)} reused, {len(todo)} to do"
        + (f" (+ {len(views)} rows read from them)" if views else "")
    )
    try:
        if run:
            _run_todo(todo, by_name, env, num_workers)
        else:
            for j in todo:
                j.status = "not run (--summarise-only)"
    finally:
        for v in views:  # rows read from another row's run
            src = by_name[v.view_of]
            if src.status != "done":
                v.status = f"skipped: {src.name} is not done"
                continue
            try:
                v.result, v.status = _read_eval(src.out_dir, v.row.metric), "done"
            except (OSError, ValueError, KeyError) as e:
                v.status = f"failed: unreadable results ({e})"


def _run_todo(
    todo: List[Job], by_name: Dict[str, Job], env: Dict[str, str], num_workers: int
) -> None:
    """:func:`run_jobs`' scheduler: ``todo`` on persistent workers, dependencies first."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker"]
    workers = [
        subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.PIPE, text=True)
        for _ in range(min(num_workers, len(todo)))
    ]
    busy: Dict[int, Tuple[Job, float]] = {}
    start, finished = time.time(), 0
    try:
        while todo or busy:
            for w, (j, t0) in list(busy.items()):
                rc_file = os.path.join(j.out_dir, "benchmark_rc.json")
                if not os.path.isfile(rc_file):
                    if workers[w].poll() is not None:  # the worker died (e.g. killed)
                        raise SystemExit(f"benchmark worker died while running {j.name}")
                    continue
                with open(rc_file) as f:
                    rc = json.load(f)["rc"]
                os.remove(rc_file)
                j.seconds = time.time() - t0
                del busy[w]
                finished += 1
                j.status = f"failed: see {j.out_dir}/benchmark.log"
                if rc == 0:
                    try:
                        j.result, j.status = _read_eval(j.out_dir, j.row.metric), "done"
                        with open(os.path.join(j.out_dir, "benchmark_done.json"), "w") as f:
                            json.dump(
                                {"args": j.args, "data": j.data, "seconds": j.seconds,
                                 "result": j.result}, f)  # fmt: skip
                    except (OSError, ValueError, KeyError) as e:
                        j.status = f"failed: unreadable results ({e})"
                el = time.time() - start
                left = len(todo) + len(busy)
                eta = el / finished * left  # wall time per finished run (runs overlap)
                mAP = j.result.get("mAP")
                _log(
                    f"[{finished}/{finished + left}] {j.name}: {j.status}"
                    + (f" mAP {mAP:.2f}" if isinstance(mAP, float) else "")
                    + f" ({j.seconds:.0f} s; elapsed {el / 60:.1f} min, ETA {eta / 60:.1f} min)"
                )
            for w in range(len(workers)):
                if w in busy:
                    continue
                for j in list(todo):
                    states = [by_name[d].status if d in by_name else "done" for d in j.deps]
                    if any(s.startswith(("failed", "skipped")) for s in states):
                        j.status = "skipped: a run it depends on failed"
                        todo.remove(j)
                        continue
                    if all(s == "done" for s in states):
                        stale = os.path.join(j.out_dir, "benchmark_rc.json")
                        if os.path.isfile(stale):
                            os.remove(stale)
                        workers[w].stdin.write(
                            json.dumps({"args": j.args, "out_dir": j.out_dir}) + "\n"
                        )
                        workers[w].stdin.flush()
                        busy[w] = (j, time.time())
                        todo.remove(j)
                        break
            if (
                todo
                and not busy
                and all(
                    not all(by_name[d].status == "done" for d in j.deps if d in by_name)
                    for j in todo
                )
            ):
                for j in todo:  # dependencies that will never be done
                    j.status = "skipped: a run it depends on is missing"
                todo = []
            time.sleep(0.5)
    finally:
        for w in workers:
            if w.stdin:
                w.stdin.close()
        for w in workers:
            try:
                w.wait(timeout=30)
            except subprocess.TimeoutExpired:
                w.kill()


# --------------------------------------------------------------------------------------- #
# Summary and outputs
# --------------------------------------------------------------------------------------- #
def summarise(jobs: List[Job], rows: List[Row], skipped: Dict[str, str]) -> Dict:
    """Per row (and DG target) mean +- std over seeds; per claim the paired differences."""
    done = [j for j in jobs if j.status == "done"]
    table = []
    for r in rows:
        if r.key in skipped:
            table.append(dict(row=r.key, label=r.label, group=r.group, skipped=skipped[r.key]))
            continue
        targets = sorted({j.target for j in done if j.row.key == r.key})
        for tgt in targets + (["mean"] if r.group == "dg" and len(targets) > 1 else []):
            sel = [j for j in done if j.row.key == r.key and (tgt == "mean" or j.target == tgt)]
            if tgt == "mean":  # per seed: the mean over targets (seeds that have all targets)
                per_seed = _per_seed(done, r.key, targets)
                vals = {m: [v[m] for v in per_seed.values()] for m in ("mAP", "rank1")}
            else:
                vals = {m: [j.result.get(m) for j in sel] for m in ("mAP", "rank1", "det_AP")}
            entry = dict(row=r.key, label=r.label, group=r.group, target=tgt)
            entry["seeds"] = len(vals["mAP"])
            for m, v in vals.items():
                entry[m], entry[m + "_std"] = mean_std(v)
            ses = [j.result.get("se_mAP") for j in sel if j.result.get("se_mAP") is not None]
            entry["se_mAP"] = float(np.mean(ses)) if ses else float("nan")
            nq = [j.result.get("num_queries", 0) for j in sel]
            entry["num_queries"] = int(np.mean(nq)) if nq else 0
            entry["seconds"] = float(np.mean([j.seconds for j in sel])) if sel else 0.0
            table.append(entry)
    claims = []
    for row, ref, sign, text in CLAIMS:
        rj = [j for j in done if j.row.key == row]
        fj = [j for j in done if j.row.key == ref]
        if not rj or not fj:
            continue
        targets = sorted({j.target for j in rj} & {j.target for j in fj})
        for tgt in targets + (["mean"] if len(targets) > 1 else []):
            if tgt == "mean":
                a, b = _per_seed(done, row, targets), _per_seed(done, ref, targets)
                a = {s: v["mAP"] for s, v in a.items()}
                b = {s: v["mAP"] for s, v in b.items()}
            else:
                a = {j.seed: j.result["mAP"] for j in rj if j.target == tgt}
                b = {j.seed: j.result["mAP"] for j in fj if j.target == tgt}
            seeds = sorted(set(a) & set(b))
            diffs = [a[s] - b[s] for s in seeds]
            if not diffs:
                continue
            mean, low, high = t_interval(diffs)
            claims.append(
                dict(row=row, reference=ref, target=tgt, claim=text, sign=sign, seeds=seeds,
                     diffs=diffs, diff=mean, low=low, high=high,
                     verdict=verdict(low, high, sign))
            )  # fmt: skip
    return {"table": table, "claims": claims}


def summarise_choice(jobs: List[Job], rows: List[Row], key: str, values: Sequence[str]) -> List:
    """Per row chosen with ``--choose``: each candidate's mAP (per seed the mean over targets),
    the chosen value (highest mean) and every other value's paired difference to it."""
    done = [j for j in jobs if j.status == "done"]
    bases = []
    for r in rows:
        base = r.key.rsplit("@", 1)[0]
        if "@" in r.key and base not in bases:
            bases.append(base)
    out = []
    for base in bases:
        per_value = {}
        for v in values:
            k = f"{base}@{v}"
            targets = sorted({j.target for j in done if j.row.key == k})
            per_seed = _per_seed(done, k, targets) if targets else {}
            if per_seed:
                per_value[str(v)] = {s: m["mAP"] for s, m in per_seed.items()}
        if not per_value:
            continue
        means = {v: float(np.mean(list(d.values()))) for v, d in per_value.items()}
        chosen = max(means, key=means.get)
        cands = []
        for v, d in per_value.items():
            seeds = sorted(set(d) & set(per_value[chosen]))
            diff, low, high = t_interval([d[s] - per_value[chosen][s] for s in seeds])
            cands.append(dict(value=v, mAP=means[v], mAP_std=mean_std(list(d.values()))[1],
                              seeds=seeds, diff=diff, low=low, high=high))  # fmt: skip
        out.append(dict(row=base, key=key, chosen=chosen, candidates=cands))
    return out


def _per_seed(done: List[Job], key: str, targets: List[str]) -> Dict[int, Dict[str, float]]:
    """``{seed: {"mAP", "rank1"}}`` averaged over ``targets`` (seeds having all of them)."""
    out = {}
    for s in sorted({j.seed for j in done if j.row.key == key}):
        sel = [j for j in done if j.row.key == key and j.seed == s and j.target in targets]
        if len(sel) == len(targets):
            out[s] = {m: float(np.mean([j.result[m] for j in sel])) for m in ("mAP", "rank1")}
    return out


def _f(v, digits: int = 1) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def write_outputs(out: str, summary: Dict, jobs: List[Job], meta: Dict) -> str:
    """``benchmark.md`` (returned), ``runs.csv``, ``summary.json``, ``benchmark.png``."""
    lines = [
        "# Synthetic benchmark",
        "",
        f"Seeds {meta['seeds']}; "
        + (
            f"MAX_ITER {meta['max_iter']} for every run"
            if meta["max_iter"]
            else f"schedule x{meta['scale']} of the configs'"
        )
        + (f"; backbone {' '.join(meta['backbone'])}" if meta.get("backbone") else "")
        + f"; OMP_NUM_THREADS={meta['threads']}, {meta['jobs']} runs in parallel; data "
        f"`{meta['data_key']}`; {meta['minutes']:.1f} min wall; {meta['host']}."
        + (
            " **Validation** (choosing hyperparameters; no test set of the benchmark is used): "
            f"data drawn at data seed {meta['data_seed']}; a DG fold's row is trained on two "
            "of its sources and evaluated on the third (column target: the held-out source)."
            if meta.get("validation")
            else ""
        ),
        "",
        "| row | target | seeds | mAP | Rank-1 / top-1 | det AP | SE(mAP) over queries | queries |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in summary["table"]:
        if "skipped" in e:
            lines.append(
                f"| {e['label']} (`{e['row']}`) | - | 0 | skipped: {e['skipped']} | | | | |"
            )
            continue
        lines.append(
            f"| {e['label']} (`{e['row']}`) | {e['target']} | {e['seeds']} | "
            f"{_f(e['mAP'])} +- {_f(e['mAP_std'])} | {_f(e['rank1'])} +- {_f(e['rank1_std'])} | "
            f"{_f(e.get('det_AP'))} | {_f(e['se_mAP'], 2)} | {e['num_queries']} |"
        )
    if summary["claims"]:
        lines += [
            "",
            "Paired differences (same seeds, same data) of mAP, row - reference, with the 95 % "
            "t-interval over seeds:",
            "",
            "| claim | row - reference | target | seeds | difference | 95 % interval | verdict |",
            "|---|---|---|---|---|---|---|",
        ]
    for c in summary["claims"]:
        lines.append(
            f"| {c['claim']} | `{c['row']}` - `{c['reference']}` | {c['target']} | "
            f"{len(c['seeds'])} | {c['diff']:+.1f} | [{_f(c['low'])}, {_f(c['high'])}] | "
            f"{c['verdict']} |"
        )
    for c in summary.get("choices", []):
        lines += [
            "",
            f"Choice of `{c['key']}` for `{c['row']}` on the validation data (mAP, per seed the "
            f"mean over folds; difference to the chosen value, 95 % interval): **{c['chosen']}**",
            "",
            "| value | seeds | mAP | difference to the chosen value | 95 % interval |",
            "|---|---|---|---|---|",
        ]
        for e in c["candidates"]:
            lines.append(
                f"| {e['value']} | {len(e['seeds'])} | {_f(e['mAP'])} +- {_f(e['mAP_std'])} | "
                f"{e['diff']:+.1f} | [{_f(e['low'])}, {_f(e['high'])}] |"
            )
    failed = [j for j in jobs if j.status != "done"]
    if failed:
        lines += ["", "Runs not done:", ""] + [f"- {j.name}: {j.status}" for j in failed]
    md = "\n".join(lines) + "\n"
    with open(os.path.join(out, "benchmark.md"), "w") as f:
        f.write(md)
    with open(os.path.join(out, "runs.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "target", "seed", "status", "seconds", "mAP", "rank1", "det_AP",
                    "se_mAP", "num_queries"])  # fmt: skip
        for j in jobs:
            r = j.result
            w.writerow([j.row.key, j.target, j.seed, j.status, round(j.seconds, 1)]
                       + [r.get(k) for k in ("mAP", "rank1", "det_AP", "se_mAP", "num_queries")])  # fmt: skip
    runs = [dict(name=j.name, status=j.status, seconds=j.seconds, result=j.result, args=j.args)
            for j in jobs]  # fmt: skip
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump({"meta": meta, **summary, "runs": runs}, f, indent=1, default=float)
    plot(summary, os.path.join(out, "benchmark.png"))
    return md


def plot(summary: Dict, path: str) -> None:
    """Bar chart of mAP (mean over seeds, std error bars): DG rows (mean over targets, or the
    only target) and person-search rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = {}
    for e in summary["table"]:
        if "skipped" in e or e["group"] == "teacher":
            continue
        groups.setdefault(e["group"], {})
        cur = groups[e["group"]].get(e["row"])
        if cur is None or e["target"] == "mean":
            groups[e["group"]][e["row"]] = e
    fig, axes = plt.subplots(1, max(len(groups), 1), figsize=(6 * max(len(groups), 1), 4))
    axes = np.atleast_1d(axes)
    for ax, (g, entries) in zip(axes, groups.items()):
        keys = list(entries)
        means = [entries[k]["mAP"] for k in keys]
        stds = [entries[k]["mAP_std"] for k in keys]
        ax.bar(range(len(keys)), means, yerr=stds, capsize=4, color="#4c72b0")
        ax.set_xticks(range(len(keys)))
        ax.set_xticklabels(keys, rotation=45, ha="right", fontsize=8)
        tgt = {entries[k]["target"] for k in keys}
        ax.set_title(f"{'ReID DG (unseen domain)' if g == 'dg' else 'person search'}: "
                     f"mAP, mean +- std over seeds ({', '.join(sorted(tgt))})", fontsize=9)  # fmt: skip
        ax.set_ylabel("mAP (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def select_rows(keys: Optional[Sequence[str]]) -> List[Row]:
    if not keys:
        return list(ROWS)
    known = {r.key for r in ROWS} | {"dg", "search"}
    bad = [k for k in keys if k not in known]
    if bad:
        raise SystemExit(f"--rows: unknown {bad}; choose from {sorted(known)}")
    rows = [r for r in ROWS if r.key in keys or r.group in keys]
    for r in list(rows):  # an eval-only row / a view needs the row whose run it uses
        src = r.eval_of or r.view_of
        if src and all(x.key != src for x in rows):
            rows.insert(rows.index(r), next(x for x in ROWS if x.key == src))
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="1 seed, target synA, schedule x0.25 (< 10 min on 2 cores)",
    )
    p.add_argument(
        "--gpu",
        action="store_true",
        help="larger scale for one GPU: seeds 0-2, target synA, the configs' schedules, "
        "ResNet-50 (width 64) everywhere, 4 runs of 4 threads sharing the GPU",
    )
    p.add_argument("--seeds", type=int, nargs="+", help="training seeds (full: 0-4)")
    p.add_argument("--rows", nargs="+", help="row keys or groups (dg, search); default: all")
    p.add_argument(
        "--targets", nargs="+", choices=DOMAINS, help="DG target domains (full: all four)"
    )
    p.add_argument("--scale", type=float, help="schedule length x the configs' (default 0.25)")
    p.add_argument(
        "--max-iter", type=int, help="every run this many iterations (overrides --scale)"
    )
    p.add_argument("--out", help="output folder (default output/benchmark)")
    p.add_argument("--data-root", default="output/benchmark_data", help="generated-data cache")
    p.add_argument(
        "--data",
        choices=sorted(DATA),
        help="data size (default: 'default'; --quick: 'quick', the generator's defaults; tiny: "
        "tests)",
    )
    p.add_argument("--data-seed", type=int, default=0, help="seed of the generated data")
    p.add_argument(
        "--validation",
        action="store_true",
        help="choose hyperparameters without any test set: data drawn at --data-seed + "
        f"{VALIDATION_SEED_OFFSET}; each DG fold trains on two of its sources and is evaluated "
        "on the third (default --out output/benchmark_validation)",
    )
    p.add_argument(
        "--choose",
        nargs="+",
        metavar="KEY_OR_VALUE",
        help="KEY V1 V2 ...: run every selected row once per value of the config KEY and "
        "report the best (use with --validation)",
    )
    p.add_argument("--jobs", type=int, help="runs in parallel (default 2; --gpu 4)")
    p.add_argument("--threads", type=int, help="OMP/MKL threads per run (default 1; --gpu 4)")
    p.add_argument("--backbone-depth", type=int, help="every run's ResNet depth (--gpu: 50)")
    p.add_argument("--backbone-width", type=int, help="every run's ResNet width (--gpu: 64)")
    p.add_argument(
        "--summarise-only",
        action="store_true",
        help="write the outputs from the finished runs only (run nothing)",
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker_loop()
    if args.quick and args.gpu:
        raise SystemExit("--quick and --gpu are two presets: give one")
    preset = QUICK if args.quick else GPU if args.gpu else FULL
    args.jobs = args.jobs or preset.get("jobs", 2)
    args.threads = args.threads or preset.get("threads", 1)
    args.backbone_depth = args.backbone_depth or preset.get("depth")
    args.backbone_width = args.backbone_width or preset.get("width")
    args.seeds = args.seeds if args.seeds is not None else preset["seeds"]
    args.targets = args.targets or preset["targets"]
    args.scale = args.scale if args.scale is not None else preset["scale"]
    args.data = args.data or preset.get("data", "default")
    rows = select_rows(args.rows)
    choose_key, choose_values = None, []
    if args.choose:
        if len(args.choose) < 3:
            raise SystemExit("--choose needs a config key and at least two values")
        choose_key, choose_values = args.choose[0], args.choose[1:]
        rows = expand_choices(rows, choose_key, choose_values)
    data_seed = args.data_seed + (VALIDATION_SEED_OFFSET if args.validation else 0)
    start = time.time()
    out = os.path.abspath(
        args.out or ("output/benchmark_validation" if args.validation else "output/benchmark")
    )
    os.makedirs(out, exist_ok=True)
    data = DATA[args.data]
    key = data_key(data, data_seed)
    root = os.path.abspath(os.path.join(args.data_root, key))
    _log(f"data {root}")
    prepare_data(root, data, data_seed, any(r.group == "dg" for r in rows),
                 any(r.group == "search" for r in rows))  # fmt: skip
    env = dict(os.environ, REID_DATASETS=root, OMP_NUM_THREADS=str(args.threads),
               MKL_NUM_THREADS=str(args.threads), OMP_WAIT_POLICY="PASSIVE")  # fmt: skip
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    jobs, skipped = build_jobs(rows, args, out, data_keys(data, data_seed))
    for k, why in skipped.items():
        _log(f"row {k} skipped: {why}")
    run_jobs(jobs, env, args.jobs, run=not args.summarise_only)
    import platform

    import torch

    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""

    meta = dict(seeds=args.seeds, targets=args.targets, scale=args.scale, max_iter=args.max_iter,
                threads=args.threads, jobs=args.jobs, data_key=key, data_root=root,
                data_seed=data_seed, validation=args.validation, choose=args.choose,
                backbone=backbone_opts(args),
                minutes=(time.time() - start) / 60, host=f"{platform.processor() or platform.machine()}, "
                f"{os.cpu_count()} CPUs{gpu}", command=" ".join(["python tools/run_benchmark.py"] + (argv or sys.argv[1:])))  # fmt: skip
    summary = summarise(jobs, [TEACHER] + rows if any(r.teacher for r in rows) else rows, skipped)
    if choose_key:
        summary["choices"] = summarise_choice(jobs, rows, choose_key, choose_values)
    md = write_outputs(out, summary, jobs, meta)
    print(md, flush=True)
    _log(f"wrote {out}/benchmark.md, runs.csv, summary.json, benchmark.png")
    return 0 if all(j.status == "done" for j in jobs) else 1


if __name__ == "__main__":
    from reid_plugins.utils.errors import run_cli

    raise SystemExit(run_cli(main))
