#!/usr/bin/env python
"""Inference speed of TDN vs OIM* on the same images in the same run (TDN paper, Table VI).

Both models are built from their configs (ResNet50-IBN-a, weights from ``--tdn-weights`` /
``--oim-weights`` or random), in eval mode, on the same ``(3, H, W)`` images (random pixels,
or the first images of a registered scene set with ``--dataset``). The setting of Table VII
is forced by default: 128 RPN proposals per image for both models; TDN keeps at most
``--boxes`` (10) final boxes, and with random weights its score threshold is 0 so that exactly
the top ``--boxes`` detections reach Part-2 (``--keep-thresholds`` keeps the configs'
thresholds, e.g. with trained weights). OIM* runs Part-2 on every proposal, as in the paper.

Timing: ``--warmup`` passes, then ``--repeats`` timed passes over all images, alternating the
two models so that both see the same machine load; the median images/s over repeats is
reported with the process CPU time per image. CUDA is synchronised around each pass. On CPU
``OMP_WAIT_POLICY`` defaults to ``PASSIVE`` (see the comment below the docstring).

Example::

    python tools/benchmark.py                     # CPU here, GPU when available
    python tools/benchmark.py --repeats 5 --images 4 --device cuda --json speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from reid_plugins.utils.env import setup_environment  # noqa: E402

# Idle OpenMP threads sleep instead of spinning (OMP_WAIT_POLICY=PASSIVE unless set): on a
# shared, busy CPU spinning threads burn the cores the other threads need and penalise the
# model with more, smaller kernels (TDN) far more than the one with a few large batched ones
# (OIM*). Set OMP_WAIT_POLICY yourself (e.g. ACTIVE on a dedicated machine) to override.
setup_environment()  # before torch is imported

import torch  # noqa: E402


def build(config_file: str, weights: str, args, is_tdn: bool) -> torch.nn.Module:
    """The model of ``config_file`` for timing (see the module docstring)."""
    import reid_plugins.methods  # noqa: F401  (registers the methods)
    from reid_plugins.checkpoint import Checkpointer
    from reid_plugins.engine import setup_cfg
    from reid_plugins.modeling import build_model

    cfg = setup_cfg(config_file=config_file, opts=[], plugins=args.plugin)
    cfg.MODEL.DEVICE = args.device
    cfg.MODEL.BACKBONE.PRETRAIN_PATH = ""
    if int(cfg.MODEL.TDN.REID.NUM_PIDS) <= 0:
        cfg.MODEL.TDN.REID.NUM_PIDS = 1
    if int(cfg.MODEL.LOSSES.OIM.NUM_PIDS) <= 0:
        cfg.MODEL.LOSSES.OIM.NUM_PIDS = 1
    ps = cfg.MODEL.PERSON_SEARCH
    ps.RPN.POST_NMS_TOPK_TEST = args.proposals
    if is_tdn:
        ps.ROI_HEADS.DETECTIONS_PER_IMAGE = args.boxes
        if not args.keep_thresholds:
            ps.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    model = build_model(cfg)
    if weights:
        Checkpointer(model).load(weights, checkpointables=[])
    return model.eval()


def load_images(args) -> List[Dict]:
    """``--images`` scene inputs: random pixels, or the first images of ``--dataset``."""
    if args.dataset:
        import reid_plugins.methods  # noqa: F401  (registers the methods)
        from reid_plugins.data.scene_build import build_scene_test_loader
        from reid_plugins.engine import setup_cfg

        cfg = setup_cfg(config_file="", opts=[], plugins=args.plugin)
        cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = min(args.height, args.width), max(
            args.height, args.width
        )
        cfg.DATALOADER.NUM_WORKERS = 0
        cfg.TEST.SEARCH.IMS_PER_BATCH = 1
        out = []
        for batch in build_scene_test_loader(cfg, args.dataset):
            out += batch
            if len(out) >= args.images:
                break
        return out[: args.images]
    g = torch.Generator().manual_seed(0)
    return [
        {"image": torch.rand(3, args.height, args.width, generator=g) * 255,
         "height": args.height, "width": args.width, "image_id": f"random_{i}"}
        for i in range(args.images)
    ]  # fmt: skip


class _Part2Counter:
    """Counts RoIs entering Part-2 (forward hook on its first stage)."""

    def __init__(self, stage: torch.nn.Module) -> None:
        self.count = 0
        self.handle = stage.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        self.count += int(inputs[0].shape[0])


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.no_grad()
def time_pass(model, images: List[Dict], batch_size: int, device: str, amp: bool = False):
    """``(wall seconds, process CPU seconds)`` of one inference pass over ``images``
    (``amp``: under autocast, bfloat16 on CPU and float16 on CUDA)."""
    from reid_plugins.solver.precision import autocast

    dtype = (torch.bfloat16 if device == "cpu" else torch.float16) if amp else None
    ctx = autocast(device.split(":")[0], dtype)
    _sync(device)
    w, c = time.perf_counter(), time.process_time()
    for i in range(0, len(images), batch_size):
        with ctx:
            model(images[i : i + batch_size])
    _sync(device)
    return time.perf_counter() - w, time.process_time() - c


def main(argv: Optional[List[str]] = None) -> Dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    from reid_plugins.engine import add_plugin_argument

    add_plugin_argument(parser)
    parser.add_argument("--tdn-config", default="projects/tdn/Base-TDN.yaml")
    parser.add_argument("--oim-config", default="projects/oim/Base-OIM.yaml")
    parser.add_argument("--tdn-weights", default="")
    parser.add_argument("--oim-weights", default="")
    parser.add_argument("--height", type=int, default=600)
    parser.add_argument("--width", type=int, default=960)
    parser.add_argument("--proposals", type=int, default=128, help="RPN proposals per image")
    parser.add_argument("--boxes", type=int, default=10, help="TDN final boxes per image")
    parser.add_argument(
        "--keep-thresholds",
        action="store_true",
        help="keep the configs' TDN score threshold (trained weights)",
    )
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    parser.add_argument("--dataset", default="", help="registered scene set for real images")
    parser.add_argument("--json", default="")
    parser.add_argument(
        "--amp",
        action="store_true",
        help="both models under autocast (bfloat16 on CPU, float16 on CUDA) and channels-last",
    )
    args = parser.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    images = load_images(args)
    models = {
        "TDN": build(args.tdn_config, args.tdn_weights, args, True),
        "OIM*": build(args.oim_config, args.oim_weights, args, False),
    }
    if args.amp:
        models = {k: m.to(memory_format=torch.channels_last) for k, m in models.items()}
    counters = {k: _Part2Counter(m.backbone.res4) for k, m in models.items()}
    for _ in range(args.warmup):
        for m in models.values():
            time_pass(m, images, args.batch_size, args.device, args.amp)
    for c in counters.values():
        c.count = 0
    walls: Dict[str, List[float]] = {k: [] for k in models}
    cpus: Dict[str, List[float]] = {k: [] for k in models}
    for r in range(args.repeats):
        order = list(models) if r % 2 == 0 else list(reversed(list(models)))
        for k in order:
            wall, cpu = time_pass(models[k], images, args.batch_size, args.device, args.amp)
            walls[k].append(wall)
            cpus[k].append(cpu)
            print(
                f"repeat {r + 1}/{args.repeats} {k}: {len(images) / wall:.3f} images/s", flush=True
            )
    n = len(images)
    result = {
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(),
        "threads": torch.get_num_threads(),
        "amp": bool(args.amp),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "image_size": [args.height, args.width],
        "images": n,
        "repeats": args.repeats,
        "models": {},
    }
    for k in models:
        fps = [n / w for w in walls[k]]
        result["models"][k] = {
            "images_per_s": statistics.median(fps),
            "all_images_per_s": fps,
            "s_per_image": statistics.median(walls[k]) / n,
            "cpu_s_per_image": statistics.median(cpus[k]) / n,
            "part2_rois_per_image": counters[k].count / (n * args.repeats),
        }
    tdn, oim = result["models"]["TDN"], result["models"]["OIM*"]
    result["speedup"] = tdn["images_per_s"] / oim["images_per_s"]
    print(f"\nInference speed on {result['device']} ({result['threads']} threads"
          f"{', autocast + channels-last' if args.amp else ', float32'}), "
          f"{args.width}x{args.height}, {n} images x {args.repeats} repeats (median)")  # fmt: skip
    print(
        f"{'model':<6} {'images/s':>9} {'s/image':>8} {'CPU s/image':>12} {'Part-2 RoIs/image':>18}"
    )
    for k, v in result["models"].items():
        print(f"{k:<6} {v['images_per_s']:9.3f} {v['s_per_image']:8.3f} "
              f"{v['cpu_s_per_image']:12.3f} {v['part2_rois_per_image']:18.1f}")  # fmt: skip
    print(f"TDN / OIM* speed ratio: {result['speedup']:.2f}x (paper, TITAN RTX: 34.3 / 11.5 = "
          f"{34.3 / 11.5:.2f}x on PRW)")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    from reid_plugins.utils.errors import run_cli

    raise SystemExit(run_cli(main))
