"""The benchmark scripts under tools/ run end to end at toy sizes (their numbers are in the
READMEs; this only keeps them from rotting) and report the quantities the targets are about."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(script, *args, timeout=240):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", script), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


def test_benchmark_reid_eval_small(tmp_path):
    out = _run("benchmark_reid_eval.py", "--scale", "0.02", "--dim", "32", "--in-process")
    assert "market full matrix" in out and "market streamed" in out and "msmt" in out


def test_benchmark_gmn_small(tmp_path):
    path = tmp_path / "gmn.json"
    _run(
        "benchmark_gmn.py",
        *("--num-query", "12", "--num-gallery", "80", "--dim", "16", "--hidden", "8", "4"),
        *("--topk", "5", "--full-queries", "0", "--repeat", "1", "--output", str(path)),
    )
    res = {r["mode"]: r for r in json.loads(path.read_text())["results"]}
    assert set(res) == {"cosine", "topk", "full"}
    assert all(r["peak_rss_gb"] > 0 and r["queries_run"] == 12 for r in res.values())


def test_benchmark_m3l_small(tmp_path):
    path = tmp_path / "m3l.json"
    _run(
        "benchmark_m3l.py",
        *("--iters", "1", "--height", "32", "--width", "16", "--batch", "8", "--ids", "4"),
        *("--base-width", "8", "--warmup", "0", "--json", str(path)),
        *("--variants", "baseline", "baseline_forward", "m3l_forward", "--phases"),
    )
    res = json.loads(path.read_text())["variants"]
    # phases: the baseline has one standard forward; M3L the meta-train/meta-test forwards and
    # the inner update, and only the forward memory update runs a forward of its own
    assert set(res["baseline"]["phases_ms"]) == {
        "forward standard",
        "outer backward",
        "optimizer step",
        "memory update",
    }
    assert {"forward meta_train", "inner_update", "forward meta_test"} <= set(
        res["m3l_forward"]["phases_ms"]
    )
    assert "forward standard" not in res["m3l_forward"]["phases_ms"]
    phase_sum = sum(res["m3l_forward"]["phases_ms"].values()) / 1e3
    assert 0 < phase_sum <= res["m3l_forward"]["wall_s"] * 1.5
    assert set(res) == {"baseline", "baseline_forward", "m3l_forward"}
    assert res["baseline"]["wall_ratio"] == pytest.approx(1.0)
    assert res["baseline_forward"]["wall_ratio_same_memory_update"] == pytest.approx(1.0)
    fwd = res["m3l_forward"]
    assert fwd["wall_ratio_same_memory_update"] == pytest.approx(
        fwd["wall_s"] / res["baseline_forward"]["wall_s"]
    )
    assert all(v["memory"]["peak_rss_mb"] > 0 for v in res.values())


def test_benchmark_search_eval_small():
    out = _run(
        "benchmark_search_eval.py",
        *("--dim", "16", "--images", "60", "--queries", "10", "--gallery-size", "20"),
        *("--threads", "1", "--rcp"),
    )
    table = [l for l in out.splitlines() if l.startswith("| ") and "time (s)" not in l]
    assert len(table) >= 2 and all("done:" in out for _ in table)  # gallery 20 + full set (+RCP)


@pytest.mark.parametrize("amp", [False, True])
def test_benchmark_tdn_vs_oim_counts_part2_rois(tmp_path, amp):
    """Table VI's setting at a toy size: OIM* runs Part-2 on every proposal, TDN on its top
    ``--boxes`` detections only; ``--amp`` (autocast + channels-last) is recorded."""
    path = tmp_path / "speed.json"
    _run(
        "benchmark.py",
        *("--height", "64", "--width", "96", "--proposals", "6", "--boxes", "2"),
        *("--images", "1", "--warmup", "0", "--repeats", "1", "--device", "cpu"),
        *(["--amp"] if amp else []),
        *("--json", str(path)),
    )
    res = json.loads(path.read_text())
    assert res["amp"] is amp
    assert res["models"]["TDN"]["part2_rois_per_image"] == 2
    assert res["models"]["OIM*"]["part2_rois_per_image"] == 6
    assert res["speedup"] == pytest.approx(
        res["models"]["TDN"]["images_per_s"] / res["models"]["OIM*"]["images_per_s"]
    )
