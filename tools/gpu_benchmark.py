#!/usr/bin/env python
"""One-command speed table for a GPU (under 5 minutes on one card), with a tiny CPU fallback.

    python tools/gpu_benchmark.py                    # full sizes on CUDA; --tiny on a CPU
    python tools/gpu_benchmark.py --tiny             # seconds, any machine (tested in CI)
    python tools/gpu_benchmark.py --json gpu.json    # also write the rows

Rows (every model is built from its project config through the model registry, with random
weights, on fixed random inputs; data loading is excluded):

* baseline training iterations/s, float32 and AMP: ``ReIDBaseline`` (ResNet-50, last stride 1,
  BNNeck, CE + triplet), 256x128, batch 64, the toolbox's step trainer (AMP = ``SOLVER.AMP``
  resolved for the device: float16 + grad scaler on CUDA, bfloat16 on CPUs with native
  bfloat16) with channels-last and the fused optimizer in the AMP row;
* M3L training iterations/s (``projects/m3l/Base-M3L.yaml``: 3 source domains x 64 images,
  meta-learning, MetaBN, memory), float32; the AMP row reports that ``MetaTrainer`` trains in
  float32 (``SOLVER.AMP: auto`` resolves to float32 for it);
* ReID feature extraction images/s (``inference_on_dataset``), float32 and AMP (TEST.AMP);
* TDN and OIM* inference images/s at 960x600, AMP (128 proposals per image; TDN keeps its
  top 10 boxes, as ``tools/benchmark.py``);
* ReID evaluation time at Market-1501 size (3,368 x 15,913, 2,048-d: distances on the device,
  ranking on the CPU) and person-search evaluation time at CUHK-SYSU size (2,900 queries,
  6,978 gallery images, gallery 100 and the full set).

``--tiny`` (automatic without CUDA unless ``--full``) shrinks every size (ResNet-18 at width
8, 64x32 crops, 96x160 scenes, 1 % of the evaluation sets) so that the whole table takes
seconds on a CPU; its figures only show that the command works.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from reid_plugins.utils.env import setup_environment  # noqa: E402

setup_environment()  # before torch is imported (OMP_WAIT_POLICY=PASSIVE unless set)

import numpy as np  # noqa: E402
import torch  # noqa: E402

SIZES = {
    # full: one GPU; tiny: a CPU in seconds
    "full": dict(depth=50, width_mult=64, crop=(256, 128), batch=64, domains=3, ids=700,
                 iters=10, warmup=3, extract=(128, 8), scene=(600, 960), scenes=20,
                 market=(3368, 15913, 751), search=(6978, 2900, 100), dim=2048),
    "tiny": dict(depth=18, width_mult=8, crop=(64, 32), batch=8, domains=2, ids=4,
                 iters=2, warmup=1, extract=(8, 2), scene=(96, 160), scenes=2,
                 market=(34, 160, 8), search=(60, 20, 10), dim=32),
}  # fmt: skip


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def per_second(fn: Callable[[], int], iters: int, warmup: int, device: str) -> float:
    """Median rate of ``fn`` (which returns how many items it processed) over ``iters`` calls."""
    for _ in range(warmup):
        fn()
    rates = []
    for _ in range(iters):
        _sync(device)
        t = time.perf_counter()
        n = fn()
        _sync(device)
        rates.append(n / (time.perf_counter() - t))
    return statistics.median(rates)


def seconds(fn: Callable[[], None], device: str) -> float:
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t


# ----------------------------------------------------------------------------- configs
def _reid_cfg(s: Dict, device: str, config_file: str = ""):
    import reid_plugins.methods  # noqa: F401  (registers the methods' models and trainers)
    from reid_plugins.config import add_all_configs, get_cfg

    cfg = add_all_configs(get_cfg())
    if config_file:
        cfg.merge_from_file(os.path.join(REPO, config_file))
    cfg.MODEL.DEVICE = device
    cfg.MODEL.BACKBONE.DEPTH = s["depth"]
    cfg.MODEL.BACKBONE.BASE_WIDTH = s["width_mult"]
    cfg.MODEL.BACKBONE.PRETRAIN_PATH = ""
    cfg.MODEL.BACKBONE.FROM_SCRATCH = True  # random weights on purpose: speed only
    cfg.INPUT.SIZE_TRAIN = list(s["crop"])
    cfg.INPUT.SIZE_TEST = list(s["crop"])
    cfg.SOLVER.IMS_PER_BATCH = s["batch"]
    return cfg


def _crop_batches(s: Dict, domains: int, seed: int = 0) -> List[List[Dict]]:
    g = torch.Generator().manual_seed(seed)
    h, w = s["crop"]
    k = 4 if s["batch"] >= 8 else 2
    out = []
    for d in range(domains):
        images = (torch.rand(s["batch"], 3, h, w, generator=g) * 255).round()
        out.append([{"image": images[i], "pid": d * s["ids"] + (i // k) % s["ids"],
                     "domain_pid": (i // k) % s["ids"], "domain": d, "camid": i % 2}
                    for i in range(s["batch"])])  # fmt: skip
    return out


# ----------------------------------------------------------------------------- rows
def train_rate(s: Dict, device: str, method: str, amp: bool) -> Optional[float]:
    """Training iterations/s of the baseline or M3L; None where the trainer has no AMP."""
    from reid_plugins.engine.defaults import TRAINER_REGISTRY
    from reid_plugins.utils.events import EventStorage

    if method == "baseline":
        cfg = _reid_cfg(s, device)
        cfg.MODEL.HEADS.NUM_CLASSES = s["ids"]
        batch = _crop_batches(s, 1)[0]
    else:
        cfg = _reid_cfg(s, device, "projects/m3l/Base-M3L.yaml")
        # names only (the trainer checks there are >= 2 domains); batches are fed directly
        cfg.DATASETS.TRAIN = [f"gpu_benchmark_domain{d}" for d in range(s["domains"])]
        cfg.SEED = 0
        batch = _crop_batches(s, s["domains"])
    cfg.SOLVER.AMP.ENABLED = "auto" if amp else False
    cfg.MODEL.CHANNELS_LAST = "auto"
    cfg.SOLVER.FUSED = amp
    trainer_cls = TRAINER_REGISTRY.get(cfg.TRAINER.NAME)
    if amp and trainer_cls.amp_dtype(cfg, device) is None:
        return None
    torch.manual_seed(0)
    num_pids = [s["ids"]] if method == "baseline" else [s["ids"]] * s["domains"]
    model = trainer_cls.build_model(cfg, num_pids).train()
    memory = getattr(model, "memory_loss", None)
    if memory is not None:  # random centroids instead of MemoryInitHook's feature pass
        for d, n in enumerate(memory.num_pids_per_domain):
            memory.initialize(d, torch.randn(n, memory.feat_dim, device=device), torch.arange(n))
    opt = trainer_cls.build_optimizer(cfg, model)

    def forever():
        while True:
            yield batch

    step = trainer_cls.build_step_trainer(trainer_cls, cfg, model, forever(), opt)

    def run():
        with EventStorage(0):
            step.run_step()
        return 1

    return per_second(run, s["iters"], s["warmup"], device)


def extract_rate(s: Dict, device: str, amp: bool) -> float:
    from reid_plugins.engine.defaults import DefaultTrainer
    from reid_plugins.evaluation import DatasetEvaluator, inference_on_dataset

    cfg = _reid_cfg(s, device)
    cfg.MODEL.HEADS.NUM_CLASSES = s["ids"]
    cfg.SOLVER.AMP.ENABLED = "auto" if amp else False  # channels-last follows it
    torch.manual_seed(0)
    model = DefaultTrainer.build_model(cfg).eval()
    per_batch, n_batches = s["extract"]
    g = torch.Generator().manual_seed(0)
    h, w = s["crop"]
    loader = [
        [{"image": (torch.rand(3, h, w, generator=g) * 255).round()} for _ in range(per_batch)]
        for _ in range(n_batches)
    ]

    def run():
        inference_on_dataset(model, loader, DatasetEvaluator(), amp="auto" if amp else False)
        return per_batch * n_batches

    return per_second(run, max(1, s["iters"] // 3), 1, device)


def search_rate(s: Dict, device: str, config_file: str, is_tdn: bool) -> float:
    """Person-search inference images/s under AMP (``TEST.AMP`` auto's dtype)."""
    import reid_plugins.methods  # noqa: F401  (registers the methods' models)
    from reid_plugins.config import add_all_configs, get_cfg
    from reid_plugins.modeling import build_model
    from reid_plugins.solver.precision import autocast, resolve_amp_dtype, to_float32

    cfg = add_all_configs(get_cfg())
    cfg.merge_from_file(os.path.join(REPO, config_file))
    cfg.MODEL.DEVICE = device
    cfg.MODEL.BACKBONE.PRETRAIN_PATH = ""
    if s is SIZES["tiny"]:
        cfg.MODEL.BACKBONE.DEPTH = s["depth"]
        cfg.MODEL.BACKBONE.BASE_WIDTH = s["width_mult"]
    cfg.MODEL.TDN.TEACHER.ENABLED = False
    cfg.MODEL.TDN.REID.NUM_PIDS = max(1, int(cfg.MODEL.TDN.REID.NUM_PIDS))
    cfg.MODEL.LOSSES.OIM.NUM_PIDS = max(1, int(cfg.MODEL.LOSSES.OIM.NUM_PIDS))
    ps = cfg.MODEL.PERSON_SEARCH
    ps.RPN.POST_NMS_TOPK_TEST = 128
    if is_tdn:
        ps.ROI_HEADS.DETECTIONS_PER_IMAGE = 10
        ps.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    h, w = s["scene"]
    g = torch.Generator().manual_seed(0)
    images = [
        {"image": torch.rand(3, h, w, generator=g) * 255, "height": h, "width": w,
         "image_id": f"random_{i}"}
        for i in range(s["scenes"])
    ]  # fmt: skip
    dtype = resolve_amp_dtype("auto", "auto", device, key="TEST.AMP")

    def run():
        with torch.no_grad(), autocast(device, dtype):
            for im in images:
                to_float32(model([im]))
        return len(images)

    return per_second(run, max(1, s["iters"] // 5), 1, device)


def reid_eval_seconds(s: Dict, device: str) -> float:
    from reid_plugins.evaluation.distance import compute_distance
    from reid_plugins.evaluation.rank import evaluate_rank

    nq, ng, npids = s["market"]
    rng = np.random.default_rng(0)
    qp = np.concatenate([np.arange(npids), rng.integers(0, npids, nq - npids)])
    gp = rng.integers(0, npids, ng)
    qc, gc = rng.integers(0, 6, nq), rng.integers(0, 6, ng)
    q = torch.from_numpy(rng.standard_normal((nq, s["dim"]), dtype=np.float32)).to(device)
    g = torch.from_numpy(rng.standard_normal((ng, s["dim"]), dtype=np.float32)).to(device)

    def run():
        dist = compute_distance(q, g, "cosine")
        evaluate_rank(dist.cpu().numpy(), qp, gp, qc, gc, 50)

    return seconds(run, device)


def search_eval_seconds(s: Dict) -> Dict[str, float]:
    import importlib.util

    from reid_plugins.evaluation.search_metrics import SearchGallery, search_cuhk_sysu

    path = os.path.join(REPO, "tools", "benchmark_search_eval.py")  # its synthetic data
    spec = importlib.util.spec_from_file_location("benchmark_search_eval_tool", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    images, queries, gallery_size = s["search"]
    args = tool.parse_args(
        ["--images", str(images), "--queries", str(queries), "--dim", str(s["dim"]),
         "--gallery-size", str(gallery_size)]
    )  # fmt: skip
    counts, dets, feats = tool.make_data(args, np)
    gallery, _names, qimgs, qfeats, protocol, _ctx = tool.build(args, np, counts, dets, feats)
    out = {}
    t = time.perf_counter()
    sg = SearchGallery(gallery, 0.5)
    out["index"] = time.perf_counter() - t
    t = time.perf_counter()
    search_cuhk_sysu(qfeats, qimgs, sg, protocol)
    out["gallery"] = time.perf_counter() - t
    t = time.perf_counter()
    search_cuhk_sysu(qfeats, qimgs, sg, protocol, full_set=True)
    out["full"] = time.perf_counter() - t
    return out


# ----------------------------------------------------------------------------- main
def main(argv: Optional[List[str]] = None) -> Dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (default without CUDA)")
    parser.add_argument("--full", action="store_true", help="full sizes even without CUDA")
    parser.add_argument("--device", default="auto", help="auto | cuda | cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    tiny = args.tiny or (device == "cpu" and not args.full)
    s = SIZES["tiny" if tiny else "full"]
    card = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    start = time.perf_counter()
    rows: List[tuple] = []

    def add(what: str, value, unit: str, note: str = "") -> None:
        rows.append((what, value, unit, note))
        shown = "n/a" if value is None else f"{value:.3f}"
        print(f"  {what}: {shown} {unit} {note}".rstrip(), flush=True)

    crop = "x".join(map(str, s["crop"]))
    for method in ("baseline", "m3l"):
        for amp in (False, True):
            rate = train_rate(s, device, method, amp)
            note = ""
            if rate is None:
                note = (
                    "(MetaTrainer trains in float32)"
                    if method == "m3l"
                    else "(no native mixed precision on this device: AMP auto = float32)"
                )
            what = f"{method} training, {'AMP' if amp else 'fp32'}, {crop}"
            add(what, rate, "it/s", note)
    for amp in (False, True):
        add(f"feature extraction, {'AMP' if amp else 'fp32'}, {crop}",
            extract_rate(s, device, amp), "img/s")  # fmt: skip
    scene = "x".join(map(str, s["scene"][::-1]))
    add(f"TDN inference, AMP, {scene}",
        search_rate(s, device, "projects/tdn/Base-TDN.yaml", True), "img/s")  # fmt: skip
    add(f"OIM* inference, AMP, {scene}",
        search_rate(s, device, "projects/oim/Base-OIM.yaml", False), "img/s")  # fmt: skip
    nq, ng, _ = s["market"]
    add(f"ReID evaluation {nq} x {ng}, {s['dim']}-d", reid_eval_seconds(s, device), "s")
    srch = search_eval_seconds(s)
    imgs, queries, gsize = s["search"]
    add(f"search evaluation {queries} queries, gallery {gsize}", srch["gallery"], "s",
        f"(+{srch['index']:.2f} s index)")  # fmt: skip
    add(f"search evaluation {queries} queries, full {imgs}-image gallery", srch["full"], "s")
    total = time.perf_counter() - start
    title = f"Speed on {card} ({'tiny sizes' if tiny else 'full sizes'}), {total:.0f} s in all"
    print(f"\n{title}\n| what | value | unit |\n|---|---|---|")
    for what, value, unit, note in rows:
        shown = "n/a" if value is None else f"{value:.2f}"
        print(f"| {what} | {shown} | {unit} {note}".rstrip() + " |")
    result = {
        "device": card,
        "tiny": tiny,
        "seconds": total,
        "rows": [dict(what=w, value=v, unit=u, note=n) for w, v, u, n in rows],
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    from reid_plugins.utils.errors import run_cli

    raise SystemExit(run_cli(main))
