"""Comparison tables from runs' eval_results.json (reid_plugins.utils.results_table + tool)."""

import csv
import io
import json
import os
import subprocess
import sys

import pytest

from reid_plugins.utils.results_table import (
    collect_runs,
    flatten_results,
    format_table,
    select_columns,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(root, name, results, arch=None):
    d = root / name
    d.mkdir(parents=True)
    (d / "eval_results.json").write_text(json.dumps(results))
    if arch:
        (d / "config.yaml").write_text(f"MODEL:\n  META_ARCHITECTURE: {arch}\n  DEVICE: cpu\n")
    return d


@pytest.fixture
def runs_root(tmp_path):
    root = tmp_path / "output"
    _run(root, "m3l/to_market", {"market1501_test": {"reid": {"mAP": 51.1, "Rank-1": 76.5}}}, "M3L")
    _run(root, "baseline/to_market", {"market1501_test": {"reid": {"mAP": 41.1, "Rank-1": 67.9}}})
    _run(
        root,
        "tdn/prw",
        {"prw_gallery": {"search": {"mAP": 68.7, "top-1": 91.9}, "detection": {"AP": 93.0}}},
        "TDN",
    )
    (root / "empty_run").mkdir()  # no results: not a row
    return root


def test_flatten_joins_nested_keys_and_drops_non_numbers():
    flat = flatten_results(
        {"d": {"reid": {"mAP": 1, "name": "x", "ok": True}, "curve": {"10": 2.5}}}
    )
    assert flat == {"d/reid/mAP": 1.0, "d/curve/10": 2.5}
    with pytest.raises(ValueError, match="bad.json"):
        flatten_results([1, 2], "bad.json")


def test_collect_finds_every_run_with_its_architecture(runs_root):
    runs = collect_runs([str(runs_root)])
    assert [r["run"] for r in runs] == [
        "output/baseline/to_market",
        "output/m3l/to_market",
        "output/tdn/prw",
    ]
    assert [r["arch"] for r in runs] == ["", "M3L", "TDN"]
    assert runs[2]["metrics"]["prw_gallery/detection/AP"] == 93.0


def test_markdown_table_sorted_by_metric(runs_root):
    runs = collect_runs([str(runs_root)])
    cols = select_columns(runs, ["mAP", "Rank-1"])
    assert cols == [
        "market1501_test/reid/mAP",
        "market1501_test/reid/Rank-1",
        "prw_gallery/search/mAP",
    ]
    text = format_table(runs, cols, sort_by="mAP")
    lines = text.splitlines()
    assert lines[0] == "| run | arch | " + " | ".join(cols) + " |"
    # TDN 68.7 (its first mAP column), M3L 51.1, baseline 41.1; missing cells are "-"
    assert [ln.split(" | ")[0][2:] for ln in lines[2:]] == [
        "output/tdn/prw",
        "output/m3l/to_market",
        "output/baseline/to_market",
    ]
    assert lines[2].endswith("| - | - | 68.7 |") and lines[3].endswith("| M3L | 51.1 | 76.5 | - |")


def test_csv_and_json_formats(runs_root):
    runs = collect_runs([str(runs_root)])
    cols = select_columns(runs, ["mAP"])
    rows = list(csv.reader(io.StringIO(format_table(runs, cols, fmt="csv", digits=2))))
    assert rows[0] == ["run", "arch", *cols] and rows[2][2] == "51.10"
    data = json.loads(format_table(runs, cols, fmt="json"))
    assert (
        data[1]["market1501_test/reid/mAP"] == 51.1 and data[2]["market1501_test/reid/mAP"] is None
    )
    with pytest.raises(ValueError, match="not one of the columns"):
        format_table(runs, cols, sort_by="Rank-10")


def test_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        collect_runs([str(tmp_path / "nope")])
    bad = tmp_path / "run" / "eval_results.json"
    bad.parent.mkdir()
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="eval_results.json"):
        collect_runs([str(tmp_path)])


def test_tool_prints_the_table(runs_root, tmp_path):
    out = tmp_path / "table.md"
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "collect_results.py"),
            str(runs_root),
            "--metrics",
            "mAP",
            "--sort",
            "mAP",
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout == out.read_text() and "| output/tdn/prw | TDN |" in proc.stdout
