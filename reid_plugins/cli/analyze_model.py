"""``reid-analyze`` / ``tools/analyze_model.py``: parameters and FLOPs per component of TDN and OIM* (TDN paper, Table VII).

Each component of the real models (built from their configs) is counted with fvcore's
``FlopCountAnalysis`` at the paper's sizes, one forward each: Part-1 on the 960x600x3 image,
the RoI head on one 7x7x512 RoI, the KTB on one 256x128x3 crop and Part-2 on one 32x16x512
RoI map; per-RoI / per-box costs are multiplied by the paper's 128 RPN RoIs and 10 final boxes.
fvcore counts one fused multiply-add as one flop, the paper (and this tool) 1 MAC = 2 FLOPs,
so fvcore's count is doubled. Element-wise ops (ReLU, additions, FrozenBN's affine) are not
counted; BatchNorm / InstanceNorm are (fvcore's defaults).

What is counted follows the paper: TDN = Part-1 + 128 x RoI head + 10 x (KTB + Part-2);
OIM* = Part-1 + 128 x Part-2 (the OIM* heads on the pooled 2048-d vectors, ~1 MFLOP per RoI,
and the RPN head, identical in both models, are listed separately and not in the totals).

Example::

    python tools/analyze_model.py
    python tools/analyze_model.py --config-file projects/tdn/Base-TDN.yaml \\
        --oim-config projects/oim/Base-OIM.yaml --height 600 --width 960 --json flops.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

#: TDN Table VII (GFLOPs): per-unit costs and totals as printed in the paper.
PAPER_TABLE_VII = {
    "part1": 42.2,
    "roi_head_per_roi": 0.05,
    "ktb_per_box": 2.4,
    "part2_per_box": 2.9,
    "tdn_roi_head": 6.4,
    "tdn_ktb": 24.0,
    "tdn_part2": 29.0,
    "tdn_total": 101.6,
    "oim_part2": 371.2,
    "oim_total": 413.4,
}
TOLERANCE = 0.05


class _Call(nn.Module):
    """Wrap ``fn(x)`` of a model as a module for fvcore's tracer."""

    def __init__(self, owner: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.owner = owner
        self._fn = fn

    def forward(self, x):
        return self._fn(x)


def gflops(module: nn.Module, x: torch.Tensor) -> float:
    """fvcore FLOPs of ``module(x)`` in GFLOPs with 1 MAC = 2 FLOPs (eval mode, no grad)."""
    from fvcore.nn import FlopCountAnalysis

    module.eval()
    with torch.no_grad():
        analysis = FlopCountAnalysis(module, (x,))
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        return 2.0 * analysis.total() / 1e9


def num_params(*modules: Optional[nn.Module]) -> int:
    """Number of distinct parameters of the modules (None skipped)."""
    seen = {}
    for m in modules:
        if m is not None:
            for p in m.parameters():
                seen[id(p)] = p.numel()
    return sum(seen.values())


def _stages(backbone, names: Sequence[str]) -> List[nn.Module]:
    return [getattr(backbone, n) for n in names]


def _part_names(part1_end: str) -> Tuple[List[str], List[str]]:
    from reid_plugins.modeling.backbone.resnet import STAGE_NAMES

    i = STAGE_NAMES.index(part1_end)
    return list(STAGE_NAMES[: i + 1]), list(STAGE_NAMES[i + 1 :])


def analyze_tdn(
    model: nn.Module,
    image_hw: Tuple[int, int] = (600, 960),
    num_rois: int = 128,
    num_boxes: int = 10,
    include_rpn: bool = True,
) -> Dict[str, Dict]:
    """Per-component ``{"gflops_per_unit", "count", "gflops", "params", "input"}`` of a TDN."""
    p1, p2 = _part_names(model.part1_end)
    c1 = model.backbone.stage_shape(model.part1_end).channels
    stride = model.part1_stride
    rh, rw = model.reid_resolution
    bh, bw = model.box_head.resolution
    rows: Dict[str, Dict] = {}

    def add(name, module, x, count, params, shape_txt):
        g = gflops(module, x)
        rows[name] = dict(gflops_per_unit=g, count=count, gflops=g * count, params=params,
                          input=shape_txt)  # fmt: skip

    h, w = image_hw
    add("part1", _Call(model, model.part1), torch.zeros(1, 3, h, w), 1,
        num_params(*_stages(model.backbone, p1)), f"{w}x{h}x3")  # fmt: skip
    if include_rpn:
        feat = torch.zeros(1, c1, math.ceil(h / stride), math.ceil(w / stride))
        add("rpn_head", _Call(model.rpn.head, lambda f: model.rpn.head([f])), feat, 1,
            num_params(model.rpn.head), f"{feat.shape[3]}x{feat.shape[2]}x{c1}")  # fmt: skip
    add("roi_head", model.box_head, torch.zeros(1, c1, bh, bw), num_rois,
        num_params(model.box_head), f"{bh}x{bw}x{c1}")  # fmt: skip
    if model.ktb is not None:
        kh, kw = model.ktb.input_size
        add("ktb", model.ktb, torch.zeros(1, 3, kh, kw), num_boxes, num_params(model.ktb),
            f"{kh}x{kw}x3")  # fmt: skip
    add("part2", _Call(model, model.part2), torch.zeros(1, c1, rh, rw), num_boxes,
        num_params(*_stages(model.backbone, p2)), f"{rh}x{rw}x{c1}")  # fmt: skip
    c5 = model.feature_dim
    add("reid_neck", _Call(model.neck, lambda x: model.neck(x)["feature"]),
        torch.zeros(2, c5, 1, 1), num_boxes, num_params(model.neck), f"GAP+BN {c5}")  # fmt: skip
    rows["reid_neck"]["gflops_per_unit"] /= 2  # counted on a batch of 2 (BN in eval mode)
    rows["reid_neck"]["gflops"] /= 2
    return rows


def analyze_oim(
    model: nn.Module,
    image_hw: Tuple[int, int] = (600, 960),
    num_rois: int = 128,
    include_rpn: bool = True,
    part1: Optional[Dict] = None,
) -> Dict[str, Dict]:
    """Per-component costs of an ``OIMSearch`` (OIM*): Part-1, Part-2 on every RoI, heads.

    ``part1``: a Part-1 row already counted on a backbone of the same configuration (e.g.
    TDN's), reused instead of counting again.
    """
    p1, p2 = _part_names(model.part1_end)
    c1 = model.backbone.stage_shape(model.part1_end).channels
    stride = model.part1_stride
    rh, rw = model.pooler_resolution
    rows: Dict[str, Dict] = {}

    def add(name, module, x, count, params, shape_txt):
        g = gflops(module, x)
        rows[name] = dict(gflops_per_unit=g, count=count, gflops=g * count, params=params,
                          input=shape_txt)  # fmt: skip

    h, w = image_hw
    if part1 is not None:
        rows["part1"] = dict(part1)
    else:
        add("part1", _Call(model, model.part1), torch.zeros(1, 3, h, w), 1,
            num_params(*_stages(model.backbone, p1)), f"{w}x{h}x3")  # fmt: skip
    if include_rpn:
        feat = torch.zeros(1, c1, math.ceil(h / stride), math.ceil(w / stride))
        add("rpn_head", _Call(model.rpn.head, lambda f: model.rpn.head([f])), feat, 1,
            num_params(model.rpn.head), f"{feat.shape[3]}x{feat.shape[2]}x{c1}")  # fmt: skip
    add("part2", _Call(model, lambda x: model.backbone.forward_stages(x, p2[0], "res5")),
        torch.zeros(1, c1, rh, rw), num_rois, num_params(*_stages(model.backbone, p2)),
        f"{rh}x{rw}x{c1}")  # fmt: skip
    c5 = model.backbone.stage_shape("res5").channels

    def heads(v):
        return torch.cat([model.cls_score(v), model.bbox_pred(v), model.embedding(v)], dim=1)

    add("oim_heads", _Call(model, lambda x: heads(x.mean(dim=(2, 3)))), torch.zeros(2, c5, 1, 1),
        num_rois, num_params(model.cls_score, model.bbox_pred, model.embedding),
        f"GAP + FC {c5}")  # fmt: skip
    rows["oim_heads"]["gflops_per_unit"] /= 2
    rows["oim_heads"]["gflops"] /= 2
    return rows


def table_totals(tdn: Dict[str, Dict], oim: Dict[str, Dict]) -> Dict[str, float]:
    """The paper's totals (Part-1 + RoI head + KTB + Part-2; OIM*: Part-1 + Part-2)."""
    keys = ("part1", "roi_head", "ktb", "part2")
    return {
        "tdn_total": sum(tdn[k]["gflops"] for k in keys if k in tdn),
        "oim_total": oim["part1"]["gflops"] + oim["part2"]["gflops"],
    }


def _decimals(value: float) -> int:
    text = repr(float(value)).rstrip("0").rstrip(".")
    return len(text.split(".")[1]) if "." in text else 0


def within_tolerance(
    ours: float, paper: float, count: int = 1, unit: Optional[float] = None
) -> bool:
    """``|ours - paper| <= max(5% of paper, count x half a unit of the paper's last printed
    digit)``; ``unit`` = the paper's printed per-unit value when ``paper`` is ``count x unit``
    (e.g. 128 x 0.05: the paper rounds 0.0535 to 0.05)."""
    base = unit if unit is not None else paper
    rounding = count * 0.5 * 10 ** (-_decimals(base))
    return abs(ours - paper) <= max(TOLERANCE * abs(paper), rounding)


def compare_with_paper(tdn: Dict[str, Dict], oim: Dict[str, Dict]) -> List[Dict]:
    """Rows ``{"name", "ours", "paper", "rel_diff", "ok"}`` of every Table VII entry."""
    totals = table_totals(tdn, oim)
    p = PAPER_TABLE_VII
    t, o = tdn, oim
    per = lambda rows, k: rows[k]["gflops_per_unit"]  # noqa: E731
    tot = lambda rows, k: rows[k]["gflops"]  # noqa: E731
    n = lambda rows, k: rows[k]["count"]  # noqa: E731
    # (name, ours, paper, count, paper's printed per-unit value when paper = count x unit)
    entries = [
        ("Part-1 (960x600x3)", tot(t, "part1"), p["part1"], 1, None),
        ("RoI head per RoI (7x7x512)", per(t, "roi_head"), p["roi_head_per_roi"], 1, None),
        ("KTB per box (256x128x3)", per(t, "ktb"), p["ktb_per_box"], 1, None),
        ("Part-2 per box (32x16x512)", per(t, "part2"), p["part2_per_box"], 1, None),
        ("TDN RoI head (128 RoIs)", tot(t, "roi_head"), p["tdn_roi_head"], n(t, "roi_head"),
         p["roi_head_per_roi"]),
        ("TDN KTB (10 boxes)", tot(t, "ktb"), p["tdn_ktb"], n(t, "ktb"), p["ktb_per_box"]),
        ("TDN Part-2 (10 boxes)", tot(t, "part2"), p["tdn_part2"], n(t, "part2"),
         p["part2_per_box"]),
        ("TDN total", totals["tdn_total"], p["tdn_total"], 1, None),
        ("OIM* Part-1", tot(o, "part1"), p["part1"], 1, None),
        ("OIM* Part-2 (128 RoIs)", tot(o, "part2"), p["oim_part2"], n(o, "part2"),
         p["part2_per_box"]),
        ("OIM* total", totals["oim_total"], p["oim_total"], 1, None),
    ]  # fmt: skip
    out = []
    for name, ours, paper, count, unit in entries:
        out.append(dict(name=name, ours=ours, paper=paper, rel_diff=(ours - paper) / paper,
                        ok=within_tolerance(ours, paper, count, unit)))  # fmt: skip
    return out


def format_report(tdn: Dict[str, Dict], oim: Dict[str, Dict], image_hw, num_rois, num_boxes) -> str:
    """Table VII layout (ours beside the paper), the per-component table and the check."""
    totals = table_totals(tdn, oim)
    h, w = image_hw
    lines = [
        f"Table VII -- GFLOPs (1 MAC = 2 FLOPs, fvcore), input {w}x{h}x3, {num_rois} RPN RoIs, "
        f"{num_boxes} final boxes",
        f"{'':<6} {'Part-1':>8} {'RoI Head':>16} {'KTB':>16} {'Part-2':>18} {'Total':>8}",
    ]
    t, o = tdn, oim
    ktb = t.get("ktb", {"gflops_per_unit": 0.0, "gflops": 0.0})
    oim_p2 = "{}x{:.2f}={:.1f}".format(
        num_rois, o["part2"]["gflops_per_unit"], o["part2"]["gflops"]
    )
    roi = "{}x{:.3f}={:.2f}".format(
        num_rois, t["roi_head"]["gflops_per_unit"], t["roi_head"]["gflops"]
    )
    ktb_txt = "{}x{:.2f}={:.1f}".format(num_boxes, ktb["gflops_per_unit"], ktb["gflops"])
    p2 = "{}x{:.2f}={:.1f}".format(num_boxes, t["part2"]["gflops_per_unit"], t["part2"]["gflops"])
    lines.append(
        f"{'OIM*':<6} {o['part1']['gflops']:8.1f} {'-':>16} {'-':>16} {oim_p2:>18} "
        f"{totals['oim_total']:8.1f}"
    )
    lines.append(
        f"{'TDN':<6} {t['part1']['gflops']:8.1f} {roi:>16} {ktb_txt:>16} {p2:>18} "
        f"{totals['tdn_total']:8.1f}"
    )
    lines.append(
        "paper: OIM* 42.2 | - | - | 128x2.9=371.2 | 413.4;  TDN 42.2 | 128x0.05=6.4 | "
        "10x2.4=24.0 | 10x2.9=29.0 | 101.6"
    )
    lines.append(f"ratio OIM* / TDN: ours {totals['oim_total'] / totals['tdn_total']:.2f}, "
                 f"paper {413.4 / 101.6:.2f}")  # fmt: skip
    lines.append("")
    lines.append(f"{'component':<22} {'input':>16} {'GFLOPs/unit':>12} {'x':>5} {'GFLOPs':>9} "
                 f"{'params (M)':>11}")  # fmt: skip
    for model_name, rows in (("TDN", tdn), ("OIM*", oim)):
        for name, r in rows.items():
            lines.append(
                f"{model_name + ' ' + name:<22} {r['input']:>16} {r['gflops_per_unit']:12.4f} "
                f"{r['count']:5d} {r['gflops']:9.2f} {r['params'] / 1e6:11.2f}"
            )
    lines.append("(rpn_head, reid_neck and oim_heads are not in the paper's table / totals)")
    lines.append("")
    lines.append(f"{'check against the paper':<30} {'ours':>9} {'paper':>9} {'diff':>8}  ok")
    for r in compare_with_paper(tdn, oim):
        lines.append(f"{r['name']:<30} {r['ours']:9.3f} {r['paper']:9.3f} "
                     f"{100 * r['rel_diff']:7.1f}%  {'yes' if r['ok'] else 'NO'}")  # fmt: skip
    return "\n".join(lines)


def build_for_analysis(
    config_file: str, opts: Sequence[str] = (), plugins: Sequence[str] = ()
) -> nn.Module:
    """Build the model of ``config_file`` on CPU for counting: no ImageNet weights, no teacher
    (training only), no training data (classifier / OIM table sizes set to 1 when inferred)."""
    import reid_plugins.methods  # noqa: F401  (registers the built-in methods)
    from reid_plugins.engine import setup_cfg
    from reid_plugins.modeling import build_model

    cfg = setup_cfg(config_file=config_file, opts=list(opts), plugins=plugins)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.PRETRAIN_PATH = ""
    cfg.MODEL.TDN.TEACHER.ENABLED = False
    if int(cfg.MODEL.TDN.REID.NUM_PIDS) <= 0:
        cfg.MODEL.TDN.REID.NUM_PIDS = 1
    if int(cfg.MODEL.LOSSES.OIM.NUM_PIDS) <= 0:
        cfg.MODEL.LOSSES.OIM.NUM_PIDS = 1
    return build_model(cfg).eval()


def main(argv: Optional[List[str]] = None) -> Dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", default="projects/tdn/Base-TDN.yaml", help="TDN config")
    parser.add_argument("--oim-config", default="projects/oim/Base-OIM.yaml", help="OIM* config")
    parser.add_argument("--height", type=int, default=600)
    parser.add_argument("--width", type=int, default=960)
    parser.add_argument("--proposals", type=int, default=128, help="RPN RoIs per image")
    parser.add_argument("--boxes", type=int, default=10, help="final person boxes per image")
    parser.add_argument("--json", default="", help="write the numbers to this file")
    from reid_plugins.engine import add_plugin_argument

    add_plugin_argument(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides (TDN)")
    args = parser.parse_args(argv)
    logging.getLogger("fvcore").setLevel(logging.ERROR)

    hw = (args.height, args.width)
    tdn_model = build_for_analysis(args.config_file, args.opts or [], args.plugin)
    oim_model = build_for_analysis(args.oim_config, (), args.plugin)
    tdn = analyze_tdn(tdn_model, hw, args.proposals, args.boxes)
    oim = analyze_oim(oim_model, hw, args.proposals)
    print(format_report(tdn, oim, hw, args.proposals, args.boxes))
    print(
        f"\nparameters (M): TDN {num_params(tdn_model) / 1e6:.2f} (inference model, teacher not "
        f"included), OIM* {num_params(oim_model) / 1e6:.2f}"
    )
    result = {"tdn": tdn, "oim": oim, "totals": table_totals(tdn, oim),
              "check": compare_with_paper(tdn, oim)}  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


def run(argv: Optional[List[str]] = None) -> int:
    """The ``reid-analyze`` console script."""
    main(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(run())
