r"""``reid-export`` / ``tools/export_onnx.py``: export a model to ONNX and check it with
onnxruntime against PyTorch.

ReID models (ReIDBaseline, M3L, GMN instance features): one graph mapping ``images``
(N, 3, H, W) float32 RGB 0-255 crops (H, W = ``INPUT.SIZE_TEST`` unless ``--input-size``) to
``features`` (N, D), with a dynamic batch axis: their eval path (normalisation -> backbone ->
BNNeck -> L2 normalisation); other crop models export their ``reid_head_on_crops`` method
(or ``--method NAME``). The file is run with onnxruntime on a batch of a different size and
compared with PyTorch (max abs diff <= ``--atol``, default 1e-4).

Person search (TDN, OIM*): graphs on one resized scene image ``(1, 3, H, W)``, H, W =
``--input-size`` (default ``INPUT.MIN_SIZE_TEST`` x ``MAX_SIZE_TEST``). TDN writes
``<output>.detector.onnx`` (image -> boxes, scores, Part-1 map) and ``<output>.reid.onnx``
(image, Part-1 map, boxes -> features); OIM* writes ``<output>.onnx`` (image -> boxes,
scores, features) and ``<output>.query.onnx`` (image, boxes -> features). The glue and the
tensors are described in :mod:`reid_plugins.export.person_search`; boxes, scores and features
of the detections and of a query box are compared with the PyTorch model (``--atol``).

Examples::

    python tools/export_onnx.py --config-file projects/m3l/r50_to_market1501.yaml \
        --output output/m3l.onnx MODEL.WEIGHTS output/model_final.pth
    python tools/export_onnx.py --config-file projects/tdn/prw.yaml --output tdn.onnx \
        --input-size 600 960 MODEL.WEIGHTS tdn.pth     # tdn.detector.onnx + tdn.reid.onnx
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
from reid_plugins.export.person_search import (
    export_person_search,
    is_person_search,
    verify_person_search,
)
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
        help="crop size (default INPUT.SIZE_TEST); person search: the scene image size "
        "(default INPUT.MIN_SIZE_TEST x MAX_SIZE_TEST)",
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
    if is_person_search(model) and not args.method:
        return _export_person_search(cfg, model, args)
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


def _export_person_search(cfg, model, args) -> Dict:
    size = args.input_size or [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST]
    paths = export_person_search(model, args.output, image_size=size, opset=args.opset)
    summary = {
        "onnx": {k: os.path.abspath(v) for k, v in paths.items()},
        "meta_architecture": cfg.MODEL.META_ARCHITECTURE,
        "image": {"name": "images", "shape": [1, 3, int(size[0]), int(size[1])],
                  "format": "float32 RGB 0-255, resized"},
        "opset": args.opset,
        "max_abs_diff": None,
    }  # fmt: skip
    if not args.no_verify:
        summary["max_abs_diff"] = verify_person_search(
            model, paths, image_size=size, atol=args.atol
        )
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
