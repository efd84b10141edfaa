#!/usr/bin/env python
"""The whole synthetic TDN pipeline in one command.

1. generate the synthetic CUHK-SYSU-style scenes (cached under ``$REID_DATASETS``);
2. build the 256x128 person crops of their labelled boxes in the Market layout
   (``synthetic_cuhk_sysu_crops_{train,test}``);
3. train the ReID teacher on the crops with an ordinary ReID config
   (``projects/tdn/teacher_synthetic.yaml``; evaluated on the test crops);
4. train TDN with the teacher checkpoint (``projects/tdn/synthetic.yaml``), evaluated with RCP:
   one evaluation ranks the same features without and with context persons (Table II "TDN"
   vs "TDN + RCP");
5. optionally (``--variants``) train and evaluate the Table III variants (baseline, teacher
   only, KTB only) with the same teacher, and (``--oim``) the OIM* baseline of Table II.

Each training runs ``tools/train_net.py`` in a subprocess (logs in its output folder). A
summary table is printed and written to ``<output-dir>/summary.json``.

Example::

    python tools/run_tdn_pipeline.py                       # ~5-15 min on 2 CPU cores
    python tools/run_tdn_pipeline.py --variants --reuse --threads 1   # + Table III variants
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from typing import Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from reid_plugins.utils.env import setup_environment  # noqa: E402

setup_environment()  # before torch is imported (OMP_WAIT_POLICY=PASSIVE unless set)

OIM_CONFIG = "projects/oim/synthetic.yaml"
VARIANTS = {
    "baseline": "projects/tdn/synthetic_baseline.yaml",
    "teacher_only": "projects/tdn/synthetic_teacher_only.yaml",
    "ktb_only": "projects/tdn/synthetic_ktb_only.yaml",
}


_ITER = re.compile(r"(?:eta: (?P<eta>\S+)\s+)?iter: (?P<it>\d+)/(?P<max>\d+)")


def _log(msg: str) -> None:
    print(f"[run_tdn_pipeline {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _progress(line: str, stage: str) -> Optional[str]:
    """A console progress line for a ``train_net`` log line (training iterations with ETA,
    evaluation), or None."""
    m = _ITER.search(line)
    if m:
        eta = f", ETA {m.group('eta')}" if m.group("eta") else ""
        return f"    {stage}: iter {m.group('it')}/{m.group('max')}{eta}"
    if "Start inference" in line or "Inference done" in line or "Person search (" in line:
        return f"    {stage}: {line.split(']:', 1)[-1].strip()[:110]}"
    return None


def train_net(args: List[str], env: Dict[str, str], log_file: str, stage: str = "") -> None:
    """Run ``tools/train_net.py args`` (stdout/stderr to ``log_file``), echoing per-stage
    progress (iterations, ETA, evaluation) on the console; raise on failure.

    ``--overwrite``: without ``--reuse`` the pipeline trains every stage again, also into
    folders that hold a finished run of an earlier pipeline."""
    cmd = [sys.executable, os.path.join(REPO, "tools", "train_net.py"), "--overwrite"] + args
    _log(" ".join(cmd[1:]))
    os.makedirs(os.path.dirname(log_file), exist_ok=True)
    stage = stage or os.path.basename(os.path.dirname(log_file))
    with open(log_file, "w") as f:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
        with open(log_file) as reader:
            buf = ""
            while True:
                done = proc.poll() is not None
                buf += reader.read()
                *lines, buf = buf.split("\n")
                for line in lines:
                    msg = _progress(line, stage)
                    if msg:
                        print(msg, flush=True)
                if done:
                    break
                time.sleep(1.0)
    if proc.returncode != 0:
        with open(log_file) as f:
            tail = "".join(f.readlines()[-30:])
        raise SystemExit(f"train_net failed (exit {proc.returncode}); see {log_file}:\n{tail}")


def read_results(output_dir: str) -> Dict:
    """``eval_results.json`` of a run; a single ``{dataset: results}`` entry is unwrapped."""
    path = os.path.join(output_dir, "eval_results.json")
    if not os.path.isfile(path):
        raise SystemExit(f"No evaluation results in {path}")
    with open(path) as f:
        res = json.load(f)
    if len(res) == 1:
        (inner,) = res.values()
        if isinstance(inner, dict) and ("search" in inner or "reid" in inner):
            return inner
    return res


def _search(res: Dict) -> Dict[str, float]:
    s = res.get("search", {})
    return {k: round(float(s[k]), 2) for k in ("mAP", "top-1") if k in s}


def run_tdn(
    name: str,
    config: str,
    out: str,
    teacher_weights: str,
    env: Dict[str, str],
    opts: List[str],
    rcp_eval: bool = True,
    reuse: bool = False,
) -> Dict[str, Dict]:
    """Train ``config`` into ``out/name`` and evaluate it: ``{"no_rcp": results}``, plus
    ``"rcp"`` when ``rcp_eval`` (then one evaluation with RCP gives both: its
    ``search_without_rcp`` ranks the same gallery and query features without context persons).
    With ``reuse``, a run whose results exist is read instead of redone."""
    train_dir = os.path.join(out, name)
    done = os.path.join(train_dir, "eval_results.json")
    if reuse and os.path.isfile(done):
        _log(f"reusing the results of {train_dir}")
    else:
        train_net(
            ["--config-file", config, "OUTPUT_DIR", train_dir, "TEST.SEARCH.RCP.ENABLED",
             str(bool(rcp_eval)), "MODEL.TDN.TEACHER.WEIGHTS", teacher_weights] + opts,
            env,
            os.path.join(train_dir, "train.log"),
        )  # fmt: skip
    return split_rcp_results(read_results(train_dir), rcp_eval, train_dir)


def split_rcp_results(res: Dict, rcp_eval: bool, where: str = "") -> Dict[str, Dict]:
    """``{"no_rcp": ..., "rcp": ...}`` from one evaluation's results (``"rcp"`` only when
    ``rcp_eval``: the run's ``search``; ``"no_rcp"`` then has its ``search_without_rcp`` as
    ``search``)."""
    if not rcp_eval:
        return {"no_rcp": res}
    if "search_without_rcp" not in res:
        raise SystemExit(
            f"{where}: no 'search_without_rcp' in the results (evaluated without RCP?); "
            "delete the folder or run without --reuse"
        )
    plain = {k: v for k, v in res.items() if k != "search_without_rcp"}
    plain["search"] = res["search_without_rcp"]
    return {"no_rcp": plain, "rcp": res}


#: Results of this pipeline's default run over seeds (mean, std; percent), measured with
#: ``tools/run_benchmark.py --rows tdn_rcp --scale 1`` (same data and schedule; see
#: README "Results on the built-in synthetic benchmark"). Empty: not measured yet.
EXPECTED_BAND: Dict[str, object] = {
    # tools/run_benchmark.py --rows search --seeds 0 1 2 --scale 1 (rows teacher, tdn, tdn_rcp:
    # the same data, configs and schedules as this pipeline), 2026-12-06; mean, std over seeds.
    "seeds": 3,
    "threads": "OMP_NUM_THREADS=1",
    "metrics": {
        "teacher mAP": (41.3, 3.5),
        "TDN mAP": (31.5, 1.8),
        "TDN+RCP mAP": (29.1, 2.8),
    },
}


def expected_band_lines(teacher: Dict, runs: Dict, config: str, opts: List[str]) -> List[str]:
    """Lines comparing this run with :data:`EXPECTED_BAND` (mean +- 2 std over seeds)."""
    if not EXPECTED_BAND:
        return ["expected band: not measured yet (see README)"]
    if config != "projects/tdn/synthetic.yaml" or opts:
        return ["expected band: only for the default config without overrides"]
    got = {
        "teacher mAP": teacher.get("mAP"),
        "TDN mAP": runs["tdn"]["no_rcp"].get("search", {}).get("mAP"),
        "TDN+RCP mAP": runs["tdn"].get("rcp", {}).get("search", {}).get("mAP"),
    }
    b = EXPECTED_BAND
    out = [f"expected band (mean +- 2 std over {b['seeds']} seeds, {b['threads']}):"]
    for k, (mean, std) in b["metrics"].items():
        v = got.get(k)
        lo, hi = mean - 2 * std, mean + 2 * std
        where = "" if v is None else (" inside" if lo <= v <= hi else " OUTSIDE")
        vs = "-" if v is None else f"{v:.1f}"
        out.append(
            f"  {k:<12} {mean:5.1f} +- {std:4.1f}  [{lo:.1f}, {hi:.1f}]  this run {vs}{where}"
        )
    return out


def main(argv: Optional[List[str]] = None) -> Dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output-dir", default="output/tdn/pipeline")
    parser.add_argument("--config", default="projects/tdn/synthetic.yaml", help="TDN config")
    parser.add_argument("--teacher-config", default="projects/tdn/teacher_synthetic.yaml")
    parser.add_argument(
        "--variants",
        action="store_true",
        help="also train the Table III variants (baseline, teacher / KTB only)",
    )
    parser.add_argument(
        "--oim",
        action="store_true",
        help="also train the OIM* baseline (projects/oim/synthetic.yaml, Table II)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="OMP/torch threads of the training processes (0 = default)",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="skip the teacher / TDN runs whose results already exist",
    )
    from reid_plugins.engine import add_plugin_argument
    from reid_plugins.utils import plugins

    add_plugin_argument(parser)  # passed to every run through $REID_PLUGINS
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides passed to every TDN run"
    )
    args = parser.parse_args(argv)

    start = time.perf_counter()
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # no spinning threads on a busy machine
    if args.plugin:
        listed = plugins.split_plugin_list(env.get(plugins.ENV_VAR, "")) + args.plugin
        listed = [plugins.resolve_spec(p) for p in listed]  # the runs' cwd is the repository
        env[plugins.ENV_VAR] = os.pathsep.join(listed)
    if args.threads > 0:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    out = os.path.abspath(args.output_dir)
    os.makedirs(out, exist_ok=True)
    times: Dict[str, float] = {}
    previous: Dict[str, float] = {}
    if args.reuse and os.path.isfile(os.path.join(out, "summary.json")):
        with open(os.path.join(out, "summary.json")) as f:
            previous = json.load(f).get("times_s", {})

    from reid_plugins.data.catalog import dataset_root
    from reid_plugins.data.person_crops import build_person_crops
    from reid_plugins.data.synthetic_scenes import ensure_synthetic_scenes

    t = time.perf_counter()
    _log(f"1/4 synthetic scenes under {dataset_root()}")
    ensure_synthetic_scenes(dataset_root(), fmt="cuhk_sysu")
    times["scenes"] = time.perf_counter() - t

    t = time.perf_counter()
    _log("2/4 person crops (Market layout)")
    crops = build_person_crops("synthetic_cuhk_sysu")
    times["crops"] = time.perf_counter() - t
    _log(f"    crops in {crops}")

    t = time.perf_counter()
    teacher_dir = os.path.join(out, "teacher")
    teacher_weights = os.path.join(teacher_dir, "model_final.pth")
    done = os.path.isfile(os.path.join(teacher_dir, "eval_results.json"))
    if not (args.reuse and done and os.path.isfile(teacher_weights)):
        _log("3/4 teacher (strong ReID baseline) on the crops")
        train_net(
            ["--config-file", args.teacher_config, "OUTPUT_DIR", teacher_dir],
            env,
            os.path.join(teacher_dir, "train.log"),
        )
    teacher_res = read_results(teacher_dir)
    times["teacher"] = time.perf_counter() - t

    t = time.perf_counter()
    _log("4/4 TDN with the teacher; evaluation without and with RCP")
    runs = {
        "tdn": run_tdn(
            "tdn", args.config, out, teacher_weights, env, args.opts or [], reuse=args.reuse
        )
    }
    times["tdn"] = time.perf_counter() - t
    if args.variants:
        for name, cfg in VARIANTS.items():
            t = time.perf_counter()
            _log(f"variant {name}")
            runs[name] = run_tdn(
                name, cfg, out, teacher_weights, env, args.opts or [], reuse=args.reuse
            )
            times[name] = time.perf_counter() - t
    if args.oim:
        t = time.perf_counter()
        _log("OIM* baseline (projects/oim/synthetic.yaml)")
        runs["oim"] = run_tdn("oim", OIM_CONFIG, out, teacher_weights, env, [], reuse=args.reuse)
        times["oim"] = time.perf_counter() - t
    for k, v in previous.items():  # reused runs keep the time they took
        if k != "total" and times.get(k, 0.0) < 1.0 and v >= 1.0:
            times[k] = v
    times["total"] = time.perf_counter() - start
    if previous:
        times["total_with_reused"] = sum(v for k, v in times.items() if k != "total")

    reid = teacher_res.get("reid", teacher_res)
    lines = [
        "",
        f"Teacher ReID on synthetic crops: Rank-1 {reid.get('Rank-1', float('nan')):.2f}  "
        f"mAP {reid.get('mAP', float('nan')):.2f}",
        f"{'model':<14} {'mAP':>7} {'top-1':>7} {'mAP+RCP':>8} {'top-1+RCP':>10} {'det AP':>7}",
    ]
    for name, res in runs.items():
        a, b = _search(res["no_rcp"]), _search(res.get("rcp", {}))
        det_thresh = res["no_rcp"].get("search", {}).get("det_thresh", 0.5)  # AP at this score
        det = res["no_rcp"].get("detection", {}).get(f"AP@{det_thresh:g}", float("nan"))
        lines.append(
            f"{name:<14} {a.get('mAP', 0):7.2f} {a.get('top-1', 0):7.2f} "
            f"{b.get('mAP', float('nan')):8.2f} {b.get('top-1', float('nan')):10.2f} {det:7.2f}"
        )
    lines.append("times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))
    lines += expected_band_lines(reid, runs, args.config, args.opts)
    print("\n".join(lines), flush=True)
    summary = {"teacher": teacher_res, "runs": runs, "times_s": times}
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2, default=float)
    _log(f"summary written to {os.path.join(out, 'summary.json')}")
    return summary


if __name__ == "__main__":
    from reid_plugins.utils.errors import run_cli

    raise SystemExit(run_cli(main))
