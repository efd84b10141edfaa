"""CUHK-SYSU person-search dataset (scene images) and shared scene-dataset helpers.

Layout under ``<root>`` (``$REID_DATASETS/cuhk_sysu``), MATLAB v5 files read with
:func:`scipy.io.loadmat` (``squeeze_me=False``; the helpers below accept any nesting, so
squeezed / transposed variants of the same files load too):

* ``Image/SSM/<imname>``: the scene images (``s<k>.jpg``).
* ``annotation/Images.mat`` -> ``Img``: 1xN struct array, fields ``imname`` (char),
  ``nAppear`` (double), ``box``: 1 x nAppear struct array with one field ``idlocate``
  (1x4 double ``x, y, w, h`` in pixels). A plain n x 4 numeric ``box`` is accepted too.
  Boxes with ``w <= 0`` or ``h <= 0`` are invalid and skipped.
* ``annotation/pool.mat`` -> ``pool``: N x 1 cell of char, the test (gallery) image names.
  Train images are all images of ``Images.mat`` not in the pool.
* ``annotation/test/train_test/Train.mat`` -> ``Train``: N x 1 cell, each a 1x1 struct with
  ``idname`` (char), ``nAppear`` and ``scene``: 1 x nAppear struct array with ``imname``,
  ``idlocate`` (1x4 ``x, y, w, h``), ``ishard``.
* ``annotation/test/train_test/TestG<N>.mat`` -> ``TestG<N>``: 1 x Q struct array with
  ``Query`` (1x1 struct: ``imname``, ``idlocate``, ``ishard``, ``idname``) and ``Gallery``
  (1 x N struct array: ``imname``, ``idlocate``, ``ishard``; ``idlocate`` is empty (or all
  zeros) when the query person is absent from that image). The real dataset ships
  N in {50, 100, 500, 1000, 2000, 4000}; any N with a file is accepted.

Labels. Train: the identities of ``Train.mat`` are relabelled ``0..P-1`` in file order.
Gallery / query: raw test ids, the integer in the query's ``idname`` (``"p1234"`` -> 1234;
if an ``idname`` has no digits or ids repeat, the 0-based query index is used for all).
The test labels come from the smallest ``TestG<N>.mat`` (every TestG file lists all images
that contain the query person, the sizes differ only in distractors). Every other person is
a background person labelled :data:`UNLABELED_PID` (``-1``), never a real identity, so
OIM-style losses can use them as negatives. A protocol box is matched to the ``Images.mat``
box with identical coordinates (tolerance 0.5 px), else the box with the highest IoU >= 0.5,
else it is added as a new box.

Registered names: ``cuhk_sysu_{train,gallery,query}`` (and ``synthetic_cuhk_sysu_*`` on the
generated data of :mod:`reid_plugins.data.synthetic_scenes`). Record fields: see
:func:`load_cuhk_sysu_train`. Image sizes are read once from the image headers and cached in
``annotation/image_sizes.json``.
"""

from __future__ import annotations

import functools
import glob
import json
import logging
import os
import re
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np
import scipy.io
from PIL import Image
from tabulate import tabulate
from tqdm import tqdm

from ..catalog import DatasetCatalog, MetadataCatalog, dataset_root

__all__ = [
    "UNLABELED_PID",
    "load_cuhk_sysu_train",
    "load_cuhk_sysu_gallery",
    "load_cuhk_sysu_query",
    "load_cuhk_sysu_protocol",
    "cuhk_sysu_gallery_sizes",
    "register_cuhk_sysu",
    "loadmat_checked",
    "mat_elements",
    "mat_field",
    "mat_string",
    "mat_vector",
    "read_image_sizes",
    "scene_statistics",
    "format_scene_statistics",
]

logger = logging.getLogger(__name__)

#: Reserved label of unlabelled (background) persons in person-search records. Never a real
#: identity: train ids are 0..P-1 and raw test ids are positive.
UNLABELED_PID = -1

_ANNO = "annotation"
_PROTO = os.path.join("annotation", "test", "train_test")


