"""Helpers shared by the person-search scene datasets (CUHK-SYSU and PRW).

* MATLAB readers (:func:`loadmat_checked`, :func:`mat_elements`, :func:`mat_field`,
  :func:`mat_first_field`, :func:`mat_string`, :func:`mat_vector`): the annotation files are
  MATLAB v5 files read with :func:`scipy.io.loadmat` (``squeeze_me=False``); the helpers
  accept any nesting, so squeezed / transposed variants of the same files load too.
* :func:`read_image_sizes`: image sizes from the image headers, cached in a json file.
* :func:`cached_arrays`: arrays parsed from a file, cached in an ``.npz`` next to it and
  re-parsed when the file's size or modification time changes.
* :func:`scene_statistics` / :func:`format_scene_statistics`: counts of a split.
* :func:`register_scene_splits`: lazy :data:`DatasetCatalog` entries of the
  ``<prefix>_{train,gallery,query}`` splits with their :data:`MetadataCatalog` fields;
  :func:`synthetic_scenes_root` is the ``root_fn`` of the ``synthetic_<fmt>_*`` datasets.

Scene record format: see
:func:`reid_plugins.data.datasets.cuhk_sysu.load_cuhk_sysu_train`. Background (unlabelled)
persons carry :data:`UNLABELED_PID`.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional

import numpy as np
import scipy.io
from PIL import Image
from tabulate import tabulate
from tqdm import tqdm

from ..catalog import DatasetCatalog, MetadataCatalog, dataset_root
from .errors import DatasetError, MissingDatasetFileError, dataset_error

__all__ = [
    "UNLABELED_PID",
    "loadmat_checked",
    "mat_elements",
    "mat_field",
    "mat_first_field",
    "mat_string",
    "mat_vector",
    "read_image_sizes",
    "cached_arrays",
    "scene_statistics",
    "format_scene_statistics",
    "register_scene_splits",
    "synthetic_scenes_root",
]

logger = logging.getLogger(__name__)

#: Reserved label of unlabelled (background) persons in person-search records. Never a real
#: identity: train ids are 0..P-1 and raw test ids are positive.
UNLABELED_PID = -1

SceneLoader = Callable[..., List[Dict[str, Any]]]


# --------------------------------------------------------------------------------------- #
# MATLAB helpers
# --------------------------------------------------------------------------------------- #
def loadmat_checked(path: str, keys: Iterable[str] = ()) -> Dict[str, Any]:
    """``scipy.io.loadmat(path)`` with clear errors.

    Raises:
        DatasetNotFoundError: (a ``FileNotFoundError``) ``path`` does not exist.
        ValueError: the file is not a readable MATLAB file, or lacks one of ``keys``.
    """
    if not os.path.isfile(path):
        raise MissingDatasetFileError(f"expected annotation file '{path}' does not exist")
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


def mat_first_field(s: Any, name: str, where: str) -> Any:
    """Field ``name`` if present, else the struct's first field (``Images.mat`` boxes).

    Raises:
        ValueError: as :func:`mat_field` when ``s`` is not a struct.
    """
    while isinstance(s, np.ndarray) and s.size == 1 and (s.dtype == object or _is_struct_array(s)):
        s = s.ravel()[0]
    if isinstance(s, np.void) and s.dtype.names and name not in s.dtype.names:
        return s[0]
    return mat_field(s, name, where)


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


# --------------------------------------------------------------------------------------- #
# Parsed-file cache
# --------------------------------------------------------------------------------------- #
_CACHE_FORMAT = 1


def _file_stamp(path: str) -> np.ndarray:
    st = os.stat(path)
    return np.array([_CACHE_FORMAT, st.st_size, st.st_mtime_ns], dtype=np.int64)


def cached_arrays(
    source: str, cache_file: str, parse: Callable[[], Dict[str, np.ndarray]]
) -> Dict[str, np.ndarray]:
    """``parse()`` (a dict of numpy arrays, no objects) cached in ``cache_file`` (``.npz``).

    The cache is used while ``source`` keeps the size and modification time it had when the
    cache was written; else ``parse()`` runs again and the cache is rewritten atomically
    (temporary file + rename). An unreadable cache is ignored and a read-only folder only
    disables caching (both silently, at debug level).

    Raises:
        FileNotFoundError: ``source`` is missing.
    """
    if not os.path.isfile(source):
        raise FileNotFoundError(f"File not found: {source}")
    stamp = _file_stamp(source)
    if os.path.isfile(cache_file):
        try:
            with np.load(cache_file, allow_pickle=False) as z:
                if np.array_equal(z["__stamp__"], stamp):
                    return {k: z[k] for k in z.files if k != "__stamp__"}
        except (OSError, ValueError, KeyError, EOFError) as e:
            logger.debug("Ignoring unreadable cache %s: %s", cache_file, e)
    arrays = parse()
    tmp = f"{cache_file}.tmp{os.getpid()}.npz"
    try:
        np.savez(tmp, __stamp__=stamp, **arrays)
        os.replace(tmp, cache_file)
    except OSError as e:
        logger.debug("Cannot write cache %s: %s", cache_file, e)
        try:
            os.remove(tmp)
        except OSError:
            pass
    return arrays


# --------------------------------------------------------------------------------------- #
# Image sizes and statistics
# --------------------------------------------------------------------------------------- #
def read_image_sizes(
    paths: Dict[str, str], cache_file: str, listed_in: Optional[Dict[str, str]] = None
) -> Dict[str, tuple]:
    """``{name: (height, width)}`` from the image headers, cached in ``cache_file`` (json).

    A cache entry is reused while the image's byte size is unchanged (so every listed image
    is checked once, one ``stat`` each). The cache is written atomically; a read-only dataset
    folder only disables caching.

    Args:
        paths: ``{name: image path}``.
        cache_file: the json cache.
        listed_in: ``{name: "<list file>:<entry>"}``, where each image is listed (named in
            the error).

    Raises:
        MissingDatasetFileError: an image is missing (message names it, where it is listed
            and how many listed images are missing).
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
    nbytes: Dict[str, int] = {}
    for name, path in todo:  # one stat per listed image
        try:
            nbytes[name] = os.stat(path).st_size
        except OSError:
            pass
    missing = [n for n, _ in todo if n not in nbytes]
    if missing:
        where = (listed_in or {}).get(missing[0], "")
        raise MissingDatasetFileError(
            f"{where + ': ' if where else ''}listed image '{paths[missing[0]]}' does not exist "
            f"({len(missing)} of {len(todo)} listed images are missing)"
        )
    for name, path in tqdm(todo, desc="image sizes", disable=len(todo) < 2000, leave=False):
        hit = cache.get(name)
        if hit is None or len(hit) != 3 or hit[2] != nbytes[name]:
            with Image.open(path) as im:
                w, h = im.size
            cache[name] = hit = [int(h), int(w), int(nbytes[name])]
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
# Registration
# --------------------------------------------------------------------------------------- #
def register_scene_splits(
    prefix: str,
    loaders: Mapping[str, SceneLoader],
    *,
    protocol: str,
    folder: str,
    root_fn: Optional[Callable[[], str]] = None,
    query_metadata: Optional[Callable[[str], Dict[str, Any]]] = None,
) -> List[str]:
    """Register ``<prefix>_<split>`` for every ``split -> loader`` of ``loaders`` (lazy).

    Names already in :data:`DatasetCatalog` are left as they are. At registration the
    metadata gets ``evaluator_type`` and ``search_protocol`` (both ``protocol``) and
    ``unlabeled_pid``. When a dataset is loaded, ``loader(root, dataset_name=name)`` runs
    with ``root = root_fn()`` and the metadata gets ``root`` and the
    :func:`scene_statistics` counts; the ``"query"`` split also gets the entries of
    ``query_metadata(root)`` and ``gallery_dataset`` (``<prefix>_gallery``).

    Args:
        prefix: name prefix, e.g. ``"cuhk_sysu"``.
        loaders: ``{split: loader}`` in registration order; each loader is called as
            ``loader(root, dataset_name=name)`` and returns scene records.
        protocol: evaluator type and search protocol, e.g. ``"cuhk_sysu"`` or ``"prw"``.
        folder: default dataset folder, ``$REID_DATASETS/<folder>`` (used when ``root_fn``
            is None).
        root_fn: returns the dataset folder; resolved at load time.
        query_metadata: extra metadata of the query split, computed from the root.

    Returns:
        the registered names, in ``loaders`` order.
    """
    if root_fn is None:
        root_fn = lambda: os.path.join(dataset_root(), folder)  # noqa: E731
    names = []
    for split, loader in loaders.items():
        name = f"{prefix}_{split}"
        names.append(name)
        if name in DatasetCatalog:
            continue

        def _fn(name=name, loader=loader, split=split):
            try:
                root = root_fn()
                records = loader(root, dataset_name=name)
            except (DatasetError, FileNotFoundError, ValueError, KeyError) as e:
                from .sources import dataset_source

                source = dataset_source(name)
                raise dataset_error(e, name, source.title if source else "") from e
            stats = scene_statistics(records)
            extra: Dict[str, Any] = {}
            if split == "query":
                extra = dict(query_metadata(root)) if query_metadata is not None else {}
                extra["gallery_dataset"] = f"{prefix}_gallery"
            MetadataCatalog.get(name).set(root=root, **stats, **extra)
            table = format_scene_statistics({name: stats})
            # Logged once per set and root; later loads of the same run only in the log file.
            seen = (name, root, table) in _LOGGED_TABLES
            _LOGGED_TABLES.add((name, root, table))
            logger.log(
                logging.DEBUG if seen else logging.INFO, "Loaded %s from %s:\n%s", name, root, table
            )
            return records

        DatasetCatalog.register(name, _fn)
        MetadataCatalog.get(name).set(
            evaluator_type=protocol, search_protocol=protocol, unlabeled_pid=UNLABELED_PID
        )
    return names


_LOGGED_TABLES: set = set()


def synthetic_scenes_root(fmt: str) -> Callable[[], str]:
    """``root_fn`` of the ``synthetic_<fmt>_*`` datasets: the generated data under
    ``$REID_DATASETS`` (:func:`reid_plugins.data.synthetic_scenes.ensure_synthetic_scenes`
    generates it with the default arguments on first use)."""

    def root_fn() -> str:
        from ..synthetic_scenes import ensure_synthetic_scenes  # rendering deps: lazy

        return ensure_synthetic_scenes(dataset_root(), fmt=fmt)

    return root_fn
