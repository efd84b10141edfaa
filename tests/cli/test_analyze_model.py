"""reid_plugins/cli/analyze_model.py (tools/analyze_model.py): TDN Table VII FLOPs per
component at the paper's sizes."""

import os

import pytest
import torch

from tests._testing import load_tool

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _tool():
    return load_tool("analyze_model")


@pytest.fixture(scope="module")
def tool():
    return _tool()


def test_within_tolerance_rule(tool):
    assert tool.within_tolerance(42.0, 42.2) and not tool.within_tolerance(45.0, 42.2)
    # 0.0535 printed as 0.05 by the paper: within half a unit of its last digit
    assert tool.within_tolerance(0.0535, 0.05) and not tool.within_tolerance(0.056, 0.05)
    assert tool.within_tolerance(128 * 0.0535, 6.4, count=128, unit=0.05)
    assert not tool.within_tolerance(128 * 0.06, 6.4, count=128, unit=0.05)


def test_gflops_counts_macs_twice(tool):
    conv = torch.nn.Conv2d(4, 8, 3, padding=1, bias=False)
    # 8 x 4 x 9 MACs per output pixel, 10 x 10 pixels, 2 FLOPs per MAC
    assert tool.gflops(conv, torch.zeros(1, 4, 10, 10)) == pytest.approx(2 * 8 * 4 * 9 * 100 / 1e9)


def test_table_vii_components_match_the_paper(tool):
    n = torch.get_num_threads()
    torch.set_num_threads(max(2, n))
    try:
        tdn_model = tool.build_for_analysis(os.path.join(REPO, "projects/tdn/Base-TDN.yaml"))
        oim_model = tool.build_for_analysis(os.path.join(REPO, "projects/oim/Base-OIM.yaml"))
        tdn = tool.analyze_tdn(tdn_model, (600, 960), 128, 10, include_rpn=False)
        oim = tool.analyze_oim(oim_model, (600, 960), 128, include_rpn=False, part1=tdn["part1"])
    finally:
        torch.set_num_threads(n)
    # the real ResNet50-IBN-a sizes
    assert tdn["part1"]["input"] == "960x600x3" and tdn["ktb"]["input"] == "256x128x3"
    assert tdn["part2"]["input"] == "32x16x512" and tdn["roi_head"]["input"] == "7x7x512"
    assert (tdn["roi_head"]["count"], tdn["ktb"]["count"], tdn["part2"]["count"]) == (128, 10, 10)
    assert oim["part2"]["count"] == 128
    rows = tool.compare_with_paper(tdn, oim)
    assert len(rows) == 11
    bad = [r for r in rows if not r["ok"]]
    assert not bad, bad
    ours = {r["name"]: r["ours"] for r in rows}
    assert 40.0 < ours["Part-1 (960x600x3)"] < 44.3
    assert 2.75 < ours["Part-2 per box (32x16x512)"] < 3.05  # stride-2 conv5 (stride 1: 5.75)
    assert ours["OIM* total"] / ours["TDN total"] == pytest.approx(413.4 / 101.6, rel=0.05)
    # KTB = a copy of Part-1: same parameter count, other tensors
    assert tdn["ktb"]["params"] == tdn["part1"]["params"]