# --------------------------------------------------------------------------------------- #
# MATLAB helpers (shared with prw.py)
# --------------------------------------------------------------------------------------- #
def loadmat_checked(path: str, keys: Iterable[str] = ()) -> Dict[str, Any]:
    """``scipy.io.loadmat(path)`` with clear errors.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a readable MATLAB file, or lacks one of ``keys``.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Annotation file not found: {path}")
    try:
        data = scipy.io.loadmat(path, squeeze_me=False, struct_as_record=True)
    except Exception as e:  # scipy raises several types for corrupt files
        raise ValueError(f"Cannot read MATLAB file {path}: {e}") from e
    for key in keys:
        if key not in data:
            found = sorted(k for k in data if not k.startswith("__"))
            raise ValueError(f"{path} has no variable '{key}' (variables found: {found})")
    return data


def _is_struct_array(x: Any) -> bool:
    return isinstance(x, np.ndarray) and x.dtype.names is not None


def mat_elements(x: Any) -> List[Any]:
    """Elements of a MATLAB struct or cell array of any shape (1xN, Nx1, squeezed, scalar).

    Cells holding a 1x1 struct (``Train.mat``) are unwrapped to the struct element.
    """
    if isinstance(x, np.ndarray):
        if x.dtype.names is not None:
            return list(x.ravel(order="F"))
        if x.dtype == object:
            out = []
            for e in x.ravel(order="F"):
                if _is_struct_array(e) and e.size == 1:
                    e = e.ravel()[0]
                out.append(e)
            return out
        if x.dtype.kind in "US":  # char matrix / squeezed strings
            return [str(s) for s in x.ravel(order="F")]
        return [x]
    if isinstance(x, (list, tuple)):
        return list(x)
    return [x]


def mat_field(s: Any, name: str, where: str) -> Any:
    """Field ``name`` of one MATLAB struct element (record, 1x1 array, mat_struct or dict).

    Raises:
        ValueError: the element is not a struct or has no field ``name`` (message names
            ``where``).
    """
    while isinstance(s, np.ndarray) and s.size == 1 and (s.dtype == object or _is_struct_array(s)):
        s = s.ravel()[0]
    if isinstance(s, np.void) and s.dtype.names is not None:
        if name not in s.dtype.names:
            raise ValueError(f"{where}: struct has no field '{name}' (fields: {s.dtype.names})")
        return s[name]
    if isinstance(s, dict):
        if name not in s:
            raise ValueError(f"{where}: struct has no field '{name}' (fields: {sorted(s)})")
        return s[name]
    if hasattr(s, "_fieldnames"):  # scipy mat_struct (struct_as_record=False)
        if name not in s._fieldnames:
            raise ValueError(f"{where}: struct has no field '{name}' (fields: {s._fieldnames})")
        return getattr(s, name)
    raise ValueError(f"{where}: expected a struct with field '{name}', got {type(s).__name__}")


def _first_field(s: Any, names: Sequence[str], where: str) -> Any:
    """Field ``names[0]`` if present, else the struct's first field (``Images.mat`` boxes)."""
    while isinstance(s, np.ndarray) and s.size == 1 and (s.dtype == object or _is_struct_array(s)):
        s = s.ravel()[0]
    if isinstance(s, np.void) and s.dtype.names and names[0] not in s.dtype.names:
        return s[0]
    return mat_field(s, names[0], where)


def mat_string(x: Any, where: str = "") -> str:
    """A MATLAB char array (any nesting) as ``str``; empty arrays give ``""``."""
    while True:
        if isinstance(x, np.ndarray):
            if x.size == 0:
                return ""
            if x.dtype.kind in "US":
                if x.size == 1:
                    x = x.ravel()[0]
                    continue
                return "".join(str(c) for c in x.ravel(order="F")).strip()
            if x.dtype == object and x.size == 1:
                x = x.ravel()[0]
                continue
            if x.dtype.kind in "iuf" and x.size == 1:
                v = x.ravel()[0]
                return str(int(v)) if float(v).is_integer() else str(v)
            raise ValueError(f"{where}: expected a string, got an array of shape {x.shape}")
        if isinstance(x, bytes):
            return x.decode("utf-8", "replace").strip()
        if isinstance(x, str):
            return x.strip()
        if isinstance(x, (np.number, int, float)):
            return str(int(x)) if float(x).is_integer() else str(x)
        return str(x).strip()


