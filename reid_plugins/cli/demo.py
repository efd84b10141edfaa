"""``reid-demo`` / ``tools/demo.py``: person search in a folder of scenes or a video, and ReID
ranking of crops.

Person search (a trained person-search model; the query is a scene + ``--query-box``, or a
cropped person when the box is omitted)::

    python tools/demo.py search --config-file projects/tdn/prw.yaml \
        --query query.jpg --query-box 120 40 180 220 --gallery scenes/ --output demo_out \
        MODEL.WEIGHTS output/model_final.pth
    python tools/demo.py search ... --gallery video.mp4 --frame-stride 5   # annotated video

writes ``<output>/ranked.json`` (the top-k detections over the whole gallery by cosine
similarity to the query), ``ranked.png`` (query + top-k scenes with the matched box),
``detections.json`` (every kept detection with its similarity; draw it with
``tools/visualize_results.py detections``) and the annotated scenes
(``annotated/<name>.jpg``, or ``annotated.mp4`` for a video): every kept detection in green,
labelled with its detection score and its similarity to the query, and the best match of each
scene thick in blue when its similarity >= ``--sim-thresh``.

ReID (a trained ReID model; query crop vs a folder of crops)::

    python tools/demo.py reid --config-file cfg.yaml --query crop.jpg --gallery crops/ \
        --output demo_out MODEL.WEIGHTS output/model_final.pth

writes ``ranked.json`` (all gallery crops ranked by cosine distance) and ``ranked.png`` (the
query and the top-k crops with their distances).
"""

from __future__ import annotations

import argparse
import heapq
import json
import logging
import os
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF
from tqdm import tqdm

from reid_plugins.data.detection_utils import read_image
from reid_plugins.data.scene_mapper import scene_resize_shape
from reid_plugins.engine import add_plugin_argument
from reid_plugins.evaluation.evaluator import inference_context
from reid_plugins.visualization import visualizer as vis

logger = logging.getLogger("reid_plugins.tools.demo")

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".mpg", ".mpeg", ".webm")


