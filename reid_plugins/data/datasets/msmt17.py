"""MSMT17 (V1 and V2) from its list files.

Layout (relative to ``$REID_DATASETS``)::

    msmt17/MSMT17_V1/                      msmt17/MSMT17_V2/
        train/0000/0000_000_01_0303morning_0015_0.jpg    mask_train_v2/...
        test/...                                         mask_test_v2/...
        list_train.txt list_val.txt list_query.txt list_gallery.txt

Each list line is ``<path relative to the image folder> <pid>``; train and val lists refer
to the train folder, query and gallery lists to the test folder. The camera is the third
``_``-separated field of the file name (``01`` -> camid 0), 15 cameras. Train = list_train +
list_val (relabelled); "combined" = train + query + gallery (test ids offset so they never
collide with train ids, which are both numbered from 0). Every pid is a real identity (no
distractor pid).
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Tuple

from .common import check_listed_files, combine_splits, relabel_train, require_path

__all__ = ["MSMT17_DIRS", "load_msmt17", "read_msmt17_list"]

# version -> (folder, train image folder, test image folder)
MSMT17_DIRS = {
    "v1": (os.path.join("msmt17", "MSMT17_V1"), "train", "test"),
    "v2": (os.path.join("msmt17", "MSMT17_V2"), "mask_train_v2", "mask_test_v2"),
}
NUM_CAMS = 15


def _camid(path: str, list_file: str, lineno: int) -> int:
    fields = os.path.basename(path).split("_")
    try:
        cam = int(fields[2])
    except (IndexError, ValueError):
        raise ValueError(
            f"{list_file}:{lineno}: cannot read the camera from '{path}' (expected names like "
            f"'0000_000_01_0303morning_0015_0.jpg', camera = third field)"
        ) from None
    if not 1 <= cam <= NUM_CAMS:
        raise ValueError(f"{list_file}:{lineno}: camera {cam} of '{path}' is outside 1..15")
    return cam - 1


def read_msmt17_list(list_file: str, image_dir: str, dataset_name: str) -> List[Dict[str, Any]]:
    """Parse one MSMT17 list file into records with raw pids.

    Args:
        list_file: e.g. ``.../list_train.txt``.
        image_dir: folder the listed paths are relative to.
        dataset_name: ``dataset`` field of the records.

    Raises:
        FileNotFoundError: ``list_file`` or a listed image is missing (every listed path is
            checked once; the message names the list file and line).
        ValueError: a malformed line (the message names file and line).
    """
    require_path(list_file, "MSMT17 list file", is_dir=False)
    records, linenos = [], []
    with open(list_file) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise ValueError(f"{list_file}:{lineno}: expected '<path> <pid>', got {line!r}")
            rel, pid = parts
            try:
                pid = int(pid)
            except ValueError:
                raise ValueError(f"{list_file}:{lineno}: pid '{pid}' is not an integer") from None
            path = os.path.abspath(os.path.join(image_dir, rel))
            records.append(
                {
                    "file_name": path,
                    "pid": pid,
                    "camid": _camid(rel, list_file, lineno),
                    "dataset": dataset_name,
                }
            )
            linenos.append(lineno)
    check_listed_files(list_file, [(n, r["file_name"]) for n, r in zip(linenos, records)])
    return records


def load_msmt17(
    root: str, split: str, version: str = "v2", dataset_name: str = ""
) -> List[Dict[str, Any]]:
    """MSMT17 records from ``<root>/msmt17/MSMT17_V1`` or ``MSMT17_V2``.

    Args:
        root: datasets root (``$REID_DATASETS``).
        split: ``"train"`` (list_train + list_val, relabelled), ``"test"`` (query then
            gallery, raw pids, ``is_query``) or ``"combined"`` (train + test, relabelled).
        version: ``"v1"`` or ``"v2"``.
        dataset_name: ``dataset`` field (default ``msmt17_<version>_<split>``).

    Raises:
        ValueError: unknown split or version.
        FileNotFoundError: the dataset folder, an image folder or a list file is missing.
    """
    if version not in MSMT17_DIRS:
        raise ValueError(f"Unknown MSMT17 version '{version}': expected 'v1' or 'v2'")
    if split not in ("train", "test", "combined"):
        raise ValueError(f"Unknown split '{split}': expected 'train', 'test' or 'combined'")
    rel, train_folder, test_folder = MSMT17_DIRS[version]
    data_dir = require_path(os.path.join(root, rel), f"MSMT17_{version.upper()} folder")
    name = dataset_name or f"msmt17_{version}_{split}"

    def read(list_name: str, folder: str) -> List[Dict[str, Any]]:
        image_dir = require_path(
            os.path.join(data_dir, folder), f"MSMT17_{version.upper()} image folder"
        )
        return read_msmt17_list(os.path.join(data_dir, list_name), image_dir, name)

    def train_raw() -> List[Dict[str, Any]]:
        return read("list_train.txt", train_folder) + read("list_val.txt", train_folder)

    def test_raw() -> List[Dict[str, Any]]:
        query = [dict(r, is_query=True) for r in read("list_query.txt", test_folder)]
        gallery = [dict(r, is_query=False) for r in read("list_gallery.txt", test_folder)]
        return query + gallery

    if split == "train":
        return relabel_train(train_raw())
    if split == "test":
        return test_raw()
    return combine_splits(train_raw(), test_raw(), name, distractor_pid=None)


def msmt17_loader(version: str, split: str, name: str):
    """``fn(root) -> (records, metadata)`` for :func:`.common.register_reid_split`."""

    def load(root: str) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
        recs = load_msmt17(root, split, version, name)
        data_dir = os.path.abspath(os.path.join(root, MSMT17_DIRS[version][0]))
        return recs, {"root": data_dir, "distractor_pid": None}

    return load
