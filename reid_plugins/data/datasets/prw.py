"""PRW person-search dataset (scene frames).

Layout under ``<root>`` (``$REID_DATASETS/prw``):

* ``frames/c<cam>s<seq>_<frame>.jpg``: the frames (6 cameras on the real data). The camera
  comes from the name: ``c3s1_012345`` -> camid ``2`` (0-based).
* ``annotations/<frame>.jpg.mat``: boxes under key ``box_new``, falling back to
  ``anno_file``, then ``anno_previous``; n x 5 rows ``(pid, x, y, w, h)`` in pixels. pid ``-2``
  (any negative pid) is an unlabelled person -> :data:`UNLABELED_PID` (``-1``). Boxes are
  converted to ``(x1, y1, x2, y2) = (x, y, x + w, y + h)`` and then negative coordinates are
  clipped to 0 (a box starting at ``x = -5`` with ``w = 50`` becomes ``x1 = 0, x2 = 45``);
  boxes left with zero width or height are skipped.
* ``frame_train.mat`` -> ``img_index_train``, ``frame_test.mat`` -> ``img_index_test``:
  N x 1 cells of frame names without ``.jpg``. (``ID_train.mat`` / ``ID_test.mat`` are not
  needed.)
* ``query_info.txt``: one query per line, ``pid x y w h frame_name`` (whitespace separated,
  frame name without ``.jpg``); the box is converted and clipped like the annotations.

Splits: ``prw_train`` (train frames; labelled pids relabelled ``0..P-1`` in increasing raw-id
order), ``prw_gallery`` (test frames, raw pids), ``prw_query`` (one record per line of
``query_info.txt``: the scene record of the query frame plus ``query_box`` / ``query_pid``
(raw)). Records follow :func:`reid_plugins.data.datasets.cuhk_sysu.load_cuhk_sysu_train`
with ``camid`` from the frame name. The gallery of a query is every test frame except its
own (see the evaluation spec). Image sizes are cached in ``annotations/image_sizes.json``.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from .scene_common import (
    UNLABELED_PID,
    loadmat_checked,
    mat_elements,
    mat_string,
    read_image_sizes,
    register_scene_splits,
    synthetic_scenes_root,
)

__all__ = [
    "UNLABELED_PID",
    "PRW_BOX_KEYS",
    "prw_camid",
    "load_prw_annotation",
    "load_prw_query_info",
    "load_prw_train",
    "load_prw_gallery",
    "load_prw_query",
    "register_prw",
]

#: Keys of a PRW annotation file, in the order they are tried.
PRW_BOX_KEYS = ("box_new", "anno_file", "anno_previous")

_FRAME_RE = re.compile(r"c(\d+)s(\d+)_(\d+)")


def prw_camid(frame: str) -> int:
    """0-based camera of a frame name ``c<cam>s<seq>_<frame>[.jpg]``.

    Raises:
        ValueError: the name does not follow the pattern.
    """
    m = _FRAME_RE.match(os.path.basename(frame))
    if m is None:
        raise ValueError(f"PRW frame name '{frame}' does not match 'c<cam>s<seq>_<frame>'")
    return int(m.group(1)) - 1


def _convert(rows: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``(pid, x, y, w, h)`` rows -> (float32 x1,y1,x2,y2 clipped at 0, int64 pids)."""
    pids = rows[:, 0].round().astype(np.int64)
    pids[pids < 0] = UNLABELED_PID
    boxes = np.concatenate([rows[:, 1:3], rows[:, 1:3] + rows[:, 3:5]], axis=1)
    boxes = np.clip(boxes, 0, None).astype(np.float32)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[keep], pids[keep]


def load_prw_annotation(path: str) -> Tuple[np.ndarray, np.ndarray]:
    """Boxes (float32 (N, 4) x1,y1,x2,y2) and pids (int64, unlabelled -1) of one frame.

    Raises:
        FileNotFoundError: ``path`` is missing.
        ValueError: none of :data:`PRW_BOX_KEYS` is present, or the rows are not n x 5.
    """
    data = loadmat_checked(path)
    key = next((k for k in PRW_BOX_KEYS if k in data), None)
    if key is None:
        found = sorted(k for k in data if not k.startswith("__"))
        raise ValueError(f"{path} has none of the keys {PRW_BOX_KEYS} (found: {found})")
    rows = np.asarray(data[key], dtype=np.float64)
    if rows.size == 0:
        return np.zeros((0, 4), dtype=np.float32), np.zeros(0, dtype=np.int64)
    if rows.ndim != 2 or rows.shape[1] != 5:
        raise ValueError(f"{path}: '{key}' must be n x 5 (pid, x, y, w, h), got {rows.shape}")
    return _convert(rows)


def _listed_in(path: str, frames: List[str]) -> Dict[str, str]:
    return {f: f"{path}: entry {i}" for i, f in enumerate(frames, 1)}


def _frame_list(root: str, split: str) -> List[str]:
    fname, key = ("frame_train.mat", "img_index_train")
    if split == "test":
        fname, key = ("frame_test.mat", "img_index_test")
    path = os.path.join(root, fname)
    data = loadmat_checked(path, [key])
    names = [mat_string(e, f"{path}: {key}[{i}]") for i, e in enumerate(mat_elements(data[key]))]
    return [n[:-4] if n.endswith(".jpg") else n for n in names if n]