# ----------------------------------------------------------------------------- inputs
def list_images(folder: str) -> List[str]:
    """Image files of ``folder`` (recursive), sorted; raises when there are none."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"gallery folder '{folder}' does not exist")
    paths = sorted(
        os.path.join(d, f)
        for d, _, files in os.walk(folder)
        for f in files
        if f.lower().endswith(IMAGE_EXTS)
    )
    if not paths:
        raise FileNotFoundError(f"no image ({', '.join(IMAGE_EXTS)}) found in '{folder}'")
    return paths


def iter_gallery(
    source: str, frame_stride: int = 1, max_frames: Optional[int] = None
) -> Iterator[Tuple[str, np.ndarray]]:
    """``(name, RGB frame)`` of a folder of images or of every ``frame_stride``-th video frame
    (``frame_<index>``), at most ``max_frames`` of them."""
    if frame_stride < 1:
        raise ValueError(f"--frame-stride must be >= 1, got {frame_stride}")
    count = 0
    if os.path.isdir(source):
        for path in list_images(source):
            if max_frames is not None and count >= max_frames:
                return
            count += 1
            yield os.path.relpath(path, source), read_image(path)
        return
    if not source.lower().endswith(VIDEO_EXTS) or not os.path.isfile(source):
        raise FileNotFoundError(
            f"--gallery '{source}' is neither a folder of images nor a video file "
            f"({', '.join(VIDEO_EXTS)})"
        )
    cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        raise OSError(f"OpenCV cannot open the video '{source}'")
    try:
        index = 0
        while max_frames is None or count < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            if index % frame_stride == 0:
                count += 1
                yield f"frame_{index:06d}", cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        cap.release()


def video_info(path: str) -> Tuple[float, int]:
    """``(fps, frame_count)`` of a video (fps 25 when unknown)."""
    cap = cv2.VideoCapture(path)
    try:
        fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        return float(fps), int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()


def scene_input(image: np.ndarray, name: str, min_size: int, max_size: int) -> Dict:
    """A scene dict as ``SceneDatasetMapper`` makes it (resize rule of
    :func:`scene_resize_shape`, float32 0-255 CHW ``"image"``, original ``height/width``)."""
    h, w = image.shape[:2]
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    nh, nw = scene_resize_shape(h, w, min_size, max_size)
    if (nh, nw) != (h, w):
        t = TF.resize(t, [nh, nw], antialias=True)
    return {"image": t.float(), "height": h, "width": w, "image_id": name, "file_name": name}


# ----------------------------------------------------------------------------- search
def _np(x) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def query_feature(model, image: np.ndarray, box: Optional[Sequence[float]], sizes) -> np.ndarray:
    """L2-normalised feature of the query box (whole image when ``box`` is None) through
    ``model.extract_query`` (or ``model(inputs)`` when the model has none)."""
    h, w = image.shape[:2]
    box = [0.0, 0.0, float(w), float(h)] if box is None else [float(v) for v in box]
    if not (0 <= box[0] < box[2] <= w + 1 and 0 <= box[1] < box[3] <= h + 1):
        raise ValueError(f"--query-box {box} is not inside the {w}x{h} query image")
    inp = scene_input(image, "query", *sizes)
    inp["query_box"] = np.asarray(box, dtype=np.float32)
    extract = getattr(model, "extract_query", None) or model
    with inference_context(model), torch.no_grad():
        out = extract([inp])[0]
    if "query_feature" not in out:
        raise KeyError(f"the model's query output lacks 'query_feature' (keys {sorted(out)})")
    return _unit(_np(out["query_feature"]).reshape(-1))


def annotate_scene(
    image: np.ndarray, boxes: np.ndarray, scores: np.ndarray, sims: np.ndarray, sim_thresh: float
) -> np.ndarray:
    """Detections labelled ``score | sim``; the best match (sim >= ``sim_thresh``) in blue."""
    labels = [f"{sc:.2f} | sim {si:.2f}" for sc, si in zip(scores, sims)]
    out = vis.draw_boxes(image, boxes, [vis.CORRECT] * len(boxes), labels)
    if len(sims) and sims.max() >= sim_thresh:
        out = vis.draw_boxes(out, boxes[int(np.argmax(sims))][None], [vis.QUERY], thickness=4)
    return out


def run_search_demo(
    model: torch.nn.Module,
    query_image: str,
    query_box: Optional[Sequence[float]],
    gallery: str,
    output_dir: str,
    *,
    min_size: int,
    max_size: int,
    topk: int = 10,
    det_thresh: float = 0.5,
    sim_thresh: float = 0.5,
    batch_size: int = 1,
    frame_stride: int = 1,
    max_frames: Optional[int] = None,
) -> Dict:
    """Person search of the query in a folder / video (see the module docstring).

    ``model`` follows the PersonSearchEvaluator contract: ``model(scenes)`` ->
    ``[{"boxes" (original coordinates), "scores", "features"}]`` and
    ``model.extract_query(scenes with "query_box")`` -> ``[{"query_feature"}]``.

    Returns:
        The ``ranked.json`` payload.
    """
    os.makedirs(output_dir, exist_ok=True)
    qimg = read_image(query_image)
    qfeat = query_feature(model, qimg, query_box, (min_size, max_size))
    is_video = not os.path.isdir(gallery)
    writer, ann_dir = None, os.path.join(output_dir, "annotated")
    fps, nframes = video_info(gallery) if is_video else (0.0, 0)
    total = len(list_images(gallery)) if not is_video else max(1, nframes // frame_stride)
    total = min(total, max_frames) if max_frames is not None else total
    detections: List[Dict] = []
    heap: List[Tuple[float, int, int, int]] = []  # top-k (similarity, -order, image, box)
    frames: Dict[int, np.ndarray] = {}  # images holding a current top-k detection (video)
    names: List[str] = []
    counter = [0]

    def flush(batch: List[Tuple[str, np.ndarray]]) -> None:
        nonlocal writer
        inputs = [scene_input(img, name, min_size, max_size) for name, img in batch]
        with inference_context(model), torch.no_grad():
            outputs = model(inputs)
        for (name, img), out in zip(batch, outputs):
            boxes = _np(out["boxes"]).reshape(-1, 4)
            scores = _np(out["scores"]).reshape(-1)
            feats = _np(out["features"]).reshape(len(boxes), -1)
            keep = scores >= det_thresh
            boxes, scores, feats = boxes[keep], scores[keep], feats[keep]
            sims = _unit(feats) @ qfeat if len(boxes) else np.zeros(0, np.float32)
            idx = len(names)
            names.append(name)
            detections.append(
                {
                    "image_id": name,
                    "boxes": boxes.tolist(),
                    "scores": scores.tolist(),
                    "similarities": sims.tolist(),
                }
            )
            for j, s in enumerate(sims):  # ties: the earlier detection ranks first
                item = (float(s), -counter[0], idx, j)
                counter[0] += 1
                if len(heap) < topk:
                    heapq.heappush(heap, item)
                elif item > heap[0]:
                    heapq.heapreplace(heap, item)
            if is_video:  # keep only the frames needed by ranked.png
                live = {i for _, _, i, _ in heap}
                if idx in live:
                    frames[idx] = img
                for i in [i for i in frames if i not in live]:
                    del frames[i]
            bgr = cv2.cvtColor(
                annotate_scene(img, boxes, scores, sims, sim_thresh), cv2.COLOR_RGB2BGR
            )
            if is_video:
                if writer is None:
                    path = os.path.join(output_dir, "annotated.mp4")
                    size = (bgr.shape[1], bgr.shape[0])
                    fourcc = cv2.VideoWriter_fourcc(*"mp4v")
                    writer = cv2.VideoWriter(path, fourcc, fps / frame_stride, size)
                    if not writer.isOpened():
                        raise OSError(f"OpenCV cannot write the video '{path}'")
                writer.write(bgr)
            else:
                path = os.path.join(ann_dir, os.path.splitext(name)[0] + ".jpg")
                os.makedirs(os.path.dirname(path), exist_ok=True)
                cv2.imwrite(path, bgr)

    batch: List[Tuple[str, np.ndarray]] = []
    try:
        bar = tqdm(iter_gallery(gallery, frame_stride, max_frames), total=total, desc="search")
        for item in bar:
            batch.append(item)
            if len(batch) >= batch_size:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
    finally:
        if writer is not None:
            writer.release()
    if not names:
        raise ValueError(f"the gallery '{gallery}' yielded no image")
    best = sorted(heap, reverse=True)
    ranked = [
        {
            "rank": r + 1,
            "image_id": names[i],
            "box": detections[i]["boxes"][j],
            "det_score": detections[i]["scores"][j],
            "similarity": s,
        }
        for r, (s, _, i, j) in enumerate(best)
    ]
    payload = {
        "query": {"image": query_image, "box": None if query_box is None else list(query_box)},
        "gallery": gallery,
        "settings": {"det_thresh": det_thresh, "sim_thresh": sim_thresh, "topk": topk},
        "num_gallery_images": len(names),
        "num_detections": int(sum(len(d["boxes"]) for d in detections)),
        "ranked": ranked,
    }
    with open(os.path.join(output_dir, "ranked.json"), "w") as f:
        json.dump(payload, f, indent=1)
    with open(os.path.join(output_dir, "detections.json"), "w") as f:
        json.dump({"source": gallery, "images": detections}, f)
    if ranked:
        entries = [
            {
                "image": frames[i] if is_video else read_image(os.path.join(gallery, names[i])),
                "box": e["box"],
                "score": e["similarity"],
                "correct": None,
                "label": e["image_id"],
            }
            for e, (_, _, i, _) in zip(ranked, best)
        ]
        png = vis.draw_search_result(
            qimg,
            query_box,
            entries,
            query_label=os.path.basename(query_image),
            title=f"top-{len(ranked)} of {payload['num_detections']} detections in "
            f"{len(names)} images",
        )
        vis.save_png(os.path.join(output_dir, "ranked.png"), png)
    logger.info(
        "Search demo: %d images, %d detections -> %s",
        len(names),
        payload["num_detections"],
        output_dir,
    )
    return payload


# ----------------------------------------------------------------------------- ReID
def extract_crop_features(
    model: torch.nn.Module, paths: Sequence[str], transforms, batch_size: int = 32
) -> np.ndarray:
    """L2-normalised ``model`` features ``(N, D)`` of crop files (evaluation transforms)."""
    feats = []
    with inference_context(model), torch.no_grad():
        for s in tqdm(range(0, len(paths), batch_size), desc="reid features", leave=False):
            batch = [
                {"image": transforms(read_image(p)), "file_name": p}
                for p in paths[s : s + batch_size]
            ]
            feats += [_np(o["feature"]).reshape(-1) for o in model(batch)]
    return _unit(np.stack(feats))


def run_reid_demo(
    model: torch.nn.Module,
    query: str,
    gallery: str,
    output_dir: str,
    *,
    transforms,
    topk: int = 10,
    batch_size: int = 32,
) -> Dict:
    """Rank the crops of ``gallery`` (a folder) by cosine distance to the ``query`` crop;
    write ``ranked.json`` (all of them) and ``ranked.png`` (top-k). Returns the payload."""
    paths = list_images(gallery)
    q = extract_crop_features(model, [query], transforms, 1)
    g = extract_crop_features(model, paths, transforms, batch_size)
    dist = 1.0 - (g @ q[0])
    order = np.argsort(dist, kind="stable")
    payload = {
        "query": query,
        "gallery": gallery,
        "metric": "cosine",
        "ranked": [
            {"rank": r + 1, "file": paths[i], "distance": float(dist[i])}
            for r, i in enumerate(order)
        ],
    }
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "ranked.json"), "w") as f:
        json.dump(payload, f, indent=1)
    top = order[:topk]
    png = vis.draw_reid_ranking(
        query,
        [paths[i] for i in top],
        [float(dist[i]) for i in top],
        None,
        query_label=os.path.basename(query),
        gallery_labels=[os.path.basename(paths[i]) for i in top],
    )
    vis.save_png(os.path.join(output_dir, "ranked.png"), png)
    return payload


# ----------------------------------------------------------------------------- CLI
def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("search", "reid"):
        p = sub.add_parser(name)
        p.add_argument("--config-file", required=True, metavar="FILE")
        p.add_argument("--query", required=True, help="query image (scene or person crop)")
        p.add_argument(
            "--gallery",
            required=True,
            help="folder of images" + (" or a video file" if name == "search" else ""),
        )
        p.add_argument("--output", required=True, help="output folder")
        p.add_argument("--topk", type=int, default=10, help="results in ranked.png / .json")
        p.add_argument("--batch-size", type=int, default=1 if name == "search" else 32)
        if name == "search":
            p.add_argument(
                "--query-box",
                type=float,
                nargs=4,
                default=None,
                metavar=("X1", "Y1", "X2", "Y2"),
                help="query person in the query image (omit for a cropped person)",
            )
            p.add_argument(
                "--det-thresh",
                type=float,
                default=None,
                help="keep detections scoring >= this (default TEST.SEARCH.DET_THRESH)",
            )
            p.add_argument(
                "--sim-thresh",
                type=float,
                default=0.5,
                help="highlight a scene's best match when its similarity >= this",
            )
            p.add_argument("--frame-stride", type=int, default=1, help="video: every N-th frame")
            p.add_argument("--max-frames", type=int, default=None, help="stop after N images")
        add_plugin_argument(p)
        p.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE overrides")
    return parser.parse_args(argv)


def load_model(config_file: str, opts: Sequence[str], plugins: Sequence[str] = ()):
    """``(cfg, model)``: plugins, defaults + every registered config subtree, the file, the
    overrides (:func:`reid_plugins.engine.setup_cfg`); weights from ``MODEL.WEIGHTS``
    (required)."""
    import reid_plugins.methods  # noqa: F401  (registers the built-in methods)
    from reid_plugins.checkpoint import Checkpointer
    from reid_plugins.engine import setup_cfg
    from reid_plugins.modeling import build_model

    cfg = setup_cfg(config_file=config_file, opts=list(opts or []), plugins=plugins)
    if not cfg.MODEL.WEIGHTS:
        raise SystemExit("demo: MODEL.WEIGHTS is empty; pass MODEL.WEIGHTS path/to/model.pth")
    model = build_model(cfg)
    Checkpointer(model).load(cfg.MODEL.WEIGHTS, checkpointables=[])
    return cfg, model.eval()


def main(argv: Optional[List[str]] = None) -> Dict:
    args = parse_args(argv)
    cfg, model = load_model(args.config_file, args.opts, args.plugin)
    if args.command == "search":
        det = cfg.TEST.SEARCH.DET_THRESH if args.det_thresh is None else args.det_thresh
        return run_search_demo(
            model,
            args.query,
            args.query_box,
            args.gallery,
            args.output,
            min_size=cfg.INPUT.MIN_SIZE_TEST,
            max_size=cfg.INPUT.MAX_SIZE_TEST,
            topk=args.topk,
            det_thresh=det,
            sim_thresh=args.sim_thresh,
            batch_size=args.batch_size,
            frame_stride=args.frame_stride,
            max_frames=args.max_frames,
        )
    from reid_plugins.data.transforms import build_reid_transforms

    return run_reid_demo(
        model,
        args.query,
        args.gallery,
        args.output,
        transforms=build_reid_transforms(cfg, is_train=False),
        topk=args.topk,
        batch_size=args.batch_size,
    )


def command(argv: Optional[List[str]]) -> None:
    """What the command runs: the demo, then its summary printed."""
    from reid_plugins.utils.logger import setup_logger

    setup_logger(name="reid_plugins")
    result = main(argv)
    print(json.dumps({k: v for k, v in result.items() if k != "ranked"}, indent=1))


def run(argv: Optional[List[str]] = None) -> int:
    """The ``reid-demo`` console script: :func:`command` through
    :func:`reid_plugins.utils.errors.run_cli` (one-line user errors, ``--debug``)."""
    from reid_plugins.utils.errors import run_cli

    return run_cli(command, argv)


if __name__ == "__main__":
    raise SystemExit(run())