def mat_vector(x: Any) -> np.ndarray:
    """A numeric MATLAB array (any nesting) as a flat float64 vector (empty allowed)."""
    while isinstance(x, np.ndarray) and x.dtype == object:
        if x.size == 0:
            return np.zeros(0, dtype=np.float64)
        if x.size != 1:
            break
        x = x.ravel()[0]
    return np.asarray(x, dtype=np.float64).ravel()


def _xywh_box(x: Any, where: str) -> Optional[np.ndarray]:
    """``(x, y, w, h)`` -> float32 ``(x1, y1, x2, y2)``; ``None`` when empty or invalid
    (all zeros, ``w <= 0`` or ``h <= 0``)."""
    v = mat_vector(x)
    if v.size == 0:
        return None
    if v.size != 4:
        raise ValueError(f"{where}: expected a box (x, y, w, h), got {v.size} values {v}")
    if v[2] <= 0 or v[3] <= 0:
        return None
    return np.array([v[0], v[1], v[0] + v[2], v[1] + v[3]], dtype=np.float32)


# --------------------------------------------------------------------------------------- #
# Image sizes and statistics (shared with prw.py)
# --------------------------------------------------------------------------------------- #
def read_image_sizes(paths: Dict[str, str], cache_file: str) -> Dict[str, tuple]:
    """``{name: (height, width)}`` from the image headers, cached in ``cache_file`` (json).

    A cache entry is reused while the image's byte size is unchanged. The cache is written
    atomically; a read-only dataset folder only disables caching.

    Raises:
        FileNotFoundError: an image is missing (message names it).
    """
    cache: Dict[str, list] = {}
    if os.path.isfile(cache_file):
        try:
            with open(cache_file) as f:
                cache = json.load(f)
        except (OSError, ValueError):
            logger.warning("Ignoring unreadable image-size cache %s", cache_file)
            cache = {}
    out, changed = {}, False
    todo = list(paths.items())
    for name, path in tqdm(todo, desc="image sizes", disable=len(todo) < 2000, leave=False):
        try:
            nbytes = os.path.getsize(path)
        except OSError as e:
            raise FileNotFoundError(f"Image not found: {path}") from e
        hit = cache.get(name)
        if hit is None or len(hit) != 3 or hit[2] != nbytes:
            with Image.open(path) as im:
                w, h = im.size
            cache[name] = hit = [int(h), int(w), int(nbytes)]
            changed = True
        out[name] = (hit[0], hit[1])
    if changed:
        tmp = f"{cache_file}.tmp{os.getpid()}"
        try:
            with open(tmp, "w") as f:
                json.dump(cache, f, sort_keys=True)
            os.replace(tmp, cache_file)
        except OSError as e:
            logger.warning("Cannot write image-size cache %s: %s", cache_file, e)
    return out


def scene_statistics(records: List[Dict[str, Any]]) -> Dict[str, int]:
    """Counts of a scene split: num_images (distinct images), num_boxes, num_labeled_boxes,
    num_pids (distinct labelled ids), num_cams (distinct camids >= 0). For query records
    (with ``query_pid``) boxes / ids count the query boxes, and num_queries is added."""
    images = {r["image_id"] for r in records}
    cams = {r["camid"] for r in records if r["camid"] >= 0}
    if records and "query_pid" in records[0]:
        pids = [r["query_pid"] for r in records]
        labelled = [p for p in pids if p != UNLABELED_PID]
        return dict(
            num_images=len(images),
            num_boxes=len(records),
            num_labeled_boxes=len(labelled),
            num_pids=len(set(labelled)),
            num_cams=len(cams),
            num_queries=len(records),
        )
    pids = np.concatenate([r["pids"] for r in records]) if records else np.zeros(0, np.int64)
    labelled = pids[pids != UNLABELED_PID]
    return dict(
        num_images=len(images),
        num_boxes=int(pids.size),
        num_labeled_boxes=int(labelled.size),
        num_pids=int(np.unique(labelled).size),
        num_cams=len(cams),
    )


