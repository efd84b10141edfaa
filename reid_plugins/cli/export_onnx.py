"""``reid-export`` / ``tools/export_onnx.py``: export a model's re-ID feature extractor to
ONNX and check it with onnxruntime.

The exported graph maps ``images`` (N, 3, H, W) float32 RGB 0-255 crops (H, W =
``INPUT.SIZE_TEST`` unless ``--input-size``) to ``features`` (N, D), with a dynamic batch
axis. ReID models (ReIDBaseline, M3L, GMN instance features) export their eval path
(normalisation -> backbone -> BNNeck -> L2 normalisation); other models export their
``reid_head_on_crops`` method (or ``--method NAME``). After export the ONNX file is run with
onnxruntime on a batch of a different size and compared with PyTorch (max abs diff must be
<= ``--atol``, default 1e-4).

Examples::

    python tools/export_onnx.py --config-file projects/m3l/configs/m3l_r50.yaml \
        --output output/m3l.onnx MODEL.WEIGHTS output/model_final.pth
    python tools/export_onnx.py --config-file cfg.yaml --output tdn_reid.onnx \
        --input-size 256 128 MODEL.WEIGHTS tdn.pth        # person search: re-ID head on crops
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Dict, List, Optional

import reid_plugins.methods  # noqa: F401  (registers the built-in methods)
from reid_plugins.checkpoint import Checkpointer
from reid_plugins.engine import add_plugin_argument, setup_cfg
from reid_plugins.export import build_export_wrapper, export_onnx, verify_onnx
from reid_plugins.modeling import build_model

logger = logging.getLogger("reid_plugins.tools.export_onnx")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--output", required=True, help="ONNX file to write")
    p.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        default=None,
        help="crop size (default INPUT.SIZE_TEST)",
    )
    p.add_argument(
        "--method",
        default=None,
        help="export model.<METHOD>(crops) -> features instead of the default",
    )
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--batch-size", type=int, default=2, help="example batch used for export")
    p.add_argument(
        "--verify-batch-size",
        type=int,
        default=3,
        help="batch of the onnxruntime check (differs from --batch-size on purpose)",
    )
    p.add_argument("--atol", type=float, default=1e-4, help="max |onnxruntime - PyTorch|")
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check")
    p.add_argument("--static-batch", action="store_true", help="no dynamic batch axis")
    p.add_argument(
        "--dynamo", action="store_true", help="torch.export-based exporter (needs onnxscript)"
    )
    add_plugin_argument(p)
    p.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        help="config KEY VALUE overrides, e.g. MODEL.WEIGHTS model.pth",
    )
    return p.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> Dict:
    """Export (and verify); returns a summary dict (also written next to the ONNX file as
    ``<output>.json``)."""
    args = parse_args(argv)
    cfg = setup_cfg(args)
    if "MODEL.DEVICE" not in list(args.opts or [])[::2]:
        cfg.MODEL.DEVICE = "cpu"  # export on CPU unless asked otherwise
    if not cfg.MODEL.WEIGHTS:
        raise SystemExit("export_onnx: MODEL.WEIGHTS is empty; pass MODEL.WEIGHTS path.pth")
    model = build_model(cfg)
    Checkpointer(model).load(cfg.MODEL.WEIGHTS, checkpointables=[])
    model.eval()
    wrapper = build_export_wrapper(model, args.method)
    size = args.input_size or list(cfg.INPUT.SIZE_TEST)
    export_onnx(
        wrapper,
        args.output,
        input_size=size,
        batch_size=args.batch_size,
        opset=args.opset,
        dynamic_batch=not args.static_batch,
        dynamo=args.dynamo,
        metadata={
            "meta_architecture": cfg.MODEL.META_ARCHITECTURE,
            "weights": os.path.basename(cfg.MODEL.WEIGHTS),
            "wrapper": type(wrapper).__name__,
        },
    )
    summary = {
        "onnx": os.path.abspath(args.output),
        "meta_architecture": cfg.MODEL.META_ARCHITECTURE,
        "wrapper": type(wrapper).__name__,
        "input": {
            "name": "images",
            "shape": ["batch", 3, int(size[0]), int(size[1])],
            "format": "float32 RGB 0-255",
        },
        "output": {"name": "features"},
        "opset": args.opset,
        "max_abs_diff": None,
    }
    if not args.no_verify:
        bs = args.batch_size if args.static_batch else args.verify_batch_size
        diff, out = verify_onnx(wrapper, args.output, batch_size=bs, atol=args.atol)
        summary["max_abs_diff"] = diff
        summary["output"]["dim"] = int(out.shape[1])
    with open(args.output + ".json", "w") as f:
        json.dump(summary, f, indent=2)
    logger.info("ONNX export summary: %s", summary)
    return summary


def command(argv: Optional[List[str]]) -> None:
    """What the command runs: export, verify, print the summary."""
    from reid_plugins.utils.logger import setup_logger

    setup_logger(name="reid_plugins")
    print(json.dumps(main(argv), indent=2))


def run(argv: Optional[List[str]] = None) -> int:
    """The ``reid-export`` console script: :func:`command` through
    :func:`reid_plugins.utils.errors.run_cli` (one-line user errors, ``--debug``)."""
    from reid_plugins.utils.errors import run_cli

    return run_cli(command, argv)


if __name__ == "__main__":
    raise SystemExit(run())
