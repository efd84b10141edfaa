"""CUHK-SYSU as a ReID training set: crops of the labelled training persons.

Reads (relative to ``$REID_DATASETS``)::

    cuhk_sysu/annotation/test/train_test/Train.mat   # Train: per identity (idname, nAppear,
                                                     #   scene: (imname, idlocate, ishard))
    cuhk_sysu/Image/SSM/<imname>                     # scene images

and crops every labelled box (``idlocate`` = x, y, w, h in pixels; boxes with w <= 0 or
h <= 0 are skipped, boxes are clipped to the image) once into the cache folder::

    cuhk_sysu/reid_crops/bounding_box_train/{pid:04d}_c1s1_{k:06d}_00.jpg

(Market naming: pid = 1-based index of the identity in Train.mat, k = its k-th appearance,
camera unknown -> ``c1``). A ``.done`` marker holding the crop count is written last, so an
interrupted run is redone. The crops are then read with the Market folder loader and
relabelled to ``0..N-1`` (5,532 ids on the real data). Train-only: there is no test split.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List, Tuple

import numpy as np

from .common import relabel_train, require_path
from .market1501 import load_market_folder

__all__ = ["parse_cuhk_sysu_train", "crop_cuhk_sysu_reid", "load_cuhk_sysu_reid"]

logger = logging.getLogger(__name__)

TRAIN_MAT = os.path.join("cuhk_sysu", "annotation", "test", "train_test", "Train.mat")
IMAGE_DIR = os.path.join("cuhk_sysu", "Image", "SSM")
CROP_DIR = os.path.join("cuhk_sysu", "reid_crops")


def _field(obj: Any, name: str, path: str) -> Any:
    try:
        return getattr(obj, name)
    except AttributeError:
        raise KeyError(f"'{path}': Train entry has no field '{name}'") from None


def parse_cuhk_sysu_train(mat_path: str) -> List[List[Tuple[str, np.ndarray]]]:
    """Parse ``Train.mat``: per identity (in file order) the list of ``(imname, xywh box)``.

    Raises:
        FileNotFoundError: the file is missing.
        KeyError: the file has no ``Train`` variable or an entry lacks a field.
    """
    from scipy.io import loadmat

    require_path(mat_path, "CUHK-SYSU training annotation", is_dir=False)
    m = loadmat(mat_path, squeeze_me=True, struct_as_record=False)
    if "Train" not in m:
        raise KeyError(f"'{mat_path}' has no variable 'Train' (found: {sorted(m)})")
    identities = []
    for item in np.atleast_1d(m["Train"]):
        scenes = []
        for scene in np.atleast_1d(_field(item, "scene", mat_path)):
            imname = str(_field(scene, "imname", mat_path))
            box = np.asarray(_field(scene, "idlocate", mat_path), dtype=np.float64).ravel()
            if box.size != 4:
                raise ValueError(f"'{mat_path}': idlocate of {imname} is not 4 numbers: {box}")
            scenes.append((imname, box))
        identities.append(scenes)
    return identities


def crop_cuhk_sysu_reid(root: str) -> str:
    """Crop the labelled training persons once; returns the crop folder.

    Args:
        root: datasets root (``$REID_DATASETS``).

    Raises:
        FileNotFoundError: ``Train.mat`` or a scene image is missing.
    """
    import cv2
    from tqdm import tqdm

    out = os.path.join(root, CROP_DIR, "bounding_box_train")
    marker = os.path.join(root, CROP_DIR, ".done")
    if os.path.isfile(marker):
        return out
    identities = parse_cuhk_sysu_train(os.path.join(root, TRAIN_MAT))
    image_dir = require_path(os.path.join(root, IMAGE_DIR), "CUHK-SYSU scene images")
    os.makedirs(out, exist_ok=True)
    count, skipped = 0, 0
    cache: Dict[str, np.ndarray] = {}
    total = sum(len(s) for s in identities)
    with tqdm(total=total, desc="CUHK-SYSU ReID crops", unit="box") as bar:
        for pid, scenes in enumerate(identities, 1):
            for k, (imname, (x, y, w, h)) in enumerate(scenes):
                bar.update(1)
                if w <= 0 or h <= 0:
                    skipped += 1
                    continue
                if imname not in cache:
                    path = require_path(
                        os.path.join(image_dir, imname), "CUHK-SYSU scene image", is_dir=False
                    )
                    img = cv2.imread(path, cv2.IMREAD_COLOR)
                    if img is None:
                        raise ValueError(f"Cannot decode the image '{path}'")
                    cache = {imname: img}  # scenes of one identity rarely repeat; keep one
                img = cache[imname]
                x1, y1 = max(int(round(x)), 0), max(int(round(y)), 0)
                x2 = min(int(round(x + w)), img.shape[1])
                y2 = min(int(round(y + h)), img.shape[0])
                if x2 <= x1 or y2 <= y1:
                    skipped += 1
                    continue
                name = f"{pid:04d}_c1s1_{k:06d}_00.jpg"
                cv2.imwrite(os.path.join(out, name), img[y1:y2, x1:x2])
                count += 1
    if skipped:
        logger.warning(f"CUHK-SYSU ReID crops: skipped {skipped} empty/invalid boxes")
    with open(marker, "w") as fh:
        json.dump({"crops": count, "identities": len(identities), "skipped": skipped}, fh)
    return out


def load_cuhk_sysu_reid(root: str, dataset_name: str = "cuhk_sysu_reid_train"):
    """CUHK-SYSU ReID training records (crops made on first use), pids relabelled 0..N-1.

    Args:
        root: datasets root (``$REID_DATASETS``).
        dataset_name: ``dataset`` field of the records.
    """
    folder = crop_cuhk_sysu_reid(root)
    recs = load_market_folder(folder, dataset_name=dataset_name, what="CUHK-SYSU ReID crops")
    return relabel_train(recs)


def cuhk_sysu_reid_loader(name: str):
    """``fn(root) -> (records, metadata)`` for :func:`.common.register_reid_split`."""

    def load(root: str) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
        return load_cuhk_sysu_reid(root, name), {
            "root": os.path.abspath(os.path.join(root, CROP_DIR))
        }

    return load
