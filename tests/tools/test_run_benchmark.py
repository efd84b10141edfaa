"""tools/run_benchmark.py: the statistics against hand computations, the row / schedule
plumbing, and one tiny end-to-end run whose outputs must be written and well-formed."""

import csv
import json
import math
import os

import numpy as np
import pytest

from tests._testing import load_tool


@pytest.fixture(scope="module")
def bench():
    return load_tool("run_benchmark")


def test_t_interval_hand_computed(bench):
    # diffs 1, 2, 3: mean 2, sd 1, t(0.975, 2) = 4.302653 -> half-width 4.302653 / sqrt(3)
    mean, low, high = bench.t_interval([1.0, 2.0, 3.0])
    half = 4.302653 / math.sqrt(3)
    assert mean == pytest.approx(2.0)
    assert (low, high) == pytest.approx((2.0 - half, 2.0 + half), abs=1e-5)
    # five seeds: t(0.975, 4) = 2.776445
    d = [0.5, 1.5, 1.0, 2.0, 0.0]
    m, lo, hi = bench.t_interval(d)
    assert hi - m == pytest.approx(2.776445 * np.std(d, ddof=1) / math.sqrt(5), abs=1e-5)
    assert all(math.isnan(v) for v in bench.t_interval([1.0])[1:])


def test_verdict_sides(bench):
    assert bench.verdict(0.2, 3.0, 1) == "reproduced"
    assert bench.verdict(-3.0, -0.2, 1) == "opposite"
    assert bench.verdict(-1.0, 2.0, 1) == "inconclusive"
    assert bench.verdict(-3.0, -0.2, -1) == "reproduced"  # a claimed decrease
    assert bench.verdict(float("nan"), float("nan"), 1).startswith("inconclusive")


def test_bootstrap_se_matches_the_analytic_standard_error(bench):
    """For the mean of n values the bootstrap SE approaches sd * sqrt((n - 1) / n) / sqrt(n)."""
    v = np.random.default_rng(1).uniform(0, 100, 400)
    expected = v.std(ddof=0) / math.sqrt(v.size)
    assert bench.bootstrap_se(v, num=4000) == pytest.approx(expected, rel=0.06)
    assert math.isnan(bench.bootstrap_se([5.0]))
    assert bench.bootstrap_se([7.0] * 10) == 0.0


def test_schedule_scaling_and_row_selection(bench):
    opts = dict(zip(*[iter(bench.schedule_opts("projects/tdn/synthetic.yaml", 0.5, None))] * 2))
    # synthetic.yaml: 400 iterations, steps 250/300, warm-up 20, 10 iterations per "epoch"
    assert opts["SOLVER.MAX_ITER"] == "200" and json.loads(opts["SOLVER.STEPS"]) == [125, 150]
    assert opts["SOLVER.WARMUP_ITERS"] == "10" and opts["SOLVER.ITERS_PER_EPOCH"] == "5"
    short = dict(zip(*[iter(bench.schedule_opts("projects/gmn/synthetic.yaml", 1.0, 20))] * 2))
    assert short["SOLVER.MAX_ITER"] == "20" and json.loads(short["SOLVER.STEPS"]) == [15]
    assert short["MODEL.GMN.DP.WARMUP_ITERS"] == "5"
    rows = bench.select_rows(["tdn_rcp"])  # a row read from another row's run brings it
    assert [r.key for r in rows] == ["tdn", "tdn_rcp"]
    assert {r.key for r in bench.select_rows(["dg"])} == {
        r.key for r in bench.ROWS if r.group == "dg"
    }
    with pytest.raises(SystemExit, match="unknown"):
        bench.select_rows(["nope"])
    assert bench.missing_keys("projects/m3l/synthetic_m3l.yaml", ["MODEL.M3L.NOPE", "1"]) == [
        "MODEL.M3L.NOPE"
    ]