def load_prw_query_info(path: str) -> List[Dict[str, Any]]:
    """Parse ``query_info.txt``: ``[{"pid": int, "box": float32 (4,) x1,y1,x2,y2 clipped at
    0, "frame": str (no .jpg)}, ...]``.

    Raises:
        FileNotFoundError: ``path`` is missing.
        ValueError: a line is not ``pid x y w h frame_name`` (message names file and line).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Query list not found: {path}")
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                if len(parts) != 6:
                    raise ValueError(f"expected 6 fields, got {len(parts)}")
                row = np.array([[float(v) for v in parts[:5]]])
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: malformed line {line.strip()!r}: {e}") from e
            boxes, _ = _convert(row)
            if len(boxes) == 0:
                raise ValueError(f"{path}:{lineno}: query box has zero width or height")
            frame = parts[5][:-4] if parts[5].endswith(".jpg") else parts[5]
            out.append({"pid": int(round(row[0, 0])), "box": boxes[0], "frame": frame})
    return out


def _records(
    root: str, frames: List[str], dataset_name: str, listed_in: Optional[Dict[str, str]] = None
) -> List[Dict[str, Any]]:
    anno_dir = os.path.join(root, "annotations")
    paths = {f: os.path.join(root, "frames", f + ".jpg") for f in frames}
    sizes = read_image_sizes(paths, os.path.join(anno_dir, "image_sizes.json"), listed_in)
    out = []
    for f in frames:
        boxes, pids = load_prw_annotation(os.path.join(anno_dir, f + ".jpg.mat"))
        out.append(
            {
                "file_name": paths[f],
                "image_id": f + ".jpg",
                "height": sizes[f][0],
                "width": sizes[f][1],
                "boxes": boxes,
                "pids": pids,
                "camid": prw_camid(f),
                "dataset": dataset_name,
            }
        )
    return out


def load_prw_train(root: str, dataset_name: str = "prw_train") -> List[Dict[str, Any]]:
    """Train frames (``frame_train.mat`` order); labelled pids relabelled ``0..P-1`` in
    increasing raw-id order, unlabelled :data:`UNLABELED_PID`. Record fields as in
    :func:`reid_plugins.data.datasets.cuhk_sysu.load_cuhk_sysu_train`, camid from the name.

    Raises:
        FileNotFoundError / ValueError: a file is missing / malformed (message names it).
    """
    frames = _frame_list(root, "train")
    listed = _listed_in(os.path.join(root, "frame_train.mat"), frames)
    records = _records(root, frames, dataset_name, listed)
    raw = sorted({int(p) for r in records for p in r["pids"] if p != UNLABELED_PID})
    relabel = {p: i for i, p in enumerate(raw)}
    for r in records:
        r["pids"] = np.array(
            [relabel.get(int(p), UNLABELED_PID) for p in r["pids"]], dtype=np.int64
        )
    return records


def load_prw_gallery(root: str, dataset_name: str = "prw_gallery") -> List[Dict[str, Any]]:
    """Test frames (``frame_test.mat`` order) with raw pids (unlabelled -1)."""
    frames = _frame_list(root, "test")
    return _records(
        root, frames, dataset_name, _listed_in(os.path.join(root, "frame_test.mat"), frames)
    )


def load_prw_query(root: str, dataset_name: str = "prw_query") -> List[Dict[str, Any]]:
    """One record per ``query_info.txt`` line: the query frame's scene record plus
    ``"query_box"`` (float32 (4,) x1,y1,x2,y2) and ``"query_pid"`` (raw id)."""
    queries = load_prw_query_info(os.path.join(root, "query_info.txt"))
    frames = sorted({q["frame"] for q in queries})
    info = os.path.join(root, "query_info.txt")
    listed = {q["frame"]: f"{info}: query {k}" for k, q in reversed(list(enumerate(queries, 1)))}
    scene = {r["image_id"]: r for r in _records(root, frames, dataset_name, listed)}
    out = []
    for q in queries:
        r = dict(scene[q["frame"] + ".jpg"])
        r["boxes"], r["pids"] = r["boxes"].copy(), r["pids"].copy()
        r["query_box"] = q["box"]
        r["query_pid"] = q["pid"]
        out.append(r)
    return out


def register_prw(prefix: str = "prw", root_fn: Optional[Callable[[], str]] = None) -> List[str]:
    """Register ``<prefix>_train``, ``<prefix>_gallery``, ``<prefix>_query`` (lazy loaders;
    ``root_fn()`` resolved at call time, default ``$REID_DATASETS/prw``). Metadata (set on
    load): num_images, num_boxes, num_labeled_boxes, num_pids, num_cams, root,
    evaluator_type and search_protocol ``"prw"``, unlabeled_pid; the query split also
    num_queries and gallery_dataset."""
    return register_scene_splits(
        prefix,
        {"train": load_prw_train, "gallery": load_prw_gallery, "query": load_prw_query},
        protocol="prw",
        folder="prw",
        root_fn=root_fn,
    )


register_prw("prw")
register_prw("synthetic_prw", synthetic_scenes_root("prw"))
