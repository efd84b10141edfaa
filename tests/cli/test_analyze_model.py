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


# ------------------------------------------------------------------ every meta-architecture

SYNTHETIC = {
    "projects/baseline/synthetic_dg.yaml": "ReIDBaseline",
    "projects/m3l/synthetic_m3l.yaml": "M3L",
    "projects/gmn/synthetic.yaml": "GMN",
    "projects/oim/synthetic.yaml": "OIMSearch",
    "projects/tdn/synthetic.yaml": "TDN",
}


@pytest.mark.parametrize("config", sorted(SYNTHETIC))
def test_every_meta_architecture_is_counted(tool, config, tmp_path, capsys):
    out_json = tmp_path / "flops.json"
    argv = ["--config-file", os.path.join(REPO, config), "--json", str(out_json),
            "--proposals", "16", "--boxes", "3"]  # fmt: skip
    person_search = SYNTHETIC[config] in ("OIMSearch", "TDN")
    if person_search:
        argv += ["--height", "64", "--width", "96"]
    result = tool.main(argv)
    text = capsys.readouterr().out
    assert result["meta_architecture"] == SYNTHETIC[config]
    assert text.startswith(f"{SYNTHETIC[config]} ({os.path.join(REPO, config)}), input 1x3x")
    assert result["gflops"] > 0 and result["params"] > 0
    assert out_json.is_file()
    model = tool.build_for_analysis(os.path.join(REPO, config))
    assert result["params"] == tool.num_params(model)
    h, w = (int(v) for v in result["input"].split("x")[2:])
    if not person_search:
        # ReID: one inference = backbone + neck (BN on a 1-d feature, a few kFLOPs)
        assert result["parts"] is None and result["detections"] is None
        assert "no parts declared" in text
        backbone = tool.gflops(model.backbone, torch.zeros(1, 3, h, w))
        assert backbone <= result["gflops"] < backbone * 1.01
        return
    parts = result["parts"]
    assert "parts declared by the model" in text and result["detections"] >= 0
    expected = {"OIMSearch": {"part1": 1, "rpn_head": 1, "part2": 16, "oim_heads": 16},
                "TDN": {"part1": 1, "rpn_head": 1, "roi_head": 16, "ktb": 3, "part2": 3,
                        "reid_neck": 3}}[SYNTHETIC[config]]  # fmt: skip
    assert {k: v["count"] for k, v in parts.items()} == expected
    for row in parts.values():
        assert row["gflops"] == pytest.approx(row["gflops_per_unit"] * row["count"])
    # Part-1 = the backbone stages stem .. PART1_END on the image, counted independently
    p1 = torch.nn.Sequential(*[getattr(model.backbone, n) for n in ("stem", "res2", "res3")])
    assert model.part1_end == "res3"
    assert parts["part1"]["gflops"] == pytest.approx(tool.gflops(p1, torch.zeros(1, 3, h, w)))


def test_reid_model_used_to_fail(tool):
    """Issue 15.7: the tool presented as general died on ReIDBaseline (no part1_end)."""
    model = tool.build_for_analysis(os.path.join(REPO, "projects/baseline/synthetic_dg.yaml"))
    assert not hasattr(model, "part1_end") and not hasattr(model, "analysis_parts")
    res = tool.analyze(model, (32, 16))
    assert res["parts"] is None and res["gflops"] > 0


def test_the_synthetic_configs_cover_every_registered_meta_architecture():
    from reid_plugins.modeling import META_ARCH_REGISTRY

    builtin = {
        name for name, obj in META_ARCH_REGISTRY if obj.__module__.startswith("reid_plugins.")
    }
    builtin.discard("ToyClassifier")  # tests._testing
    assert builtin <= set(SYNTHETIC.values())