def test_summary_pairs_seeds_and_averages_targets(bench):
    rows = {r.key: r for r in bench.ROWS}

    def job(row, target, seed, mAP):
        j = bench.Job(f"{row}/{target}/seed{seed}", rows[row], target, seed, "", [])
        j.status, j.result = "done", {"mAP": mAP, "rank1": mAP, "se_mAP": 0.5, "num_queries": 9}
        return j

    jobs = [
        job("m3l", "synA", 0, 30.0), job("m3l", "synA", 1, 34.0),
        job("m3l", "synB", 0, 20.0), job("m3l", "synB", 1, 22.0),
        job("m3l_baseline", "synA", 0, 28.0), job("m3l_baseline", "synA", 1, 31.0),
        job("m3l_baseline", "synB", 0, 21.0), job("m3l_baseline", "synB", 1, 20.0),
    ]  # fmt: skip
    s = bench.summarise(jobs, [rows["m3l"], rows["m3l_baseline"]], {})
    mean_row = next(e for e in s["table"] if e["row"] == "m3l" and e["target"] == "mean")
    assert mean_row["mAP"] == pytest.approx(26.5)  # seeds: 25, 28
    assert mean_row["mAP_std"] == pytest.approx(np.std([25.0, 28.0], ddof=1))
    claim = next(
        c for c in s["claims"] if c["row"] == "m3l" and c["reference"] == "m3l_baseline"
        and c["target"] == "mean"
    )  # fmt: skip
    # per-seed means over targets: m3l 25 / 28, baseline 24.5 / 25.5 -> diffs 0.5, 2.5
    assert claim["diffs"] == pytest.approx([0.5, 2.5]) and claim["diff"] == pytest.approx(1.5)
    assert claim["verdict"] == "inconclusive"


def test_validation_folds_never_touch_the_target(bench):
    for tgt in bench.DOMAINS:
        val, train = bench.validation_split(tgt)
        assert tgt != val and tgt not in train and val not in train and len(train) == 2
        assert sorted([tgt, val] + train) == sorted(bench.DOMAINS)
    assert bench.validation_split("synD") == ("synA", ["synB", "synC"])


def test_validation_jobs_train_on_two_sources_and_test_on_the_third(bench, tmp_path):
    import argparse

    args = argparse.Namespace(targets=["synA"], seeds=[0], scale=0.25, max_iter=None,
                              validation=True)  # fmt: skip
    rows = bench.expand_choices(bench.select_rows(["gmn_cosine", "upper_bound"]),
                                "MODEL.GMN.DP.RATE", ["0.1", "0.3"])  # fmt: skip
    assert [r.key for r in rows] == ["gmn@0.1", "gmn@0.3", "gmn_cosine@0.1", "gmn_cosine@0.3",
                                     "upper_bound@0.1", "upper_bound@0.3"]  # fmt: skip
    rows = [r for r in rows if not r.key.startswith("upper_bound")]
    jobs, skipped = bench.build_jobs(rows, args, str(tmp_path))
    assert not skipped
    by = {j.name: j for j in jobs}
    j = by["gmn@0.3/synA/seed0"]
    opts = dict(zip(j.args[0::2], j.args[1::2]))
    assert json.loads(opts["DATASETS.TRAIN"]) == ["synthetic_reid_synC_train",
                                                  "synthetic_reid_synD_train"]  # fmt: skip
    assert json.loads(opts["DATASETS.TEST"]) == ["synthetic_reid_synB_test"]
    assert opts["MODEL.GMN.DP.RATE"] == "0.3" and j.target == "synB"
    assert by["gmn_cosine@0.3/synA/seed0"].deps == ["gmn@0.3/synA/seed0"]


