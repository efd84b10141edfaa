"""Visualisation of ReID / person-search results from the evaluators' JSON dumps (no
re-inference): ranked lists, person-search results, detections and t-SNE of features.

All drawing functions take and return RGB ``uint8`` arrays ``(H, W, 3)``; :func:`save_png`
writes them. Colours: query = blue, correct = green, wrong = red, unknown correctness = orange,
unlabelled person = grey.

* ReID: :func:`draw_reid_ranking` (query + top-k gallery crops, green/red borders, distances);
  :func:`visualize_reid_dump` renders ``reid_topk_<dataset>.json`` of
  :class:`~reid_plugins.evaluation.ReIDEvaluator`.
* Person search: :func:`draw_search_result` (query scene with its box + top-k gallery scenes
  with the matched box and a zoomed inset, as TDN Fig. 7-8); :func:`visualize_search_dump`
  renders ``search_results_<protocol>.json`` of
  :class:`~reid_plugins.evaluation.PersonSearchEvaluator`.
* Detections: :func:`draw_detections` (boxes, scores, pids) and :func:`load_detections`.
* Features: :func:`save_features` (run a model over a loader, write an ``.npz``),
  :func:`tsne_embed` and :func:`visualize_tsne` (t-SNE coloured by domain and by identity,
  as M3L Fig. 5 / Fig. A; needs scikit-learn).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from tqdm import tqdm

__all__ = [
    "CORRECT",
    "WRONG",
    "QUERY",
    "NEUTRAL",
    "UNKNOWN",
    "load_rgb",
    "save_png",
    "fit_image",
    "make_grid",
    "draw_boxes",
    "draw_reid_ranking",
    "visualize_reid_dump",
    "draw_search_result",
    "visualize_search_dump",
    "make_image_resolver",
    "draw_detections",
    "load_detections",
    "save_features",
    "load_features",
    "tsne_embed",
    "plot_embedding",
    "visualize_tsne",
]

logger = logging.getLogger(__name__)

CORRECT = (0, 170, 0)
WRONG = (220, 30, 30)
QUERY = (30, 110, 255)
NEUTRAL = (140, 140, 140)
UNKNOWN = (255, 165, 0)  # result whose correctness is unknown (demo rankings)
_WHITE = (255, 255, 255)
_FONT = cv2.FONT_HERSHEY_SIMPLEX

ImageLike = Union[str, np.ndarray]


# ----------------------------------------------------------------------------- basic drawing
def load_rgb(image: ImageLike, image_root: Optional[str] = None) -> np.ndarray:
    """An RGB uint8 array: ``image`` itself, or the file it names (relative paths are
    joined to ``image_root`` when given). Errors name the file (``ImageReadError``)."""
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB array, got shape {image.shape}")
        return image
    from ..data.detection_utils import read_image

    path = image
    if image_root and not os.path.isabs(path) and not os.path.exists(path):
        path = os.path.join(image_root, path)
    return read_image(path, format="RGB")


def save_png(path: str, image: np.ndarray) -> str:
    """Write an RGB array as PNG (parent folders created); returns ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not cv2.imwrite(path, cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write image '{path}'")
    return path


def fit_image(
    image: np.ndarray, size: Tuple[int, int], fill: int = 255
) -> Tuple[np.ndarray, float, Tuple[int, int]]:
    """Resize keeping the aspect ratio and centre on a ``size = (h, w)`` canvas.

    Returns:
        ``(canvas, scale, (offset_x, offset_y))``: a point ``(x, y)`` of ``image`` is at
        ``(x * scale + offset_x, y * scale + offset_y)`` on the canvas.
    """
    h, w = int(size[0]), int(size[1])
    ih, iw = image.shape[:2]
    scale = min(h / ih, w / iw)
    nh, nw = max(1, int(round(ih * scale))), max(1, int(round(iw * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp)
    canvas = np.full((h, w, 3), fill, dtype=np.uint8)
    ox, oy = (w - nw) // 2, (h - nh) // 2
    canvas[oy : oy + nh, ox : ox + nw] = resized
    return canvas, scale, (ox, oy)


def _font_scale(width: int) -> float:
    return float(np.clip(width / 230.0, 0.35, 0.6))


def _caption(tile: np.ndarray, lines: Sequence[str], color=(0, 0, 0)) -> np.ndarray:
    """Append a white band with one text line per entry below ``tile``."""
    scale = _font_scale(tile.shape[1])
    line_h = int(round(28 * scale)) + 2
    band = np.full((line_h * len(lines) + 2, tile.shape[1], 3), 255, dtype=np.uint8)
    for i, text in enumerate(lines):
        y = line_h * (i + 1) - 3
        cv2.putText(band, str(text), (2, y), _FONT, scale, color, 1, cv2.LINE_AA)
    return np.concatenate([tile, band], axis=0)


def _border(tile: np.ndarray, color, thickness: int) -> np.ndarray:
    return cv2.copyMakeBorder(
        tile, thickness, thickness, thickness, thickness, cv2.BORDER_CONSTANT, value=color
    )


def make_grid(tiles: Sequence[np.ndarray], ncols: int, gap: int = 6) -> np.ndarray:
    """Tiles (possibly of different sizes) on a white grid, ``ncols`` per row, top-left
    aligned in cells as large as the largest tile."""
    if not tiles:
        raise ValueError("make_grid: no tiles")
    ncols = max(1, min(int(ncols), len(tiles)))
    ch = max(t.shape[0] for t in tiles)
    cw = max(t.shape[1] for t in tiles)
    nrows = (len(tiles) + ncols - 1) // ncols
    out = np.full((nrows * (ch + gap) + gap, ncols * (cw + gap) + gap, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, ncols)
        y, x = gap + r * (ch + gap), gap + c * (cw + gap)
        out[y : y + t.shape[0], x : x + t.shape[1]] = t
    return out


def _title(image: np.ndarray, text: str) -> np.ndarray:
    return np.concatenate([_caption(np.zeros((0, image.shape[1], 3), np.uint8), [text]), image])


def draw_boxes(
    image: np.ndarray,
    boxes: np.ndarray,
    colors: Sequence[Tuple[int, int, int]],
    labels: Optional[Sequence[str]] = None,
    thickness: int = 2,
) -> np.ndarray:
    """A copy of ``image`` with ``boxes`` (N, 4) x1y1x2y2 drawn, each in its colour, with an
    optional label above (inside when at the top edge)."""
    out = np.ascontiguousarray(image).copy()
    scale = _font_scale(min(out.shape[1], 520)) * 0.9
    for i, b in enumerate(np.asarray(boxes, dtype=np.float64).reshape(-1, 4)):
        x1, y1, x2, y2 = (int(round(v)) for v in b)
        col = tuple(int(c) for c in colors[i])
        cv2.rectangle(out, (x1, y1), (x2, y2), col, thickness, cv2.LINE_AA)
        if labels is not None and labels[i]:
            (tw, th), _ = cv2.getTextSize(labels[i], _FONT, scale, 1)
            ty = y1 - 3 if y1 - th - 4 >= 0 else y1 + th + 3
            tx = max(0, min(x1, out.shape[1] - tw - 3))  # keep the label inside the image
            cv2.rectangle(out, (tx, ty - th - 2), (tx + tw + 2, ty + 2), col, -1)
            cv2.putText(out, labels[i], (tx + 1, ty), _FONT, scale, _WHITE, 1, cv2.LINE_AA)
    return out


def _status_colour(correct: Optional[bool]) -> Tuple[int, int, int]:
    return UNKNOWN if correct is None else (CORRECT if correct else WRONG)


# ----------------------------------------------------------------------------- ReID
def draw_reid_ranking(
    query: ImageLike,
    gallery: Sequence[ImageLike],
    distances: Sequence[float],
    correct: Optional[Sequence[Optional[bool]]] = None,
    *,
    query_label: str = "query",
    gallery_labels: Optional[Sequence[str]] = None,
    title: Optional[str] = None,
    tile_size: Tuple[int, int] = (160, 80),
    image_root: Optional[str] = None,
) -> np.ndarray:
    """One row: the query crop (blue border), then the ranked gallery crops with green
    (correct) / red (wrong) / orange (unknown) borders, each captioned with its rank and
    distance (and ``gallery_labels``, e.g. pids)."""
    if len(distances) != len(gallery):
        raise ValueError(f"{len(gallery)} gallery images but {len(distances)} distances")
    t = max(2, tile_size[1] // 20)
    q = _border(fit_image(load_rgb(query, image_root), tile_size)[0], QUERY, t)
    tiles = [_caption(q, ["query", query_label])]
    for r, (img, d) in enumerate(zip(gallery, distances)):
        ok = None if correct is None else correct[r]
        tile = _border(fit_image(load_rgb(img, image_root), tile_size)[0], _status_colour(ok), t)
        label = gallery_labels[r] if gallery_labels is not None else ""
        tiles.append(_caption(tile, [f"#{r + 1} d={d:.3f}", label]))
    row = make_grid(tiles, ncols=len(tiles), gap=10)
    if len(tiles) > 1:  # vertical rule between the query and the gallery
        x = 10 + tiles[0].shape[1] + 5
        row[10:-10, x - 1 : x + 1] = 0
    return _title(row, title) if title else row


def _select(queries: List[Dict], order: str, failures_only: bool, is_failure, key):
    items = list(enumerate(queries))
    if failures_only:
        items = [(i, q) for i, q in items if is_failure(q)]
    if order in ("worst", "best"):
        items.sort(key=lambda iq: key(iq[1]), reverse=order == "best")
    elif order != "index":
        raise ValueError(f"order must be 'index', 'worst' or 'best', got '{order}'")
    return items


def _ap_key(q: Dict) -> float:
    ap = q.get("ap")
    return 2.0 if ap is None else float(ap)  # invalid queries last when sorted by AP


def _read_json(path: str, what: str) -> Dict:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{what} JSON '{path}' does not exist") from e
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} JSON '{path}' is not valid JSON: {e}") from e


def visualize_reid_dump(
    json_path: str,
    output_dir: str,
    *,
    topk: Optional[int] = None,
    max_queries: Optional[int] = 20,
    order: str = "index",
    failures_only: bool = False,
    image_root: Optional[str] = None,
    tile_size: Tuple[int, int] = (160, 80),
) -> List[str]:
    """Render ``reid_topk_<dataset>.json`` (written by ``ReIDEvaluator(output_dir=...)``):
    one PNG per query, ``<position>_<query name>.png`` in ``output_dir``.

    Args:
        topk: gallery samples shown (default: all in the dump).
        max_queries: queries rendered after selection/sorting (None = all).
        order: ``"index"`` (dump order), ``"worst"`` (lowest AP first) or ``"best"``.
        failures_only: only queries whose rank-1 gallery sample is wrong.
        image_root: folder joined to relative file names.
    """
    data = _read_json(json_path, "ReID ranking")
    if "queries" not in data:
        raise KeyError(f"'{json_path}' has no 'queries': not a reid_topk_<dataset>.json dump")
    items = _select(
        data["queries"],
        order,
        failures_only,
        lambda q: bool(q["correct"]) and not q["correct"][0],
        _ap_key,
    )[: max_queries if max_queries is not None else None]
    paths = []
    for pos, (i, q) in enumerate(tqdm(items, desc="reid rankings", leave=False)):
        k = len(q["gallery"]) if topk is None else min(int(topk), len(q["gallery"]))
        ap = "n/a" if q.get("ap") is None else f"{100 * q['ap']:.1f}%"
        img = draw_reid_ranking(
            q["query"],
            q["gallery"][:k],
            q["distances"][:k],
            q["correct"][:k],
            query_label=f"pid {q['pid']} c{q['camid']}",
            gallery_labels=[
                f"pid {p} c{c}" for p, c in zip(q["gallery_pids"][:k], q["gallery_camids"][:k])
            ],
            title=f"{os.path.basename(q['query'])}  AP {ap}",
            tile_size=tile_size,
            image_root=image_root,
        )
        name = os.path.splitext(os.path.basename(q["query"]))[0]
        paths.append(save_png(os.path.join(output_dir, f"{pos:04d}_q{i}_{name}.png"), img))
    return paths


# ----------------------------------------------------------------------------- person search
def _scene_tile(
    image: np.ndarray,
    box: Optional[Sequence[float]],
    color,
    tile_size: Tuple[int, int],
    inset: bool,
) -> np.ndarray:
    tile, s, (ox, oy) = fit_image(image, tile_size)
    if box is None:
        return tile
    b = np.asarray(box, dtype=np.float64).reshape(4)
    tb = b * s + np.array([ox, oy, ox, oy])
    tile = draw_boxes(tile, tb[None], [color], thickness=max(2, tile_size[1] // 120))
    if inset:
        h, w = image.shape[:2]
        x1, y1 = int(np.clip(np.floor(b[0]), 0, w - 1)), int(np.clip(np.floor(b[1]), 0, h - 1))
        x2, y2 = int(np.clip(np.ceil(b[2]), x1 + 1, w)), int(np.clip(np.ceil(b[3]), y1 + 1, h))
        ih = int(tile_size[0] * 0.45)
        crop = fit_image(image[y1:y2, x1:x2], (ih, max(8, ih // 2)))[0]
        crop = _border(crop, color, 2)
        if (tb[0] + tb[2]) / 2 > tile.shape[1] / 2:  # inset on the side away from the box
            tile[: crop.shape[0], : crop.shape[1]] = crop
        else:
            tile[: crop.shape[0], tile.shape[1] - crop.shape[1] :] = crop
    return tile


def draw_search_result(
    query_image: ImageLike,
    query_box: Optional[Sequence[float]],
    gallery: Sequence[Dict[str, Any]],
    *,
    query_label: str = "query",
    title: Optional[str] = None,
    tile_size: Tuple[int, int] = (240, 320),
    ncols: int = 6,
    inset: bool = True,
) -> np.ndarray:
    """Query scene with its box (blue) then the ranked gallery scenes, each with its matched
    box (green correct / red wrong / orange unknown) and a zoomed inset of the person.

    Args:
        gallery: per rank ``{"image": path or RGB array, "box": (4,) or None, "score": float,
            "correct": bool or None, "label": str (optional, e.g. the image id)}``.
    """
    tiles = [
        _caption(
            _border(
                _scene_tile(load_rgb(query_image), query_box, QUERY, tile_size, inset), QUERY, 3
            ),
            ["query", query_label],
        )
    ]
    for r, g in enumerate(gallery):
        col = _status_colour(g.get("correct"))
        tile = _scene_tile(load_rgb(g["image"]), g.get("box"), col, tile_size, inset)
        tiles.append(
            _caption(_border(tile, col, 3), [f"#{r + 1} sim {g['score']:.3f}", g.get("label", "")])
        )
    grid = make_grid(tiles, ncols)
    return _title(grid, title) if title else grid


def make_image_resolver(
    image_root: Optional[str] = None, dataset_names: Sequence[str] = ()
) -> Callable[[str], str]:
    """``image_id -> file path``: from the records of registered scene sets (their
    ``"image_id"`` -> ``"file_name"``), else ``image_root/image_id``.

    Raises (when called):
        FileNotFoundError: no file found; the message names the id and what was tried.
    """
    table: Dict[str, str] = {}
    if dataset_names:
        from ..data import datasets  # noqa: F401  (registers the built-in sets)
        from ..data.catalog import DatasetCatalog

        for name in dataset_names:
            for r in DatasetCatalog.get(name):
                if "image_id" in r:
                    table.setdefault(str(r["image_id"]), r["file_name"])

    def resolve(image_id: str) -> str:
        if image_id in table:
            return table[image_id]
        if image_root:
            path = os.path.join(image_root, image_id)
            if os.path.exists(path):
                return path
        if os.path.exists(image_id):
            return image_id
        raise FileNotFoundError(
            f"cannot find the image '{image_id}' (datasets searched: {list(dataset_names)}, "
            f"image root: {image_root!r}); pass --image-root or --datasets"
        )

    return resolve


def visualize_search_dump(
    json_path: str,
    output_dir: str,
    *,
    resolve: Optional[Callable[[str], str]] = None,
    topk: int = 5,
    max_queries: Optional[int] = 20,
    order: str = "index",
    failures_only: bool = False,
    tile_size: Tuple[int, int] = (240, 320),
    ncols: int = 6,
) -> List[str]:
    """Render ``search_results_<protocol>.json`` (``PersonSearchEvaluator(output_dir=...)``):
    one PNG per query in ``output_dir``.

    Args:
        resolve: ``image_id -> path``; default :func:`make_image_resolver` over the dump's
            ``settings["dataset"]`` / ``settings["query_dataset"]`` (registered sets).
        topk: gallery entries shown (at most the 10 of the dump).
        order / failures_only / max_queries: as :func:`visualize_reid_dump` (failure = top-1
            gallery box wrong).
    """
    data = _read_json(json_path, "Person-search results")
    if "queries" not in data:
        raise KeyError(f"'{json_path}' has no 'queries': not a search_results_<protocol>.json")
    if resolve is None:
        s = data.get("settings", {})
        names = [n for n in (s.get("dataset"), s.get("query_dataset")) if n]
        resolve = make_image_resolver(None, names)
    items = _select(
        data["queries"],
        order,
        failures_only,
        lambda q: bool(q.get("top")) and not q["top"][0]["correct"],
        _ap_key,
    )[: max_queries if max_queries is not None else None]
    paths = []
    for pos, (i, q) in enumerate(tqdm(items, desc="search results", leave=False)):
        gallery = [
            {
                "image": resolve(t["image_id"]),
                "box": t["box"],
                "score": t["score"],
                "correct": t["correct"],
                "label": t["image_id"],
            }
            for t in q.get("top", [])[: int(topk)]
        ]
        img = draw_search_result(
            resolve(q["query_image_id"]),
            q.get("query_box"),
            gallery,
            query_label=f"{q['query_image_id']} pid {q.get('query_pid', '?')}",
            title=f"query {q.get('query_index', i)}  AP {100 * q['ap']:.1f}%",
            tile_size=tile_size,
            ncols=ncols,
        )
        name = os.path.splitext(os.path.basename(q["query_image_id"]))[0]
        paths.append(save_png(os.path.join(output_dir, f"{pos:04d}_q{i}_{name}.png"), img))
    return paths


# ----------------------------------------------------------------------------- detections
def _pid_colour(pid: int) -> Tuple[int, int, int]:
    if pid < 0:
        return NEUTRAL
    hue = int((pid * 0.618033988749895 % 1.0) * 179)
    hsv = np.array([[[hue, 200, 220]]], dtype=np.uint8)
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


def draw_detections(
    image: ImageLike,
    boxes: Any,
    scores: Optional[Any] = None,
    pids: Optional[Any] = None,
    *,
    score_thresh: float = 0.0,
    highlight: Optional[int] = None,
) -> np.ndarray:
    """Boxes with ``score`` / ``pid`` labels on the scene (boxes with score < ``score_thresh``
    are skipped). Colour by pid (unlabelled ``-1`` grey) when pids are given, else by score
    (green); ``highlight`` = index of a box drawn thick in blue (e.g. the best match)."""
    img = load_rgb(image)
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    s = None if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
    p = None if pids is None else np.asarray(pids, dtype=np.int64).reshape(-1)
    for name, arr in (("scores", s), ("pids", p)):
        if arr is not None and len(arr) != len(b):
            raise ValueError(f"draw_detections: {len(b)} boxes but {len(arr)} {name}")
    keep = np.ones(len(b), bool) if s is None else s >= score_thresh
    idx = np.flatnonzero(keep)
    colours, labels = [], []
    for i in idx:
        parts = [] if s is None else [f"{s[i]:.2f}"]
        if p is not None:
            parts.append(f"pid {p[i]}" if p[i] >= 0 else "unl.")
        colours.append(_pid_colour(int(p[i])) if p is not None else CORRECT)
        labels.append(" ".join(parts))
    out = draw_boxes(img, b[idx], colours, labels, thickness=2)
    if highlight is not None and 0 <= highlight < len(b):
        out = draw_boxes(out, b[highlight][None], [QUERY], thickness=4)
    return out


def load_detections(json_path: str) -> List[Dict[str, Any]]:
    """Detections JSON: a list (or ``{"images": [...]}``) of ``{"file_name" or "image_id",
    "boxes": [[x1,y1,x2,y2], ...], "scores": [...] (optional), "pids": [...] (optional)}``
    (the format ``tools/demo.py search`` writes)."""
    data = _read_json(json_path, "Detections")
    entries = data["images"] if isinstance(data, dict) and "images" in data else data
    if not isinstance(entries, list):
        raise ValueError(f"'{json_path}': expected a list of images or {{'images': [...]}}")
    for i, e in enumerate(entries):
        if "boxes" not in e or not ("file_name" in e or "image_id" in e):
            raise KeyError(f"'{json_path}': entry {i} needs 'boxes' and 'file_name'/'image_id'")
    return entries


# ----------------------------------------------------------------------------- features
def save_features(
    model: torch.nn.Module, loader: Iterable, path: str, *, max_batches: Optional[int] = None
) -> Dict[str, np.ndarray]:
    """Run ``model`` (eval mode, no grad) over ``loader`` batches (ReID ``list[dict]``) and
    write ``path`` (``.npz``) with ``features`` (N, D) float32, ``pids``, ``camids``,
    ``domains`` (record ``"dataset"``, else ``"domain"``, else ``"unknown"``), ``files`` and
    ``is_query``. Returns the arrays. Chain several test loaders (``itertools.chain``) to mix
    domains."""
    from ..evaluation.evaluator import inference_context

    feats, pids, cams, doms, files, isq = [], [], [], [], [], []
    with inference_context(model), torch.no_grad():
        for b, batch in enumerate(tqdm(loader, desc="extract features", leave=False)):
            if max_batches is not None and b >= max_batches:
                break
            for rec, out in zip(batch, model(batch)):
                if "feature" not in out:
                    raise KeyError(f"model output lacks 'feature' (keys: {sorted(out)})")
                feats.append(out["feature"].detach().float().cpu().reshape(-1).numpy())
                pids.append(int(rec.get("pid", -1)))
                cams.append(int(rec.get("camid", -1)))
                doms.append(str(rec.get("dataset", rec.get("domain", "unknown"))))
                files.append(str(rec.get("file_name", "")))
                isq.append(bool(rec.get("is_query", False)))
    if not feats:
        raise ValueError("save_features: the loader yielded no samples")
    arrays = {
        "features": np.stack(feats).astype(np.float32),
        "pids": np.asarray(pids, np.int64),
        "camids": np.asarray(cams, np.int64),
        "domains": np.asarray(doms),
        "files": np.asarray(files),
        "is_query": np.asarray(isq, bool),
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    np.savez_compressed(path, **arrays)
    logger.info("Saved %d features (dim %d) to %s", len(feats), arrays["features"].shape[1], path)
    return arrays


def load_features(path: str) -> Dict[str, np.ndarray]:
    """Arrays of a :func:`save_features` file (``features`` required; ``pids`` / ``domains``
    default to -1 / "unknown")."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"features file '{path}' does not exist (see save_features)")
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    if "features" not in data or data["features"].ndim != 2:
        raise KeyError(f"'{path}' must hold a 2-D 'features' array (has {sorted(data)})")
    n = data["features"].shape[0]
    data.setdefault("pids", np.full(n, -1, np.int64))
    data.setdefault("domains", np.full(n, "unknown"))
    return data


def tsne_embed(features: np.ndarray, *, perplexity: float = 30.0, seed: int = 0) -> np.ndarray:
    """2-D t-SNE (scikit-learn) of L2-normalised ``features``; perplexity is clipped below
    the sample count as scikit-learn requires. Exact gradients up to 300 samples (faster
    there than Barnes-Hut), Barnes-Hut above."""
    from sklearn.manifold import TSNE

    x = np.asarray(features, dtype=np.float32)
    if x.shape[0] < 3:
        raise ValueError(f"t-SNE needs at least 3 samples, got {x.shape[0]}")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    perp = float(min(perplexity, max(1.0, (x.shape[0] - 1) / 3.0)))
    method = "exact" if x.shape[0] <= 300 else "barnes_hut"
    tsne = TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed, method=method)
    return tsne.fit_transform(x)


def plot_embedding(
    points: np.ndarray, labels: Sequence[str], path: str, *, title: str = "", legend_max: int = 20
) -> str:
    """Scatter of 2-D ``points`` coloured by ``labels`` (legend up to ``legend_max`` labels)
    written as PNG (matplotlib Agg canvas, no pyplot state)."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    labels = np.asarray([str(x) for x in labels])
    names = list(dict.fromkeys(labels.tolist()))  # first-appearance order
    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    fig = Figure(figsize=(6.5, 6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i, n in enumerate(names):
        m = labels == n
        ax.scatter(points[m, 0], points[m, 1], s=12, color=cmap(i % cmap.N), label=n, alpha=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    if len(names) <= legend_max:
        ax.legend(loc="best", fontsize=8, markerscale=1.5, framealpha=0.8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    return path


def visualize_tsne(
    data: Union[str, Dict[str, np.ndarray]],
    output_dir: str,
    *,
    max_per_domain: Optional[int] = 500,
    num_ids: int = 7,
    exclude_pids: Sequence[int] = (-1, 0),
    perplexity: float = 30.0,
    seed: int = 0,
) -> List[str]:
    """``tsne_domain.png`` (all domains, at most ``max_per_domain`` random samples each,
    coloured by domain, as M3L Fig. 5) and ``tsne_identity.png`` (the ``num_ids`` identities
    with most samples, pids in ``exclude_pids`` -- junk / distractors -- left out, t-SNE of
    their samples only, coloured by identity, as M3L Fig. A)."""
    d = load_features(data) if isinstance(data, str) else data
    feats, pids, doms = d["features"], d["pids"], d["domains"].astype(str)
    rng = np.random.default_rng(seed)
    sel = []
    for dom in dict.fromkeys(doms.tolist()):
        idx = np.flatnonzero(doms == dom)
        if max_per_domain is not None and len(idx) > max_per_domain:
            idx = np.sort(rng.choice(idx, max_per_domain, replace=False))
        sel.append(idx)
    sel = np.concatenate(sel)
    pts = tsne_embed(feats[sel], perplexity=perplexity, seed=seed)
    out = [
        plot_embedding(
            pts, doms[sel], os.path.join(output_dir, "tsne_domain.png"), title="t-SNE by domain"
        )
    ]
    ident = np.char.add(np.char.add(doms, ":"), pids.astype(str))
    ok = ~np.isin(pids, np.asarray(exclude_pids, np.int64))
    names, counts = np.unique(ident[ok], return_counts=True)
    top = names[np.lexsort((names, -counts))][: int(num_ids)]  # most samples, then by name
    idx = np.flatnonzero(np.isin(ident, top) & ok)
    if len(top) >= 2 and len(idx) >= 3:
        pts = tsne_embed(feats[idx], perplexity=perplexity, seed=seed)
        path = os.path.join(output_dir, "tsne_identity.png")
        title = f"t-SNE of {len(top)} identities"
        out.append(plot_embedding(pts, ident[idx], path, title=title))
    else:
        logger.warning("t-SNE by identity skipped: fewer than 2 identities with samples")
    return out
