"""Ranked results rendered from the evaluators' JSON dumps (no re-inference): ReID ranked
lists (query + top-k gallery crops) and person-search results (query scene + top-k gallery
scenes with the matched box, as TDN Fig. 7-8).

Public names are re-exported by :mod:`reid_plugins.visualization.visualizer`.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from .drawing import (
    QUERY,
    ImageLike,
    _border,
    _caption,
    _read_json,
    _status_colour,
    _title,
    camera_label,
    draw_boxes,
    fit_image,
    load_rgb,
    make_grid,
    save_png,
)

__all__ = [
    "draw_reid_ranking",
    "draw_search_result",
    "make_image_resolver",
    "visualize_reid_dump",
    "visualize_search_dump",
]


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


def _query_png(output_dir: str, pos: int, index: int, source: str) -> str:
    """Path of the ``pos``-th rendered query (``index`` in the dump) in ``output_dir``, named
    ``<pos>_q<index>_<stem of source>.png`` (source: the query's file name or image id)."""
    name = os.path.splitext(os.path.basename(source))[0]
    return os.path.join(output_dir, f"{pos:04d}_q{index}_{name}.png")


def _ap_key(q: Dict) -> float:
    ap = q.get("ap")
    return 2.0 if ap is None else float(ap)  # invalid queries last when sorted by AP


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
            query_label=f"pid {q['pid']} {camera_label(q['camid'])}",
            gallery_labels=[
                f"pid {p} {camera_label(c)}"
                for p, c in zip(q["gallery_pids"][:k], q["gallery_camids"][:k])
            ],
            title=f"{os.path.basename(q['query'])}  AP {ap}",
            tile_size=tile_size,
            image_root=image_root,
        )
        paths.append(save_png(_query_png(output_dir, pos, i, q["query"]), img))
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
        paths.append(save_png(_query_png(output_dir, pos, i, q["query_image_id"]), img))
    return paths