def test_finished_runs_are_reused_only_on_the_same_data(bench, tmp_path):
    """Changing the scenes' sizes changes only the search rows' data key: DG runs are reused,
    search runs (and runs finished before keys were recorded) are redone."""
    import argparse

    base = bench.DATA["default"]
    bigger = {**base, "scenes": {**base["scenes"], "num_test_ids": 2000}}
    k0, k1 = bench.data_keys(base, 0), bench.data_keys(bigger, 0)
    assert k0["reid"] == k1["reid"] and k0["scenes"] != k1["scenes"]
    quick = bench.data_keys(bench.DATA["quick"], 0)  # --quick: the generators' default splits
    assert quick["reid"] != k0["reid"] and quick["scenes"] != k0["scenes"]
    assert bench.data_keys(base, 1)["reid"] != k0["reid"]  # another seed, other data
    args = argparse.Namespace(targets=["synA"], seeds=[0], scale=0.25, max_iter=None)
    rows = bench.select_rows(["dg_baseline", "oim", "tdn"])

    def jobs(keys):
        return {j.name: j for j in bench.build_jobs(rows, args, str(tmp_path), keys)[0]}

    old = jobs(k0)
    assert {j.data for j in old.values()} == {k0["reid"], k0["scenes"]}
    assert old["teacher/cuhk_sysu/seed0"].data == k0["scenes"]
    for j in old.values():
        os.makedirs(j.out_dir)
        done = {"args": j.args, "data": j.data, "seconds": 1.0, "result": {"mAP": 5.0}}
        if j.name.startswith("tdn/"):
            del done["data"]  # written before the data keys were recorded
        with open(os.path.join(j.out_dir, "benchmark_done.json"), "w") as f:
            json.dump(done, f)
    same = jobs(k0)
    bench.run_jobs(list(same.values()), {}, 1, run=False)
    assert {n: j.status for n, j in same.items()} == {
        "dg_baseline/synA/seed0": "done",
        "oim/cuhk_sysu/seed0": "done",
        "teacher/cuhk_sysu/seed0": "done",
        "tdn/cuhk_sysu/seed0": "not run (--summarise-only)",
    }
    new = jobs(k1)
    bench.run_jobs(list(new.values()), {}, 1, run=False)
    assert [n for n, j in new.items() if j.status == "done"] == ["dg_baseline/synA/seed0"]


def test_tdn_and_tdn_rcp_are_one_rcp_run_read_twice(bench, tmp_path):
    """``tdn`` runs once with RCP; its row reads ``search_without_rcp`` (and that ranking's
    per-query dump), ``tdn_rcp`` runs nothing and reads ``search`` of the same run; a view of
    a run that is not done is skipped."""
    import argparse

    args = argparse.Namespace(targets=["synA"], seeds=[0, 1], scale=0.25, max_iter=None)
    jobs = {j.name: j for j in bench.build_jobs(bench.select_rows(["tdn_rcp"]), args,
                                                str(tmp_path))[0]}  # fmt: skip
    tdn, view = jobs["tdn/cuhk_sysu/seed0"], jobs["tdn_rcp/cuhk_sysu/seed0"]
    opts = dict(zip(tdn.args[0::2], tdn.args[1::2]))
    assert opts["TEST.SEARCH.RCP.ENABLED"] == "True" and "--eval-only" not in tdn.args
    assert view.args == [] and view.view_of == tdn.name and view.out_dir == tdn.out_dir
    folder = os.path.join(tdn.out_dir, "inference", "synthetic_cuhk_sysu_gallery")
    os.makedirs(folder)
    results = {"search": {"mAP": 30.0, "top-1": 40.0, "det_thresh": 0.5},
               "search_without_rcp": {"mAP": 20.0, "top-1": 25.0, "det_thresh": 0.5},
               "detection": {"AP@0.5": 70.0}}  # fmt: skip
    with open(os.path.join(tdn.out_dir, "eval_results.json"), "w") as f:
        json.dump({"synthetic_cuhk_sysu_gallery": results}, f)
    for name, aps in (("", [0.2, 0.4]), ("_without_rcp", [0.1, 0.3, 0.2])):
        with open(os.path.join(folder, f"search_results_cuhk_sysu{name}.json"), "w") as f:
            json.dump({"queries": [{"ap": a} for a in aps]}, f)
    plain = bench._read_eval(tdn.out_dir, tdn.row.metric)
    assert plain["mAP"] == 20.0 and plain["rank1"] == 25.0 and plain["det_AP"] == 70.0
    assert plain["num_queries"] == 3 and plain["mean_query_ap"] == pytest.approx(20.0)
    done = {"args": tdn.args, "data": "", "seconds": 9.0, "result": plain}
    with open(os.path.join(tdn.out_dir, "benchmark_done.json"), "w") as f:
        json.dump(done, f)
    bench.run_jobs(list(jobs.values()), {}, 1, run=False)
    assert view.status == "done" and view.result["mAP"] == 30.0 and view.result["rank1"] == 40.0
    assert view.result["num_queries"] == 2 and view.result["mean_query_ap"] == pytest.approx(30.0)
    assert tdn.status == "done" and tdn.result["mAP"] == 20.0
    assert jobs["tdn_rcp/cuhk_sysu/seed1"].status == "skipped: tdn/cuhk_sysu/seed1 is not done"


