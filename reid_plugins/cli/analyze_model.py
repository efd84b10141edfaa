"""``reid-analyze`` / ``tools/analyze_model.py``: FLOPs and parameters of any registered
meta-architecture, per declared part where a model declares parts; TDN's Table VII comparison.

Any model (``--config-file``): the inference model of the config is built on the CPU for
counting (no ImageNet weights, no training data: no classifiers, memories or TDN teacher),
its parameters are counted and one ``inference`` on a 1 x 3 x H x W input is counted with
fvcore (H x W = ``INPUT.SIZE_TEST`` for ReID models, ``--height`` x ``--width`` for person
search, where the count also depends on the number of detections kept on that input). A
model that declares parts (``analysis_parts``, see :mod:`reid_plugins.modeling.analysis`;
TDN and OIM* do) also gets the per-part table: each part counted once at its input size and
multiplied by how often it runs per image (``--proposals`` RPN RoIs, ``--boxes`` final boxes).

Table VII (``--table-vii``, the default without ``--config-file``): TDN and OIM* built from
their base configs, each component counted at the paper's sizes (Part-1 on the 960x600x3
image, the RoI head on one 7x7x512 RoI, the KTB on one 256x128x3 crop, Part-2 on one
32x16x512 RoI map), per-RoI / per-box costs x 128 RPN RoIs / x 10 final boxes, beside the
paper's numbers: TDN = Part-1 + 128 x RoI head + 10 x (KTB + Part-2); OIM* = Part-1 + 128 x
Part-2 (the OIM* heads on the pooled 2048-d vectors, ~1 MFLOP per RoI, and the RPN head,
identical in both models, are listed separately and not in the totals).

fvcore counts one fused multiply-add as one flop, the paper (and this tool) 1 MAC = 2 FLOPs,
so fvcore's count is doubled. Element-wise ops (ReLU, additions, FrozenBN's affine) are not
counted; BatchNorm / InstanceNorm are (fvcore's defaults).

Examples::

    python tools/analyze_model.py --config-file projects/baseline/market1501.yaml
    python tools/analyze_model.py --config-file projects/tdn/prw.yaml --height 600 --width 960
    python tools/analyze_model.py --table-vii --json flops.json
    python tools/analyze_model.py --table-vii --tdn-config projects/tdn/Base-TDN.yaml \\
        --oim-config projects/oim/Base-OIM.yaml --height 600 --width 960
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

#: the source checkout (default configs of ``--table-vii``)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

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


from reid_plugins.modeling.analysis import (  # noqa: E402  (after the constants)
    count_parts,
    gflops,
    num_params,
    whole_model_gflops,
)

__all__ = ["gflops", "num_params", "analyze", "analyze_tdn", "analyze_oim", "build_for_analysis"]


def _parts(model: nn.Module, image_hw, num_rois: int, num_boxes: int, include_rpn: bool):
    parts = model.analysis_parts(image_hw, num_rois=num_rois, num_boxes=num_boxes)
    return [p for p in parts if include_rpn or p.name != "rpn_head"]


def analyze_tdn(
    model: nn.Module,
    image_hw: Tuple[int, int] = (600, 960),
    num_rois: int = 128,
    num_boxes: int = 10,
    include_rpn: bool = True,
) -> Dict[str, Dict]:
    """Per-component ``{"gflops_per_unit", "count", "gflops", "params", "input"}`` of a TDN."""
    return count_parts(_parts(model, image_hw, num_rois, num_boxes, include_rpn))


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
    parts = _parts(model, image_hw, num_rois, 0, include_rpn)
    return count_parts(parts, reuse={"part1": part1} if part1 is not None else None)


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


def analysis_cfg(config_file: str, opts: Sequence[str] = (), plugins: Sequence[str] = ()):
    """The config of ``config_file`` + ``opts`` for counting on the CPU: no ImageNet weights,
    no whole-model weights, no TDN teacher (training only). Built without training data,
    :func:`build_model` gives the inference model (no classifiers, memories or OIM tables)."""
    import reid_plugins.methods  # noqa: F401  (registers the built-in methods)
    from reid_plugins.engine import setup_cfg

    cfg = setup_cfg(config_file=config_file, opts=list(opts), plugins=plugins)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.BACKBONE.PRETRAIN_PATH = ""
    cfg.MODEL.TDN.TEACHER.ENABLED = False
    return cfg


def build_for_analysis(
    config_file: str, opts: Sequence[str] = (), plugins: Sequence[str] = ()
) -> nn.Module:
    """Build the model of ``config_file`` on CPU for counting (see :func:`analysis_cfg`)."""
    from reid_plugins.modeling import build_model

    return build_model(analysis_cfg(config_file, opts, plugins)).eval()


def is_person_search(model: nn.Module) -> bool:
    """Scene models (TDN, OIM*) take whole images and return boxes."""
    return hasattr(model, "part1_end")


def analyze(
    model: nn.Module,
    image_hw: Tuple[int, int],
    num_rois: int = 128,
    num_boxes: int = 10,
) -> Dict:
    """``{"meta_architecture", "input", "params", "gflops", "detections", "parts"}`` of a
    built model: parameters, fvcore GFLOPs of one ``inference`` on a 1 x 3 x H x W input
    (``detections``: boxes kept on that input, person search only, else None) and the
    per-part rows when the model declares parts (else None)."""
    h, w = image_hw
    torch.manual_seed(0)
    x = torch.rand(1, 3, h, w) * 255
    detections = None
    if is_person_search(model):
        with torch.no_grad():
            detections = int(len(model.inference([{"image": x[0]}])[0]["boxes"]))
    out = dict(
        meta_architecture=type(model).__name__,
        input=f"1x3x{h}x{w}",
        params=num_params(model),
        gflops=whole_model_gflops(model, x),
        detections=detections,
        parts=None,
    )
    if hasattr(model, "analysis_parts"):
        parts = model.analysis_parts(image_hw, num_rois=num_rois, num_boxes=num_boxes)
        out["parts"] = count_parts(parts)
    return out


def format_analysis(result: Dict, config_file: str, num_rois: int, num_boxes: int) -> str:
    """The report of :func:`analyze`."""
    r = result
    lines = [f"{r['meta_architecture']} ({config_file}), input {r['input']}"]
    lines.append(
        f"parameters: {r['params'] / 1e6:.3f} M (inference model: no training-only classifier, "
        f"memory or teacher)"
    )
    det = ""
    if r["detections"] is not None:
        det = f" (with the {r['detections']} detections kept on this random input)"
    lines.append(f"GFLOPs of one inference (fvcore, 1 MAC = 2 FLOPs): {r['gflops']:.4f}{det}")
    if r["parts"] is None:
        lines.append(
            "no parts declared (a model declares them with analysis_parts(); see "
            "reid_plugins/modeling/analysis.py)"
        )
        return "\n".join(lines)
    lines.append("")
    lines.append(f"parts declared by the model ({num_rois} RPN RoIs, {num_boxes} final boxes "
                 "per image):")  # fmt: skip
    lines.append(f"{'component':<14} {'input':>18} {'GFLOPs/unit':>12} {'x':>5} {'GFLOPs':>9} "
                 f"{'params (M)':>11}")  # fmt: skip
    for name, p in r["parts"].items():
        lines.append(f"{name:<14} {p['input']:>18} {p['gflops_per_unit']:12.4f} {p['count']:5d} "
                     f"{p['gflops']:9.3f} {p['params'] / 1e6:11.3f}")  # fmt: skip
    total = sum(p["gflops"] for p in r["parts"].values())
    lines.append(f"{'sum of parts':<14} {'':>18} {'':>12} {'':>5} {total:9.3f}")
    return "\n".join(lines)


def table_vii(args) -> Dict:
    hw = (args.height or 600, args.width or 960)
    tdn_model = build_for_analysis(args.tdn_config, args.opts or [], args.plugin)
    oim_model = build_for_analysis(args.oim_config, (), args.plugin)
    tdn = analyze_tdn(tdn_model, hw, args.proposals, args.boxes)
    oim = analyze_oim(oim_model, hw, args.proposals)
    print(format_report(tdn, oim, hw, args.proposals, args.boxes))
    print(
        f"\nparameters (M): TDN {num_params(tdn_model) / 1e6:.2f} (inference model, teacher not "
        f"included), OIM* {num_params(oim_model) / 1e6:.2f}"
    )
    return {"tdn": tdn, "oim": oim, "totals": table_totals(tdn, oim),
            "check": compare_with_paper(tdn, oim)}  # fmt: skip


def main(argv: Optional[List[str]] = None) -> Dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", default="", help="analyse the model of this config")
    parser.add_argument(
        "--table-vii",
        action="store_true",
        help="TDN Table VII comparison (the default without --config-file)",
    )
    parser.add_argument(
        "--tdn-config",
        default=os.path.join(REPO, "projects/tdn/Base-TDN.yaml"),
        help="TDN config of --table-vii",
    )
    parser.add_argument(
        "--oim-config",
        default=os.path.join(REPO, "projects/oim/Base-OIM.yaml"),
        help="OIM* config of --table-vii",
    )
    parser.add_argument(
        "--height",
        type=int,
        default=0,
        help="input height (default: INPUT.SIZE_TEST for ReID, 600 for scenes)",
    )
    parser.add_argument(
        "--width",
        type=int,
        default=0,
        help="input width (default: INPUT.SIZE_TEST for ReID, 960 for scenes)",
    )
    parser.add_argument("--proposals", type=int, default=128, help="RPN RoIs per image")
    parser.add_argument("--boxes", type=int, default=10, help="final person boxes per image")
    parser.add_argument("--json", default="", help="write the numbers to this file")
    from reid_plugins.engine import add_plugin_argument

    add_plugin_argument(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)  # fmt: skip
    logging.getLogger("fvcore").setLevel(logging.ERROR)

    if args.table_vii or not args.config_file:
        result = table_vii(args)
    else:
        cfg = analysis_cfg(args.config_file, args.opts or [], args.plugin)
        from reid_plugins.modeling import build_model

        model = build_model(cfg).eval()
        if is_person_search(model):
            hw = (args.height or 600, args.width or 960)
        else:
            hw = (args.height or cfg.INPUT.SIZE_TEST[0], args.width or cfg.INPUT.SIZE_TEST[1])
        result = analyze(model, hw, args.proposals, args.boxes)
        print(format_analysis(result, args.config_file, args.proposals, args.boxes))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


def command(argv: Optional[List[str]]) -> None:
    """What the command runs (:func:`main`; its report is printed)."""
    main(argv)


def run(argv: Optional[List[str]] = None) -> int:
    """The ``reid-analyze`` console script: :func:`command` through
    :func:`reid_plugins.utils.errors.run_cli` (one-line user errors, ``--debug``)."""
    from reid_plugins.utils.errors import run_cli

    return run_cli(command, argv)


if __name__ == "__main__":
    raise SystemExit(run())