def format_scene_statistics(stats: Dict[str, Dict[str, int]]) -> str:
    """Table (one row per split name) of :func:`scene_statistics` results."""
    cols = ["num_images", "num_boxes", "num_labeled_boxes", "num_pids", "num_cams"]
    rows = [[name] + [s.get(c, "") for c in cols] for name, s in stats.items()]
    headers = ["split", "images", "boxes", "labelled boxes", "ids", "cameras"]
    return tabulate(rows, headers=headers, tablefmt="pipe")


# --------------------------------------------------------------------------------------- #
# CUHK-SYSU files
# --------------------------------------------------------------------------------------- #
def _read_images_mat(root: str) -> Dict[str, np.ndarray]:
    """``{imname: float32 (n, 4) x1,y1,x2,y2}`` of every image of ``Images.mat`` (file order);
    invalid boxes (w <= 0 or h <= 0) are skipped."""
    path = os.path.join(root, _ANNO, "Images.mat")
    data = loadmat_checked(path, ["Img"])
    out: Dict[str, np.ndarray] = {}
    skipped = 0
    for i, e in enumerate(mat_elements(data["Img"])):
        where = f"{path}: Img[{i}]"
        name = mat_string(mat_field(e, "imname", where), where)
        if not name:
            raise ValueError(f"{where}: empty 'imname'")
        if name in out:
            raise ValueError(f"{where}: image '{name}' is listed twice")
        field = mat_field(e, "box", where)
        if isinstance(field, np.ndarray) and field.dtype.kind in "iuf":
            if field.size % 4:
                raise ValueError(f"{where}: numeric 'box' of shape {field.shape} is not n x 4")
            raw = list(np.asarray(field, dtype=np.float64).reshape(-1, 4))
        else:
            raw = [
                _first_field(b, ["idlocate"], f"{where}.box[{j}]")
                for j, b in enumerate(mat_elements(field))
            ]
        boxes = [_xywh_box(r, f"{where}.box[{j}]") for j, r in enumerate(raw)]
        skipped += sum(b is None for b in boxes)
        boxes = [b for b in boxes if b is not None]
        out[name] = np.stack(boxes) if boxes else np.zeros((0, 4), dtype=np.float32)
    if skipped:
        logger.info("%s: skipped %d invalid boxes (w <= 0 or h <= 0)", path, skipped)
    return out


def _read_pool(root: str) -> List[str]:
    path = os.path.join(root, _ANNO, "pool.mat")
    data = loadmat_checked(path, ["pool"])
    names = [mat_string(e, f"{path}: pool[{i}]") for i, e in enumerate(mat_elements(data["pool"]))]
    return [n for n in names if n]


def _read_train_mat(root: str) -> List[tuple]:
    """``[(idname, [(imname, box_xyxy or None), ...]), ...]`` in ``Train.mat`` order."""
    path = os.path.join(root, _PROTO, "Train.mat")
    data = loadmat_checked(path, ["Train"])
    out = []
    for i, e in enumerate(mat_elements(data["Train"])):
        where = f"{path}: Train[{i}]"
        idname = mat_string(mat_field(e, "idname", where), where)
        scenes = []
        for j, s in enumerate(mat_elements(mat_field(e, "scene", where))):
            w = f"{where}.scene[{j}]"
            scenes.append(
                (
                    mat_string(mat_field(s, "imname", w), w),
                    _xywh_box(mat_field(s, "idlocate", w), w),
                )
            )
        out.append((idname, scenes))
    return out


def cuhk_sysu_gallery_sizes(root: str) -> List[int]:
    """Gallery sizes N with a ``TestG<N>.mat`` under ``root`` (sorted)."""
    files = glob.glob(os.path.join(root, _PROTO, "TestG*.mat"))
    sizes = [re.fullmatch(r"TestG(\d+)\.mat", os.path.basename(f)) for f in files]
    return sorted(int(m.group(1)) for m in sizes if m)


def _pids_from_idnames(idnames: List[str]) -> List[int]:
    ids = []
    for n in idnames:
        m = re.search(r"(\d+)\s*$", n)
        ids.append(int(m.group(1)) if m else None)
    if None in ids or len(set(ids)) != len(ids):
        return list(range(len(idnames)))
    return ids


