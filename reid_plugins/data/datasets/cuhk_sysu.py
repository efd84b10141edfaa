"""CUHK-SYSU person-search dataset (scene images).

Layout under ``<root>`` (``$REID_DATASETS/cuhk_sysu``), MATLAB v5 files read with the
helpers of :mod:`reid_plugins.data.datasets.scene_common` (any nesting, so squeezed /
transposed variants of the same files load too):

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

A parsed ``TestG<N>.mat`` is cached in ``annotation/test/train_test/.TestG<N>.parsed.npz``
(re-parsed when the ``.mat`` changes size or modification time; not written, silently, when
the folder is read-only).

Registered names: ``cuhk_sysu_{train,gallery,query}`` (and ``synthetic_cuhk_sysu_*`` on the
generated data of :mod:`reid_plugins.data.synthetic_scenes`). Record fields: see
:func:`load_cuhk_sysu_train`. Image sizes are read once from the image headers and cached in
``annotation/image_sizes.json``.

The scene helpers shared with PRW (:data:`UNLABELED_PID`, the MATLAB readers,
:func:`read_image_sizes`, :func:`scene_statistics`, :func:`format_scene_statistics`) live in
:mod:`~reid_plugins.data.datasets.scene_common` and are re-exported here.
"""

from __future__ import annotations

import functools
import glob
import logging
import os
import re
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .scene_common import (
    UNLABELED_PID,
    cached_arrays,
    format_scene_statistics,
    loadmat_checked,
    mat_elements,
    mat_field,
    mat_first_field,
    mat_string,
    mat_vector,
    read_image_sizes,
    register_scene_splits,
    scene_statistics,
    synthetic_scenes_root,
)

__all__ = [
    "UNLABELED_PID",
    "load_cuhk_sysu_train",
    "load_cuhk_sysu_gallery",
    "load_cuhk_sysu_query",
    "load_cuhk_sysu_protocol",
    "protocol_cache_path",
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

_ANNO = "annotation"
_PROTO = os.path.join("annotation", "test", "train_test")


# --------------------------------------------------------------------------------------- #
# CUHK-SYSU files
# --------------------------------------------------------------------------------------- #
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


def _image_box(s: Any, where: str) -> Tuple[str, Optional[np.ndarray]]:
    """``(imname, box_xyxy or None)`` of one protocol struct with ``imname`` / ``idlocate``."""
    imname = mat_string(mat_field(s, "imname", where), where)
    return imname, _xywh_box(mat_field(s, "idlocate", where), where)


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
                mat_first_field(b, "idlocate", f"{where}.box[{j}]")
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
        scenes = mat_elements(mat_field(e, "scene", where))
        out.append((idname, [_image_box(s, f"{where}.scene[{j}]") for j, s in enumerate(scenes)]))
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


def protocol_cache_path(root: str, gallery_size: int) -> str:
    """Where the parsed ``TestG<gallery_size>.mat`` is cached (next to it)."""
    return os.path.join(root, _PROTO, f".TestG{gallery_size}.parsed.npz")


def _read_testg(root: str, gallery_size: int) -> List[Dict[str, Any]]:
    """Queries of ``TestG<gallery_size>.mat``: dicts with imname, box (xyxy), pid and
    gallery ``[(imname, box_xyxy or None), ...]``.

    The parsed file is cached (:func:`protocol_cache_path`, re-parsed when the ``.mat``
    changes size or modification time)."""
    path = os.path.join(root, _PROTO, f"TestG{gallery_size}.mat")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Annotation file not found: {path}")
    a = cached_arrays(
        path,
        protocol_cache_path(root, gallery_size),
        lambda: _pack_testg(_parse_testg(root, gallery_size)),
    )
    names = a["names"].tolist()
    qbox, gbox, has = a["query_box"], a["gallery_box"], a["gallery_has_box"]
    gname, bounds = a["gallery_name"].tolist(), a["gallery_bounds"].tolist()
    queries = []
    for i, (n, pid) in enumerate(zip(a["query_name"].tolist(), a["query_pid"].tolist())):
        s, e = bounds[i], bounds[i + 1]
        gallery = [(names[gname[j]], gbox[j] if has[j] else None) for j in range(s, e)]
        queries.append({"imname": names[n], "box": qbox[i], "gallery": gallery, "pid": pid})
    return queries


def _pack_testg(queries: List[Dict[str, Any]]) -> Dict[str, np.ndarray]:
    """:func:`_parse_testg` output as flat arrays (names as indices into ``names``)."""
    names: Dict[str, int] = {}
    gallery = [e for q in queries for e in q["gallery"]]
    query_name = [names.setdefault(q["imname"], len(names)) for q in queries]
    gallery_name = [names.setdefault(n, len(names)) for n, _ in gallery]
    return {
        "names": np.array(list(names) or [""], dtype=str),
        "query_name": np.array(query_name, dtype=np.int64),
        "query_box": np.array([q["box"] for q in queries], np.float32).reshape(-1, 4),
        "query_pid": np.array([q["pid"] for q in queries], dtype=np.int64),
        "gallery_bounds": np.cumsum([0] + [len(q["gallery"]) for q in queries]),
        "gallery_name": np.array(gallery_name, dtype=np.int64),
        "gallery_box": np.array(
            [np.zeros(4, np.float32) if b is None else b for _, b in gallery], np.float32
        ).reshape(-1, 4),
        "gallery_has_box": np.array([b is not None for _, b in gallery], dtype=bool),
    }


def _parse_testg(root: str, gallery_size: int) -> List[Dict[str, Any]]:
    """:func:`_read_testg` without the cache."""
    key = f"TestG{gallery_size}"
    path = os.path.join(root, _PROTO, f"{key}.mat")
    data = loadmat_checked(path, [key])
    queries, idnames = [], []
    for i, e in enumerate(mat_elements(data[key])):
        where = f"{path}: {key}[{i}]"
        q = mat_field(e, "Query", where)
        wq = f"{where}.Query"
        imname, box = _image_box(q, wq)
        if box is None:
            raise ValueError(f"{wq}: query box is empty or has w <= 0 / h <= 0")
        idnames.append(mat_string(mat_field(q, "idname", wq), wq))
        entries = mat_elements(mat_field(e, "Gallery", where))
        gallery = [_image_box(g, f"{where}.Gallery[{j}]") for j, g in enumerate(entries)]
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
    order = {n: i for i, n in enumerate(boxes)}  # Images.mat order
    images_mat = os.path.join(root, _ANNO, "Images.mat")
    listed_in = {n: f"{images_mat}: Img[{order.get(n, '?')}]" for n in names}
    sizes = read_image_sizes(paths, os.path.join(root, _ANNO, "image_sizes.json"), listed_in)
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
    return register_scene_splits(
        prefix,
        {
            "train": load_cuhk_sysu_train,
            "gallery": load_cuhk_sysu_gallery,
            "query": load_cuhk_sysu_query,
        },
        protocol="cuhk_sysu",
        folder="cuhk_sysu",
        root_fn=root_fn,
        query_metadata=_query_metadata,
    )


def _query_metadata(root: str) -> Dict[str, Any]:
    """Protocol metadata of the query split: gallery sizes and the protocol loader."""
    return dict(
        gallery_sizes=cuhk_sysu_gallery_sizes(root),
        load_protocol=functools.partial(load_cuhk_sysu_protocol, root),
    )


register_cuhk_sysu("cuhk_sysu")
register_cuhk_sysu("synthetic_cuhk_sysu", synthetic_scenes_root("cuhk_sysu"))
