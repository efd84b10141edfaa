"""CUHK03: old protocol (``cuhk-03.mat`` splits) and the new protocol CUHK03-NP.

Layout (relative to ``$REID_DATASETS``)::

    cuhk03/
        cuhk03_release/cuhk-03.mat                   # MATLAB v7.3 (HDF5, needs h5py)
        cuhk03_new_protocol_config_detected.mat      # NP split, scipy-readable
        cuhk03_new_protocol_config_labeled.mat
        images_extracted/{detected,labeled}/1_001_1_01.png ...   # cache, written once
        cuhk03-np/{detected,labeled}/{bounding_box_train,bounding_box_test,query}/  # optional

``cuhk-03.mat`` holds ``detected`` and ``labeled`` (5 camera pairs, each an N x 10 cell of
images: 5 per camera) and ``testsets`` (20 splits of 100 ``(camera pair, person)`` pairs,
1-based). Images are extracted once to ``images_extracted/<subset>/`` as
``{pair}_{person:03d}_{view}_{image:02d}.png`` (the names the NP config ``filelist`` uses);
the old-protocol test splits are cached next to them as ``old_protocol_testsets.json``.

Old protocol (M3L's CUHK03 source): train = every identity except the test ids of split 0,
labeled + detected pooled (1,367 ids / 26,263 images); test = the split's 100 ids, each
image appears as a query and as a gallery record (the Market protocol then removes the
same-camera matches). Raw test pid = ``pair * 1000 + person``. camid = view - 1 (2 cams).

New protocol: ``cuhk03-np/<subset>/`` in Market naming is used when present (also looked
for directly under the datasets root), otherwise the ``.mat`` config with the extracted
images. The subset (detected / labeled) is part of the registered name.
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from .common import check_listed_files, combine_splits, relabel_train, require_path
from .market1501 import load_market_style

__all__ = [
    "CUHK03_DIR",
    "extract_cuhk03_images",
    "load_cuhk03",
    "load_cuhk03_np",
    "find_cuhk03_np_layout",
]

logger = logging.getLogger(__name__)

CUHK03_DIR = "cuhk03"
MAT_RELPATH = os.path.join("cuhk03_release", "cuhk-03.mat")
EXTRACTED = "images_extracted"
SUBSETS = ("detected", "labeled")
TESTSETS_JSON = "old_protocol_testsets.json"
_NAME_RE = re.compile(r"^(\d)_(\d{3})_(\d)_(\d{2})\.png$")


def _image_name(pair: int, person: int, view: int, index: int) -> str:
    """1-based pair/person/view/index -> ``1_001_1_01.png``."""
    return f"{pair}_{person:03d}_{view}_{index:02d}.png"


def _iter_mat(mat_path: str, subsets) -> Tuple[Iterator, List[np.ndarray]]:
    """Open ``cuhk-03.mat``; returns (iterator over (subset, pair, person, img_idx, HxWx3 RGB),
    test splits as (K, 2) int arrays). HDF5 (v7.3) needs h5py; v5 files use scipy."""
    import h5py

    try:
        f = h5py.File(mat_path, "r")
    except OSError as e:
        raise ValueError(
            f"Cannot read MATLAB v7.3 file '{mat_path}' (truncated or corrupt?): {e}"
        ) from e

    def deref(ref):
        return f[ref][()]

    testsets = [np.asarray(deref(r)).T.astype(np.int64) for r in np.ravel(f["testsets"][()])]

    def gen():
        try:
            for subset in subsets:
                for pair, pair_ref in enumerate(np.ravel(f[subset][()]), 1):
                    cells = deref(pair_ref).T  # MATLAB N x 10 cell, stored transposed
                    for person, row in enumerate(cells, 1):
                        for idx, ref in enumerate(row, 1):
                            img = np.asarray(deref(ref))
                            if img.ndim != 3 or img.size == 0:
                                continue  # empty cell
                            yield subset, pair, person, idx, img.transpose(2, 1, 0)
        finally:
            f.close()

    return gen(), testsets


def _iter_mat_v5(mat_path: str, subsets) -> Tuple[Iterator, List[np.ndarray]]:
    m = _loadmat(mat_path, ("testsets",))
    testsets = [np.asarray(t).astype(np.int64).reshape(-1, 2) for t in np.ravel(m["testsets"])]

    def gen():
        for subset in subsets:
            for pair, cells in enumerate(np.ravel(m[subset]), 1):
                for person, row in enumerate(np.asarray(cells), 1):
                    for idx, img in enumerate(row, 1):
                        img = np.asarray(img)
                        if img.ndim == 3 and img.size > 0:
                            yield subset, pair, person, idx, img

    return gen(), testsets


def extract_cuhk03_images(cuhk03_dir: str, subsets=SUBSETS) -> str:
    """Extract the images of ``cuhk-03.mat`` once to ``<cuhk03_dir>/images_extracted/``.

    Writes ``<subset>/{pair}_{person:03d}_{view}_{image:02d}.png`` (lossless, RGB preserved)
    and ``old_protocol_testsets.json``; a ``.<subset>_done`` marker is written last, so an
    interrupted extraction is redone. Subsets already extracted are skipped.

    Args:
        cuhk03_dir: the ``cuhk03`` folder.
        subsets: which of ``detected`` / ``labeled`` to extract.

    Returns:
        The ``images_extracted`` folder.

    Raises:
        FileNotFoundError: ``cuhk03_release/cuhk-03.mat`` is missing.
        ImportError: the file is MATLAB v7.3 and h5py is not installed.
    """
    import cv2

    out = os.path.join(cuhk03_dir, EXTRACTED)
    todo = [s for s in subsets if not os.path.isfile(os.path.join(out, f".{s}_done"))]
    if not todo and os.path.isfile(os.path.join(out, TESTSETS_JSON)):
        return out
    mat_path = require_path(
        os.path.join(cuhk03_dir, MAT_RELPATH), "CUHK03 original release", is_dir=False
    )
    if _is_hdf5(mat_path):
        try:
            import h5py  # noqa: F401
        except ImportError:
            raise ImportError(
                f"'{mat_path}' is a MATLAB v7.3 (HDF5) file: install h5py "
                f"(pip install h5py) to extract the CUHK03 images"
            ) from None
        images, testsets = _iter_mat(mat_path, todo)
    else:
        images, testsets = _iter_mat_v5(mat_path, todo)
    logger.info(f"Extracting CUHK03 {'+'.join(todo)} images from {mat_path} to {out} (once)")
    from tqdm import tqdm

    for s in todo:
        os.makedirs(os.path.join(out, s), exist_ok=True)
    for subset, pair, person, idx, img in tqdm(images, desc="CUHK03 extraction", unit="img"):
        view = 1 if idx <= 5 else 2
        path = os.path.join(out, subset, _image_name(pair, person, view, idx))
        cv2.imwrite(path, np.ascontiguousarray(img[:, :, ::-1]).astype(np.uint8))
    with open(os.path.join(out, TESTSETS_JSON), "w") as fh:
        json.dump([t.tolist() for t in testsets], fh)
    for s in todo:
        open(os.path.join(out, f".{s}_done"), "w").close()
    return out


def _loadmat(path: str, keys=(), **kwargs) -> Dict[str, Any]:
    """``scipy.io.loadmat`` whose errors name the file (truncated / corrupt / missing keys)."""
    from scipy.io import loadmat

    try:
        m = loadmat(path, **kwargs)
    except Exception as e:  # scipy raises several types for corrupt files
        raise ValueError(f"Cannot read MATLAB file '{path}' (truncated or corrupt?): {e}") from e
    missing = [k for k in keys if k not in m]
    if missing:
        raise ValueError(f"MATLAB file '{path}' lacks {missing}")
    return m


def _is_hdf5(path: str) -> bool:
    """HDF5 signature at offset 0 or a power-of-two user-block offset (MATLAB v7.3: 512)."""
    with open(path, "rb") as fh:
        for offset in (0, 512, 1024, 2048):
            fh.seek(offset)
            if fh.read(8) == b"\x89HDF\r\n\x1a\n":
                return True
    return False


def _parse_extracted(path: str) -> Tuple[int, int, int, int]:
    m = _NAME_RE.match(os.path.basename(path))
    if m is None:
        raise ValueError(f"Unexpected file '{path}' in the CUHK03 extraction folder")
    return tuple(int(g) for g in m.groups())  # type: ignore[return-value]


def load_cuhk03(
    root: str,
    split: str,
    *,
    subsets=("labeled", "detected"),
    split_index: int = 0,
    dataset_name: str = "",
) -> List[Dict[str, Any]]:
    """CUHK03 old protocol (images extracted from ``cuhk-03.mat`` on first use).

    Args:
        root: datasets root (``$REID_DATASETS``).
        split: ``"train"`` (all ids except the test ids of ``split_index``, relabelled) or
            ``"test"`` (the test ids; every image as query and as gallery, raw pid
            ``pair * 1000 + person``).
        subsets: image subsets pooled (default labeled + detected, as M3L).
        split_index: which of the 20 ``testsets`` (0-based).
        dataset_name: ``dataset`` field (default ``cuhk03_<split>``).
    """
    if split not in ("train", "test"):
        raise ValueError(f"Unknown split '{split}': expected 'train' or 'test'")
    cuhk03_dir = os.path.join(root, CUHK03_DIR)
    out = extract_cuhk03_images(cuhk03_dir, tuple(subsets))
    with open(os.path.join(out, TESTSETS_JSON)) as fh:
        testsets = json.load(fh)
    if not 0 <= split_index < len(testsets):
        raise ValueError(f"split_index {split_index} outside 0..{len(testsets) - 1}")
    test_ids = {(int(a), int(b)) for a, b in testsets[split_index]}
    name = dataset_name or f"cuhk03_{split}"
    records = []
    for subset in subsets:
        folder = os.path.join(out, subset)
        for fn in sorted(os.listdir(folder)):
            pair, person, view, _ = _parse_extracted(fn)
            if ((pair, person) in test_ids) != (split == "test"):
                continue
            records.append(
                {
                    "file_name": os.path.abspath(os.path.join(folder, fn)),
                    "pid": pair * 1000 + person,
                    "camid": view - 1,
                    "dataset": name,
                }
            )
    if split == "train":
        return relabel_train(records)
    return [dict(r, is_query=True) for r in records] + [dict(r, is_query=False) for r in records]


def find_cuhk03_np_layout(root: str, subset: str) -> Tuple[str, str]:
    """Which CUHK03-NP layout exists: ``("market", folder)`` or ``("mat", config_file)``.

    Looks for ``<root>/cuhk03/cuhk03-np/<subset>/``, then ``<root>/cuhk03-np/<subset>/``
    (Market naming), then ``<root>/cuhk03/cuhk03_new_protocol_config_<subset>.mat``.

    Raises:
        ValueError: unknown subset.
        FileNotFoundError: none exists (the message lists every expected path).
    """
    if subset not in SUBSETS:
        raise ValueError(f"Unknown CUHK03-NP subset '{subset}': expected one of {SUBSETS}")
    market_dirs = [
        os.path.join(root, CUHK03_DIR, "cuhk03-np", subset),
        os.path.join(root, "cuhk03-np", subset),
    ]
    for d in market_dirs:
        if os.path.isdir(os.path.join(d, "bounding_box_train")):
            return "market", d
    config = os.path.join(root, CUHK03_DIR, f"cuhk03_new_protocol_config_{subset}.mat")
    if os.path.isfile(config):
        return "mat", config
    expected = ", ".join(f"'{os.path.abspath(p)}'" for p in market_dirs + [config])
    raise FileNotFoundError(
        f"CUHK03-NP ({subset}): none of the expected layouts exists: {expected}. Dataset "
        f"roots are resolved under $REID_DATASETS (now '{root}')."
    )


def _mat_vector(m: Dict[str, Any], key: str, path: str) -> np.ndarray:
    if key not in m:
        raise KeyError(
            f"'{path}' has no field '{key}' (expected train_idx, query_idx, "
            f"gallery_idx, labels, filelist, camId)"
        )
    return np.atleast_1d(m[key]).ravel()


def _load_np_mat(
    root: str, config: str, subset: str, split: str, name: str
) -> List[Dict[str, Any]]:
    m = _loadmat(config, (), squeeze_me=True)
    labels = _mat_vector(m, "labels", config).astype(np.int64)
    cams = _mat_vector(m, "camId", config).astype(np.int64)
    files = [
        str(np.ravel(f)[0]) if isinstance(f, np.ndarray) else str(f)
        for f in _mat_vector(m, "filelist", config)
    ]
    cuhk03_dir = os.path.join(root, CUHK03_DIR)
    out = os.path.join(cuhk03_dir, EXTRACTED)
    if not os.path.isfile(os.path.join(out, f".{subset}_done")):
        extract_cuhk03_images(cuhk03_dir, (subset,))
    folder = os.path.join(out, subset)

    def recs(key: str, is_query: Optional[bool]) -> List[Dict[str, Any]]:
        idx = _mat_vector(m, key, config).astype(np.int64) - 1  # 1-based in MATLAB
        if idx.size and (idx.min() < 0 or idx.max() >= len(files)):
            raise ValueError(f"'{config}': {key} has indices outside 1..{len(files)}")
        out_recs = []
        for i in idx:
            r = {
                "file_name": os.path.abspath(os.path.join(folder, files[i])),
                "pid": int(labels[i]),
                "camid": int(cams[i]) - 1,
                "dataset": name,
            }
            if is_query is not None:
                r["is_query"] = is_query
            out_recs.append(r)
        return out_recs

    if split == "train":
        records = relabel_train(recs("train_idx", None))
    else:
        records = recs("query_idx", True) + recs("gallery_idx", False)
    # a partial extraction or a foreign filelist fails here, naming the filelist entry
    index = {os.path.basename(f): i for i, f in enumerate(files, 1)}
    entries = [(index.get(os.path.basename(r["file_name"]), 0), r["file_name"]) for r in records]
    check_listed_files(f"{config} (filelist entry)", entries)
    return records


def load_cuhk03_np(
    root: str, split: str, subset: str = "detected", dataset_name: str = ""
) -> Tuple[List[Dict[str, Any]], str]:
    """CUHK03-NP records of ``subset``; returns ``(records, layout)``.

    Args:
        root: datasets root (``$REID_DATASETS``).
        split: ``"train"``, ``"test"`` or ``"combined"`` (train + query + gallery; Market
            layout or .mat config alike).
        subset: ``"detected"`` or ``"labeled"``.
        dataset_name: ``dataset`` field (default ``cuhk03_np_<subset>_<split>``).

    Returns:
        records, and a description of the layout used (logged by the registered loader).
    """
    if split not in ("train", "test", "combined"):
        raise ValueError(f"Unknown split '{split}': expected 'train', 'test' or 'combined'")
    name = dataset_name or f"cuhk03_np_{subset}_{split}"
    kind, path = find_cuhk03_np_layout(root, subset)
    if kind == "market":
        layout = f"Market-style folder {os.path.abspath(path)}"
        recs = load_market_style(
            path, split, dataset_name=name, what=f"CUHK03-NP {subset}", max_cam=2
        )
    else:
        layout = f".mat config {os.path.abspath(path)} + {EXTRACTED}/{subset}"
        if split == "combined":
            train = _load_np_mat(root, path, subset, "train", name)
            test = _load_np_mat(root, path, subset, "test", name)
            recs = combine_splits(train, test, name, distractor_pid=None)
        else:
            recs = _load_np_mat(root, path, subset, split, name)
    logger.info(f"CUHK03-NP {subset} {split}: using the {layout}")
    return recs, layout
