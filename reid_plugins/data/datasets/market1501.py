"""Market-1501 and the generic Market-style folder loader.

Layout (relative to ``$REID_DATASETS``)::

    market1501/Market-1501-v15.09.15/
        bounding_box_train/0002_c1s1_000451_03.jpg ...
        bounding_box_test/   (gallery, incl. 0000_* distractors and -1_* junk)
        query/

Rules (datasets.md): pid ``-1`` (junk) is dropped from train, query and gallery; pid ``0``
(background distractor) is kept in the gallery only; train pids are relabelled ``0..N-1``;
camid is 0-based. The optional ``images/extra`` folder (500k distractors) is not loaded.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any, Dict, List, Optional, Tuple

from .common import (
    DISTRACTOR_PID,
    JUNK_PID,
    MARKET_PATTERN,
    combine_splits,
    list_images,
    parse_market_name,
    register_reid_split,
    relabel_train,
    require_path,
)

__all__ = [
    "MARKET1501_DIR",
    "load_market_folder",
    "load_market_style",
    "load_market1501",
    "register_market_style",
]

logger = logging.getLogger(__name__)

MARKET1501_DIR = os.path.join("market1501", "Market-1501-v15.09.15")
SPLIT_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


def load_market_folder(
    folder: str,
    *,
    dataset_name: str,
    what: str = "Market-style folder",
    pattern: re.Pattern = MARKET_PATTERN,
    max_cam: Optional[int] = None,
) -> List[Dict[str, Any]]:
    """Records of every image in one Market-style folder, raw pids, nothing dropped.

    Args:
        folder: e.g. ``.../bounding_box_train``.
        dataset_name: value of the records' ``dataset`` field.
        what: description used in the error message when ``folder`` is missing.
        pattern: regex with groups (pid, camera), default ``([-\\d]+)_c(\\d)``.
        max_cam: highest valid camera number (1-based), None = no check.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        ValueError: a file name cannot be parsed.
    """
    require_path(folder, what)
    records = []
    for path in list_images(folder):
        pid, camid = parse_market_name(path, pattern, max_cam)
        records.append({"file_name": path, "pid": pid, "camid": camid, "dataset": dataset_name})
    return records


def load_market_style(
    data_dir: str,
    split: str,
    *,
    dataset_name: str,
    what: str = "Market-style dataset",
    pattern: re.Pattern = MARKET_PATTERN,
    max_cam: Optional[int] = None,
) -> List[Dict[str, Any]]:
    """Load one split of a folder laid out like Market-1501.

    Args:
        data_dir: folder holding ``bounding_box_train``, ``bounding_box_test``, ``query``.
        split: ``"train"`` (relabelled pids 0..N-1, junk and distractors dropped),
            ``"test"`` (query then gallery records with ``is_query``, raw pids, junk
            dropped, distractors kept in the gallery only) or ``"combined"`` (train + query +
            gallery as one relabelled training set, junk and distractors dropped).
        dataset_name: value of the records' ``dataset`` field.
        what: dataset description used in error messages.
        pattern, max_cam: see :func:`load_market_folder`.

    Raises:
        ValueError: unknown ``split``.
        FileNotFoundError: a split folder is missing (the message names it).
    """

    def folder(key: str) -> List[Dict[str, Any]]:
        path = os.path.join(data_dir, SPLIT_FOLDERS[key])
        return load_market_folder(
            path,
            dataset_name=dataset_name,
            what=f"{what} {key} folder",
            pattern=pattern,
            max_cam=max_cam,
        )

    if split == "train":
        recs = [r for r in folder("train") if r["pid"] not in (JUNK_PID, DISTRACTOR_PID)]
        return relabel_train(recs)
    if split == "test":
        query = [
            dict(r, is_query=True)
            for r in folder("query")
            if r["pid"] not in (JUNK_PID, DISTRACTOR_PID)
        ]
        gallery = [dict(r, is_query=False) for r in folder("gallery") if r["pid"] != JUNK_PID]
        return query + gallery
    if split == "combined":
        train = [r for r in folder("train") if r["pid"] not in (JUNK_PID, DISTRACTOR_PID)]
        test = load_market_style(
            data_dir,
            "test",
            dataset_name=dataset_name,
            what=what,
            pattern=pattern,
            max_cam=max_cam,
        )
        return combine_splits(train, test, dataset_name, distractor_pid=DISTRACTOR_PID)
    raise ValueError(f"Unknown split '{split}': expected 'train', 'test' or 'combined'")


def load_market1501(root: str, split: str, dataset_name: str = "") -> List[Dict[str, Any]]:
    """Market-1501 records from ``<root>/market1501/Market-1501-v15.09.15``.

    Args:
        root: datasets root (``$REID_DATASETS``).
        split: ``"train"``, ``"test"`` or ``"combined"`` (see :func:`load_market_style`).
        dataset_name: ``dataset`` field (default ``market1501_<split>``).
    """
    return load_market_style(
        os.path.join(root, MARKET1501_DIR),
        split,
        dataset_name=dataset_name or f"market1501_{split}",
        what="Market-1501",
        max_cam=6,
    )


def _split_loader(relative_root: str, split: str, name: str, what: str, max_cam=None):
    def load(root: str) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
        data_dir = os.path.join(root, relative_root)
        recs = load_market_style(data_dir, split, dataset_name=name, what=what, max_cam=max_cam)
        return recs, {"root": os.path.abspath(data_dir), "distractor_pid": DISTRACTOR_PID}

    return load


def register_market_style(
    name: str,
    relative_root: str,
    *,
    combined: bool = False,
    max_cam: Optional[int] = None,
    what: str = "",
) -> List[str]:
    """Register ``<name>_train`` and ``<name>_test`` for a Market-layout folder.

    Args:
        name: prefix of the registered names (e.g. ``"mydata"``).
        relative_root: folder holding ``bounding_box_train``, ``bounding_box_test`` and
            ``query``, relative to ``$REID_DATASETS`` (resolved when the dataset is loaded;
            an absolute path is used as is).
        combined: also register ``<name>_combined_train`` (train + query + gallery).
        max_cam: highest valid camera number, None = no check.
        what: description used in error messages (default: ``name``).

    Returns:
        The registered names.
    """
    what = what or name
    splits = ["train", "test"] + (["combined"] if combined else [])
    names = []
    for split in splits:
        reg = f"{name}_{split}" if split != "combined" else f"{name}_combined_train"
        register_reid_split(reg, _split_loader(relative_root, split, reg, what, max_cam))
        names.append(reg)
    return names