def _read_testg(root: str, gallery_size: int) -> List[Dict[str, Any]]:
    """Queries of ``TestG<gallery_size>.mat``: dicts with imname, box (xyxy), pid and
    gallery ``[(imname, box_xyxy or None), ...]``."""
    key = f"TestG{gallery_size}"
    path = os.path.join(root, _PROTO, f"{key}.mat")
    data = loadmat_checked(path, [key])
    queries, idnames = [], []
    for i, e in enumerate(mat_elements(data[key])):
        where = f"{path}: {key}[{i}]"
        q = mat_field(e, "Query", where)
        wq = f"{where}.Query"
        imname = mat_string(mat_field(q, "imname", wq), wq)
        box = _xywh_box(mat_field(q, "idlocate", wq), wq)
        if box is None:
            raise ValueError(f"{wq}: query box is empty or has w <= 0 / h <= 0")
        idnames.append(mat_string(mat_field(q, "idname", wq), wq))
        gallery = []
        for j, g in enumerate(mat_elements(mat_field(e, "Gallery", where))):
            wg = f"{where}.Gallery[{j}]"
            gallery.append(
                (
                    mat_string(mat_field(g, "imname", wg), wg),
                    _xywh_box(mat_field(g, "idlocate", wg), wg),
                )
            )
        queries.append({"imname": imname, "box": box, "gallery": gallery})
    for q, pid in zip(queries, _pids_from_idnames(idnames)):
        q["pid"] = pid
    return queries


def _reference_testg(root: str) -> List[Dict[str, Any]]:
    sizes = cuhk_sysu_gallery_sizes(root)
    if not sizes:
        raise FileNotFoundError(
            f"No test protocol found: expected {os.path.join(root, _PROTO, 'TestG50.mat')} "
            "(or another TestG<N>.mat)"
        )
    return _read_testg(root, sizes[0])


def _set_pid(
    boxes: Dict[str, np.ndarray],
    pids: Dict[str, np.ndarray],
    name: str,
    box: np.ndarray,
    pid: int,
    source: str,
) -> None:
    """Label the box of image ``name`` matching ``box`` with ``pid`` (appends if none)."""
    if name not in boxes:
        raise ValueError(f"{source}: image '{name}' is not listed in Images.mat")
    b = boxes[name]
    idx = -1
    if len(b):
        diff = np.abs(b - box[None]).max(axis=1)
        idx = int(diff.argmin()) if diff.min() <= 0.5 else -1
        if idx < 0:
            lt, rb = np.maximum(b[:, :2], box[:2]), np.minimum(b[:, 2:], box[2:])
            inter = np.clip(rb - lt, 0, None).prod(axis=1)
            area = (b[:, 2:] - b[:, :2]).prod(axis=1) + (box[2:] - box[:2]).prod()
            iou = inter / np.maximum(area - inter, 1e-6)
            idx = int(iou.argmax()) if iou.max() >= 0.5 else -1
    if idx < 0:
        logger.warning("%s: box %s of id %d not found in image '%s'; added", source, box, pid, name)
        boxes[name] = np.concatenate([b, box[None].astype(np.float32)])
        pids[name] = np.concatenate([pids[name], np.array([pid], dtype=np.int64)])
    elif pids[name][idx] in (UNLABELED_PID, pid):
        pids[name][idx] = pid
    else:
        logger.warning(
            "%s: box %s in '%s' already has id %d; keeping it (not %d)",
            source,
            box,
            name,
            pids[name][idx],
            pid,
        )


def _records(
    root: str,
    names: List[str],
    boxes: Dict[str, np.ndarray],
    pids: Dict[str, np.ndarray],
    dataset_name: str,
) -> List[Dict[str, Any]]:
    img_dir = os.path.join(root, "Image", "SSM")
    paths = {n: os.path.join(img_dir, n) for n in names}
    sizes = read_image_sizes(paths, os.path.join(root, _ANNO, "image_sizes.json"))
    return [
        {
            "file_name": paths[n],
            "image_id": n,
            "height": sizes[n][0],
            "width": sizes[n][1],
            "boxes": boxes[n].astype(np.float32).reshape(-1, 4),
            "pids": pids[n].astype(np.int64),
            "camid": -1,
            "dataset": dataset_name,
        }
        for n in names
    ]