def test_choice_summary_picks_the_best_mean_with_paired_differences(bench):
    rows = bench.expand_choices(bench.select_rows(["tdn"]), "K", ["a", "b"])
    by = {r.key: r for r in rows}

    def job(row, seed, mAP):
        j = bench.Job(f"{row}/cuhk_sysu/seed{seed}", by[row], "cuhk_sysu", seed, "", [])
        j.status, j.result = "done", {"mAP": mAP, "rank1": mAP}
        return j

    jobs = [job("tdn@a", 0, 10.0), job("tdn@a", 1, 14.0), job("tdn@b", 0, 20.0),
            job("tdn@b", 1, 21.0)]  # fmt: skip
    (c,) = bench.summarise_choice(jobs, rows, "K", ["a", "b"])
    assert c["row"] == "tdn" and c["chosen"] == "b"
    a = next(e for e in c["candidates"] if e["value"] == "a")
    assert a["mAP"] == pytest.approx(12.0) and a["diff"] == pytest.approx(-8.5)  # -10, -7


def test_quick_subset_end_to_end(bench, tmp_path):
    """One row, one seed, three iterations on tiny data: the table, CSV, JSON and plot are
    written and agree with each other."""
    out = tmp_path / "bench"
    argv = ["--rows", "dg_baseline", "--seeds", "0", "--targets", "synD", "--max-iter", "3"]
    argv += ["--data", "tiny", "--out", str(out), "--data-root", str(tmp_path / "data")]
    assert bench.main(argv + ["--jobs", "1"]) == 0
    md = (out / "benchmark.md").read_text()
    assert "| DG baseline (memory + triplet) (`dg_baseline`) | synD | 1 |" in md
    with open(out / "runs.csv") as f:
        (run,) = list(csv.DictReader(f))
    assert run["status"] == "done" and 0.0 <= float(run["mAP"]) <= 100.0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["meta"]["threads"] == 1 and summary["meta"]["max_iter"] == 3
    (entry,) = summary["table"]
    assert entry["mAP"] == pytest.approx(float(run["mAP"])) and entry["num_queries"] > 0
    assert summary["runs"][0]["result"]["mean_query_ap"] == pytest.approx(entry["mAP"], abs=1e-6)
    assert (out / "benchmark.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a second call reuses the finished run; --summarise-only runs nothing and lists the rest
    assert bench.main(argv) == 0
    more = [a if a != "0" else "0 1" for a in argv]
    more = " ".join(more).split() + ["--summarise-only"]
    assert bench.main(more) == 1
    md = (out / "benchmark.md").read_text()
    assert "dg_baseline/synD/seed1: not run (--summarise-only)" in md
    assert "| DG baseline (memory + triplet) (`dg_baseline`) | synD | 1 |" in md


def test_tdn_pipeline_progress_and_band_lines():
    """run_tdn_pipeline echoes training iterations with ETA per stage, and compares its result
    with the measured band."""
    pipe = load_tool("run_tdn_pipeline")
    line = (
        "[12/06 16:32:14 reid_plugins.train]: eta: 0:01:03  iter: 20/400  loss_oim: 1.1  "
        "time: 0.18  lr: 1.000e-03"
    )
    assert pipe._progress(line, "tdn") == "    tdn: iter 20/400, ETA 0:01:03"
    assert (
        pipe._progress("[12/06 16:32:14 x]: iter: 400/400  loss: 1", "t") == "    t: iter 400/400"
    )
    assert pipe._progress("[12/06 16:32:14 x]: Statistics of 'a'", "t") is None
    band = dict(seeds=3, threads="OMP_NUM_THREADS=1", metrics={"TDN mAP": (50.0, 2.0)})
    runs = {"tdn": {"no_rcp": {"search": {"mAP": 55.0}}, "rcp": {}}}
    old = dict(pipe.EXPECTED_BAND)
    try:
        pipe.EXPECTED_BAND.clear()
        pipe.EXPECTED_BAND.update(band)
        lines = pipe.expected_band_lines({}, runs, "projects/tdn/synthetic.yaml", [])
    finally:
        pipe.EXPECTED_BAND.clear()
        pipe.EXPECTED_BAND.update(old)
    assert "3 seeds" in lines[0] and "[46.0, 54.0]" in lines[1] and "55.0 OUTSIDE" in lines[1]


def test_gpu_preset_scales_every_run_and_the_teacher_alike(bench, tmp_path):
    """``--gpu`` (here on the CPU at a toy size): ResNet-50 in every run, TDN's teacher built
    with the same overrides it was trained with (TEACHER.OPTS), so the checkpoint loads."""
    out = tmp_path / "bench"
    argv = ["--gpu", "--rows", "tdn", "--seeds", "0", "--max-iter", "1", "--data", "tiny"]
    argv += ["--backbone-width", "4", "--jobs", "1", "--threads", "1"]
    argv += ["--out", str(out), "--data-root", str(tmp_path / "data")]
    assert bench.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["meta"]["backbone"] == ["MODEL.BACKBONE.DEPTH", "50",
                                           "MODEL.BACKBONE.BASE_WIDTH", "4"]  # fmt: skip
    runs = {r["name"]: r for r in summary["runs"]}
    assert set(runs) == {"teacher/cuhk_sysu/seed0", "tdn/cuhk_sysu/seed0"}
    assert all(r["status"] == "done" for r in runs.values())
    tdn_args = runs["tdn/cuhk_sysu/seed0"]["args"]
    opts = dict(zip(tdn_args[0::2], tdn_args[1::2]))
    assert opts["MODEL.BACKBONE.DEPTH"] == "50"
    assert json.loads(opts["MODEL.TDN.TEACHER.OPTS"]) == summary["meta"]["backbone"]
    with pytest.raises(SystemExit, match="two presets"):
        bench.main(["--gpu", "--quick"])


def test_tdn_pipeline_reads_both_rankings_from_one_rcp_evaluation():
    pipe = load_tool("run_tdn_pipeline")
    res = {"search": {"mAP": 30.0}, "search_without_rcp": {"mAP": 20.0}, "detection": {"AP": 1}}
    both = pipe.split_rcp_results(res, True)
    assert both["rcp"] is res and both["no_rcp"]["search"] == {"mAP": 20.0}
    assert both["no_rcp"]["detection"] == {"AP": 1} and "search_without_rcp" not in both["no_rcp"]
    assert pipe.split_rcp_results(res, False) == {"no_rcp": res}
    with pytest.raises(SystemExit, match="search_without_rcp"):
        pipe.split_rcp_results({"search": {"mAP": 1.0}}, True, "out/tdn")
