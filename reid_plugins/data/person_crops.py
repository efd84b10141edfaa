"""Person-crop ReID datasets cut from person-search scenes (TDN's teacher training set).

TDN pre-trains its ReID teacher on "all labelled person patches cropped from the panoramic
images and resized to 256 x 128 x 3 with bilinear interpolation" (Sec. III-A).
:func:`build_person_crops` writes those crops for a registered scene dataset prefix
(``cuhk_sysu``, ``prw``, ``synthetic_cuhk_sysu``, ``synthetic_prw``) in the Market-1501
layout, so the teacher is trained with the ordinary ReID configs and loaders::

    $REID_DATASETS/<prefix>_crops/
        bounding_box_train/  every labelled box of <prefix>_train
        query/               the query boxes of <prefix>_query
        bounding_box_test/   the labelled boxes of <prefix>_gallery (except each query's own
                             box, which would be a trivial match)
        manifest.json        parameters and counts (written last: a crash is redone)

File names ``{pid + 1:04d}_c{cam}s1_{k:06d}_00.jpg``: ``pid`` is the scene record's pid
(train: 0..P-1; test: raw ids) shifted by one because the Market convention reserves pid 0
for distractors; ``k`` numbers the crops; ``cam`` = ``camid + 1`` when the camera is known
(PRW: 1..6). CUHK-SYSU has no cameras: train crops use ``c1``, query crops ``c1`` and gallery
crops ``c2`` (pseudo cameras, so the Market protocol's same-camera filter keeps every
gallery match). Unlabelled boxes (pid -1) are never cropped.

Registered names (lazy; the crops are built on first use): ``<prefix>_crops_train`` and
``<prefix>_crops_test`` for the four prefixes above; e.g. ``DATASETS.TRAIN:
[prw_crops_train]``. ``tools/build_person_crops.py`` builds them explicitly.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from tqdm import tqdm

from .catalog import DatasetCatalog, dataset_root
from .datasets.common import DISTRACTOR_PID, register_reid_split
from .datasets.market1501 import load_market_style
from .detection_utils import read_image

__all__ = [
    "SCENE_PREFIXES",
    "crops_dir",
    "crop_person",
    "build_person_crops",
    "ensure_person_crops",
    "register_person_crops",
]

logger = logging.getLogger(__name__)

#: Scene dataset prefixes with registered ``<prefix>_crops_{train,test}``.
SCENE_PREFIXES = ("cuhk_sysu", "prw", "synthetic_cuhk_sysu", "synthetic_prw")
_MANIFEST = "manifest.json"
_VERSION = 1


def crops_dir(root: str, prefix: str) -> str:
    """``<root>/<prefix>_crops``."""
    return os.path.join(root, f"{prefix}_crops")


def crop_person(
    image: np.ndarray, box: Sequence[float], size: Sequence[int]
) -> Optional[np.ndarray]:
    """Bilinear crop of ``box`` (x1, y1, x2, y2, pixels; clipped to the image) resized to
    ``size = (height, width)``; None when the clipped box is empty."""
    h, w = image.shape[:2]
    x1, y1 = max(int(np.floor(box[0])), 0), max(int(np.floor(box[1])), 0)
    x2, y2 = min(int(np.ceil(box[2])), w), min(int(np.ceil(box[3])), h)
    if x2 <= x1 or y2 <= y1:
        return None
    return cv2.resize(
        image[y1:y2, x1:x2], (int(size[1]), int(size[0])), interpolation=cv2.INTER_LINEAR
    )


def _camera(camid: int, default: int) -> int:
    cam = int(camid) + 1 if int(camid) >= 0 else int(default)
    if not 1 <= cam <= 9:
        raise ValueError(f"Camera id {camid} cannot be written in a Market name (c1..c9)")
    return cam


def _jobs(prefix: str, splits: Iterable[str]) -> List[Tuple[str, str, np.ndarray, int, int]]:
    """``(folder, file_name, box, pid, cam)`` of every crop to write."""
    jobs = []
    if "train" in splits:
        for r in DatasetCatalog.get(f"{prefix}_train"):
            cam = _camera(r.get("camid", -1), 1)
            for box, pid in zip(np.asarray(r["boxes"]).reshape(-1, 4), np.asarray(r["pids"])):
                if int(pid) >= 0:
                    jobs.append(("bounding_box_train", r["file_name"], box, int(pid), cam))
    if "test" in splits:
        own = set()
        for r in DatasetCatalog.get(f"{prefix}_query"):
            box = np.asarray(r["query_box"], dtype=np.float64).reshape(4)
            own.add((str(r["image_id"]), int(r["query_pid"])))
            cam = _camera(r.get("camid", -1), 1)
            jobs.append(("query", r["file_name"], box, int(r["query_pid"]), cam))
        for r in DatasetCatalog.get(f"{prefix}_gallery"):
            cam = _camera(r.get("camid", -1), 2)
            for box, pid in zip(np.asarray(r["boxes"]).reshape(-1, 4), np.asarray(r["pids"])):
                if int(pid) >= 0 and (str(r["image_id"]), int(pid)) not in own:
                    jobs.append(("bounding_box_test", r["file_name"], box, int(pid), cam))
    return jobs


def _read_manifest(out: str) -> Optional[Dict[str, Any]]:
    try:
        with open(os.path.join(out, _MANIFEST)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def build_person_crops(
    prefix: str,
    root: Optional[str] = None,
    *,
    size: Sequence[int] = (256, 128),
    splits: Sequence[str] = ("train", "test"),
    overwrite: bool = False,
    progress: bool = True,
) -> str:
    """Write the crops of the scene sets ``<prefix>_{train,query,gallery}`` (see the module
    docstring); returns the output folder ``<root>/<prefix>_crops``.

    Args:
        prefix: registered scene-dataset prefix (e.g. ``"prw"``, ``"synthetic_cuhk_sysu"``).
        root: datasets root (default ``$REID_DATASETS``).
        size: ``(height, width)`` of the crops (TDN: 256 x 128).
        splits: ``"train"`` and/or ``"test"`` (query + gallery).
        overwrite: rebuild even when a folder with the same parameters exists.
        progress: show a tqdm bar.

    Raises:
        ValueError: unknown split or bad size.
        KeyError: ``<prefix>_train`` (etc.) is not a registered dataset.
    """
    from . import datasets  # noqa: F401  (registers the scene sets)

    splits = tuple(sorted(set(splits)))
    bad = [s for s in splits if s not in ("train", "test")]
    if bad or not splits:
        raise ValueError(f"splits must be a subset of ('train', 'test'), got {list(splits)}")
    if len(size) != 2 or min(int(v) for v in size) < 8:
        raise ValueError(f"size must be (height, width) >= 8 pixels, got {list(size)}")
    root = dataset_root() if root is None else root
    out = crops_dir(root, prefix)
    params = {"prefix": prefix, "size": [int(v) for v in size], "splits": list(splits)}
    manifest = _read_manifest(out)
    if not overwrite and manifest and manifest.get("params") == params:
        if manifest.get("version") == _VERSION:
            return out
    jobs = _jobs(prefix, splits)
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{prefix}_crops.", dir=root)
    try:
        counts: Dict[str, int] = {}
        ids: Dict[str, set] = {}
        image, image_path = None, None
        for folder, path, box, pid, cam in tqdm(
            jobs, desc=f"crops {prefix}", unit="box", disable=not progress
        ):
            if path != image_path:
                image, image_path = read_image(path, "RGB"), path
            crop = crop_person(image, box, size)
            if crop is None:
                continue
            os.makedirs(os.path.join(tmp, folder), exist_ok=True)
            k = counts.get(folder, 0)
            name = f"{pid + 1:04d}_c{cam}s1_{k:06d}_00.jpg"
            cv2.imwrite(
                os.path.join(tmp, folder, name),
                cv2.cvtColor(crop, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 95],
            )
            counts[folder] = k + 1
            ids.setdefault(folder, set()).add(pid)
        for folder in ("bounding_box_train", "query", "bounding_box_test"):
            os.makedirs(os.path.join(tmp, folder), exist_ok=True)
        stats = {f: {"images": counts.get(f, 0), "ids": len(ids.get(f, ()))} for f in counts}
        with open(os.path.join(tmp, _MANIFEST), "w") as f:
            json.dump({"version": _VERSION, "params": params, "counts": stats}, f, indent=1)
        if os.path.exists(out):
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("Person crops of '%s' written to %s: %s", prefix, out, stats)
    return out


def ensure_person_crops(prefix: str, root: Optional[str] = None) -> str:
    """The crop folder of ``prefix`` if it was built (any parameters), else build it with the
    defaults (256 x 128, train + test)."""
    root = dataset_root() if root is None else root
    out = crops_dir(root, prefix)
    if _read_manifest(out) is not None:
        return out
    return build_person_crops(prefix, root)


def _loader(prefix: str, split: str, name: str):
    def load(root: str):
        data_dir = ensure_person_crops(prefix, root)
        recs = load_market_style(data_dir, split, dataset_name=name, what=f"{prefix} crops")
        return recs, {"root": os.path.abspath(data_dir), "distractor_pid": DISTRACTOR_PID}

    return load


def register_person_crops(prefixes: Sequence[str] = SCENE_PREFIXES) -> List[str]:
    """Register ``<prefix>_crops_train`` / ``<prefix>_crops_test`` (Market loader on the
    crops, built on first use). Returns the names."""
    names = []
    for prefix in prefixes:
        for split in ("train", "test"):
            name = f"{prefix}_crops_{split}"
            if name not in DatasetCatalog:
                register_reid_split(name, _loader(prefix, split, name))
            names.append(name)
    return names


register_person_crops()
