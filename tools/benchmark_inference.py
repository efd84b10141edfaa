#!/usr/bin/env python
"""ReID feature-extraction throughput: the evaluation path in float32 vs its default fast path,
with ONNX Runtime timed next to them in the same run.

The model is the toolbox's ReID baseline (ResNet-50, last stride 1, BNNeck; random weights)
in eval mode; the images are ``--batches`` batches of ``--batch`` random 256x128 crops fed as
the test loader feeds them. Variants (``--variants``):

* ``fp32``: ``inference_on_dataset(..., amp=False)`` on a contiguous model (the evaluation
  path before the fast path);
* ``fast``: ``inference_on_dataset(..., amp="auto")`` on a model laid out as
  ``MODEL.CHANNELS_LAST: auto`` makes it (``TEST.AMP.ENABLED``'s default: bfloat16 autocast +
  channels-last on CPUs with native bfloat16, float16 on CUDA);
* ``onnxruntime``: the model exported with ``reid_plugins.export`` (float32, dynamic batch),
  run by an onnxruntime ``InferenceSession`` (CPU provider, ``--threads`` intra-op threads)
  on the same batches.

All variants see the same batches; timing is interleaved (order alternating per repeat) and
the median images/s over ``--repeats`` passes is reported, with each variant's largest
feature deviation from float32 (1 - cosine). On CPU ``OMP_WAIT_POLICY`` defaults to
``PASSIVE``.

Example::

    python tools/benchmark_inference.py --threads 2
    python tools/benchmark_inference.py --depth 18 --height 64 --width 32 --batches 1  # tiny
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from reid_plugins.utils.env import setup_environment  # noqa: E402

setup_environment()  # before torch is imported (OMP_WAIT_POLICY=PASSIVE unless set)

import numpy as np  # noqa: E402
import torch  # noqa: E402


def build_model(args):
    from reid_plugins.config import get_cfg
    from reid_plugins.modeling import build_model as _build

    cfg = get_cfg()
    cfg.MODEL.DEVICE = args.device
    cfg.MODEL.BACKBONE.DEPTH = args.depth
    cfg.MODEL.BACKBONE.LAST_STRIDE = 1
    cfg.MODEL.HEADS.NUM_CLASSES = 751
    cfg.INPUT.SIZE_TEST = [args.height, args.width]
    torch.manual_seed(0)
    return _build(cfg).eval()


def make_loader(args) -> List[List[Dict]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(args.batches):
        images = (torch.rand(args.batch, 3, args.height, args.width, generator=g) * 255).round()
        out.append([{"image": images[i], "pid": i, "camid": 0} for i in range(args.batch)])
    return out


class _Features:
    """Minimal evaluator keeping the features (what ReIDEvaluator.process does first)."""

    def reset(self):
        self.feats = []

    def process(self, inputs, outputs):
        self.feats.append(torch.stack([o["feature"] for o in outputs]))

    def evaluate(self):
        return {}


def torch_pass(model, loader, amp):
    from reid_plugins.evaluation import inference_on_dataset

    ev = _Features()

    def run():
        inference_on_dataset(model, loader, ev, amp=amp, desc="bench")
        return torch.cat(ev.feats)

    return run


def onnx_pass(model, loader, args):
    import onnxruntime as ort

    from reid_plugins.export.onnx import build_export_wrapper, export_onnx

    path = os.path.join(tempfile.mkdtemp(prefix="bench_onnx_"), "reid.onnx")
    export_onnx(build_export_wrapper(model), path, input_size=(args.height, args.width))
    opts = ort.SessionOptions()
    if args.threads > 0:
        opts.intra_op_num_threads = args.threads
        opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    arrays = [torch.stack([b["image"] for b in batch]).numpy() for batch in loader]

    def run():
        return torch.from_numpy(np.concatenate([sess.run(None, {name: a})[0] for a in arrays]))

    return run


def main(argv: Optional[List[str]] = None) -> Dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", nargs="+", default=["fp32", "fast", "onnxruntime"])
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (0 = default)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    from reid_plugins.solver.precision import (
        model_device_type,
        resolve_amp_dtype,
        resolve_channels_last,
    )

    model = build_model(args)
    loader = make_loader(args)
    fast_model = copy.deepcopy(model)
    fast_dtype = resolve_amp_dtype("auto", "auto", model_device_type(model), key="TEST.AMP")
    if resolve_channels_last("auto", fast_dtype):
        fast_model = fast_model.to(memory_format=torch.channels_last)
    builders: Dict[str, Callable] = {
        "fp32": lambda: torch_pass(model, loader, False),
        "fast": lambda: torch_pass(fast_model, loader, "auto"),
        "onnxruntime": lambda: onnx_pass(model, loader, args),
    }
    unknown = set(args.variants) - set(builders)
    if unknown:
        parser.error(f"unknown --variants {sorted(unknown)}; choose from {sorted(builders)}")
    runs = {v: builders[v]() for v in args.variants}
    descs = {
        "fp32": "inference_on_dataset, float32, contiguous",
        "fast": f"inference_on_dataset, default (TEST.AMP auto): {fast_dtype or 'float32'}"
        + (", channels-last" if resolve_channels_last("auto", fast_dtype) else ""),
        "onnxruntime": "onnxruntime CPUExecutionProvider, float32 export",
    }
    feats: Dict[str, torch.Tensor] = {}
    for _ in range(args.warmup):
        for v, run in runs.items():
            feats[v] = run()
    n = args.batch * args.batches
    fps: Dict[str, List[float]] = {v: [] for v in runs}
    names = list(runs)
    for r in range(args.repeats):
        for v in names if r % 2 == 0 else names[::-1]:
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
            feats[v] = runs[v]()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            fps[v].append(n / (time.perf_counter() - t))
            print(f"repeat {r + 1}/{args.repeats} {v}: {fps[v][-1]:.2f} img/s", flush=True)
    ref = feats.get("fp32")
    device = args.device if args.device == "cpu" else torch.cuda.get_device_name()
    result = {
        "device": device,
        "threads": torch.get_num_threads(),
        "setting": f"ResNet-{args.depth} ReID baseline, {args.height}x{args.width}, "
        f"batch {args.batch} x {args.batches}",
        "variants": {},
    }
    for v in runs:
        dev = None
        if ref is not None:
            cos = torch.nn.functional.cosine_similarity(feats[v].float().cpu(), ref.cpu(), dim=1)
            dev = float((1 - cos).max())
        result["variants"][v] = {
            "what": descs[v],
            "images_per_s": statistics.median(fps[v]),
            "all_images_per_s": fps[v],
            "max_1_minus_cos_vs_fp32": dev,
        }
    base = result["variants"].get("fp32", next(iter(result["variants"].values())))
    print(f"\nFeature extraction on {device} ({result['threads']} threads), {result['setting']}, "
          f"median of {args.repeats} interleaved passes")  # fmt: skip
    print(f"{'variant':<12} {'img/s':>8} {'vs fp32':>8} {'max 1-cos':>10}  what")
    for v, r in result["variants"].items():
        r["speedup_vs_fp32"] = r["images_per_s"] / base["images_per_s"]
        d = "-" if r["max_1_minus_cos_vs_fp32"] is None else f"{r['max_1_minus_cos_vs_fp32']:.1e}"
        print(f"{v:<12} {r['images_per_s']:8.2f} {r['speedup_vs_fp32']:7.2f}x {d:>10}  "
              f"{r['what']}")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    from reid_plugins.utils.errors import run_cli

    raise SystemExit(run_cli(main))