def _unlabelled(boxes: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    return {n: np.full(len(b), UNLABELED_PID, dtype=np.int64) for n, b in boxes.items()}


# --------------------------------------------------------------------------------------- #
# Public parsers
# --------------------------------------------------------------------------------------- #
def load_cuhk_sysu_train(root: str, dataset_name: str = "cuhk_sysu_train") -> List[Dict]:
    """Train split: every ``Images.mat`` image not in ``pool.mat`` (file order).

    Returns:
        list of records ``{"file_name", "image_id", "height", "width", "boxes" (float32
        (N, 4) x1,y1,x2,y2), "pids" (int64 (N,); ``Train.mat`` ids relabelled 0..P-1 in file
        order, background persons :data:`UNLABELED_PID`), "camid" (-1: unknown),
        "dataset"}``.

    Raises:
        FileNotFoundError / ValueError: a file is missing / malformed (message names it).
    """
    boxes = _read_images_mat(root)
    pool = set(_read_pool(root))
    pids = _unlabelled(boxes)
    source = os.path.join(root, _PROTO, "Train.mat")
    for label, (idname, scenes) in enumerate(_read_train_mat(root)):
        for imname, box in scenes:
            if box is not None:
                _set_pid(boxes, pids, imname, box, label, f"{source} ({idname})")
    names = [n for n in boxes if n not in pool]
    return _records(root, names, boxes, pids, dataset_name)


def _test_labels(root: str):
    boxes = _read_images_mat(root)
    pids = _unlabelled(boxes)
    queries = _reference_testg(root)
    source = os.path.join(root, _PROTO, "TestG*.mat")
    for q in queries:
        _set_pid(boxes, pids, q["imname"], q["box"], q["pid"], f"{source} (query)")
        for imname, box in q["gallery"]:
            if box is not None:
                _set_pid(boxes, pids, imname, box, q["pid"], f"{source} (gallery)")
    return boxes, pids, queries


def load_cuhk_sysu_gallery(root: str, dataset_name: str = "cuhk_sysu_gallery") -> List[Dict]:
    """Gallery split: the ``pool.mat`` images (pool order); records as in
    :func:`load_cuhk_sysu_train` with raw test ids (from the smallest ``TestG<N>.mat``)."""
    boxes, pids, _ = _test_labels(root)
    pool = _read_pool(root)
    missing = [n for n in pool if n not in boxes]
    if missing:
        raise ValueError(
            f"{os.path.join(root, _ANNO, 'pool.mat')}: {len(missing)} images not in Images.mat "
            f"(e.g. '{missing[0]}')"
        )
    return _records(root, pool, boxes, pids, dataset_name)


def load_cuhk_sysu_query(root: str, dataset_name: str = "cuhk_sysu_query") -> List[Dict]:
    """Query split: one record per query of the protocol (2,900 on the real data, same order
    as :func:`load_cuhk_sysu_protocol`): the scene record of the query image (all its boxes
    and test ids, e.g. for context persons) plus ``"query_box"`` (float32 (4,) x1,y1,x2,y2)
    and ``"query_pid"`` (int)."""
    boxes, pids, queries = _test_labels(root)
    names = sorted({q["imname"] for q in queries})
    scene = {r["image_id"]: r for r in _records(root, names, boxes, pids, dataset_name)}
    out = []
    for q in queries:
        r = dict(scene[q["imname"]])
        r["boxes"], r["pids"] = r["boxes"].copy(), r["pids"].copy()
        r["query_box"] = q["box"].astype(np.float32)
        r["query_pid"] = int(q["pid"])
        out.append(r)
    return out


class _PoolWithout(Sequence):
    """Read-only view of the pool without one image (the full-set gallery, O(1) memory)."""

    def __init__(self, pool: Sequence[str], skip: int):
        self._pool, self._skip = pool, skip

    def __len__(self) -> int:
        return len(self._pool) - (self._skip >= 0)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self._pool[i + (0 <= self._skip <= i)]


def load_cuhk_sysu_protocol(root: str, gallery_size: int = 100) -> List[Dict[str, Any]]:
    """Person-search test protocol: per query the gallery images and the GT box in each.

    Args:
        root: the CUHK-SYSU folder.
        gallery_size: N of ``TestG<N>.mat`` (50, 100, 500, 1000, 2000, 4000 on the real
            data), or ``-1`` for the full set: all pool images except the query's own image,
            with the positives of the smallest available ``TestG<N>.mat``.

    Returns:
        one dict per query (order of :func:`load_cuhk_sysu_query`):
        ``{"query_image_id": str, "query_box": float32 (4,) x1,y1,x2,y2, "query_pid": int,
        "gallery_image_ids": Sequence[str] (never contains the query image),
        "gallery_gt": {image_id: float32 (4,) x1,y1,x2,y2}`` (the gallery images that
        contain the query person; absent / empty ``idlocate`` entries are not in it)}.

    Raises:
        FileNotFoundError: the protocol file (or pool.mat) is missing.
        ValueError: ``gallery_size`` is not positive nor -1, or a file is malformed.
    """
    if gallery_size == -1:
        queries = _reference_testg(root)
        pool = _read_pool(root)
        index = {n: i for i, n in enumerate(pool)}
    elif isinstance(gallery_size, (int, np.integer)) and gallery_size > 0:
        queries = _read_testg(root, int(gallery_size))
    else:
        raise ValueError(f"gallery_size must be a positive TestG size or -1, got {gallery_size}")
    out = []
    for q in queries:
        gt = {n: b for n, b in q["gallery"] if b is not None and n != q["imname"]}
        if gallery_size == -1:
            gallery: Sequence[str] = _PoolWithout(pool, index.get(q["imname"], -1))
        else:
            gallery = [n for n, _ in q["gallery"] if n != q["imname"]]
        out.append(
            {
                "query_image_id": q["imname"],
                "query_box": q["box"],
                "query_pid": int(q["pid"]),
                "gallery_image_ids": gallery,
                "gallery_gt": gt,
            }
        )
    return out


# --------------------------------------------------------------------------------------- #
# Registration
# --------------------------------------------------------------------------------------- #
def register_cuhk_sysu(
    prefix: str = "cuhk_sysu", root_fn: Optional[Callable[[], str]] = None
) -> List[str]:
    """Register ``<prefix>_train``, ``<prefix>_gallery``, ``<prefix>_query`` (lazy loaders;
    ``root_fn()`` is resolved at call time, default ``$REID_DATASETS/cuhk_sysu``). Metadata
    (set on load): num_images, num_boxes, num_labeled_boxes, num_pids, num_cams, root,
    evaluator_type and search_protocol ``"cuhk_sysu"``, unlabeled_pid; for the query split
    also num_queries, gallery_sizes, gallery_dataset and ``load_protocol(gallery_size)``."""
    if root_fn is None:
        root_fn = lambda: os.path.join(dataset_root(), "cuhk_sysu")  # noqa: E731
    names = []
    for split, loader in (
        ("train", load_cuhk_sysu_train),
        ("gallery", load_cuhk_sysu_gallery),
        ("query", load_cuhk_sysu_query),
    ):
        name = f"{prefix}_{split}"
        names.append(name)
        if name in DatasetCatalog:
            continue

        def _fn(name=name, loader=loader, split=split):
            root = root_fn()
            records = loader(root, dataset_name=name)
            stats = scene_statistics(records)
            extra: Dict[str, Any] = {}
            if split == "query":
                extra = dict(
                    gallery_sizes=cuhk_sysu_gallery_sizes(root),
                    load_protocol=functools.partial(load_cuhk_sysu_protocol, root),
                    gallery_dataset=f"{prefix}_gallery",
                )
            MetadataCatalog.get(name).set(root=root, **stats, **extra)
            logger.info(
                "Loaded %s from %s:\n%s", name, root, format_scene_statistics({name: stats})
            )
            return records

        DatasetCatalog.register(name, _fn)
        MetadataCatalog.get(name).set(
            evaluator_type="cuhk_sysu", search_protocol="cuhk_sysu", unlabeled_pid=UNLABELED_PID
        )
    return names


def _synthetic_root() -> str:
    from ..synthetic_scenes import ensure_synthetic_scenes

    return ensure_synthetic_scenes(dataset_root(), fmt="cuhk_sysu")


register_cuhk_sysu("cuhk_sysu")
register_cuhk_sysu("synthetic_cuhk_sysu", _synthetic_root)
