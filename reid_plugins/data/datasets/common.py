"""Helpers shared by the ReID dataset loaders.

Everything here is pure (no catalog access) except :func:`register_reid_split`, which wraps a
loader into a lazy :data:`DatasetCatalog` entry that also fills :data:`MetadataCatalog` and
logs the statistics table when the dataset is loaded.

ReID record format (see the project's interface notes)::

    {"file_name": str, "pid": int, "camid": int (0-based), "dataset": str}
    # test sets additionally: "is_query": bool
    # multi-source training additionally: "domain", "domain_pid" (see combine_sources)
"""

from __future__ import annotations

import logging
import os
import re
import stat
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from ..catalog import DatasetCatalog, MetadataCatalog, dataset_root
from .errors import DatasetError, MissingDatasetFileError, dataset_error
from .sources import dataset_source

__all__ = [
    "IMAGE_EXTENSIONS",
    "MARKET_PATTERN",
    "JUNK_PID",
    "DISTRACTOR_PID",
    "require_path",
    "check_listed_files",
    "list_images",
    "parse_market_name",
    "relabel_train",
    "combine_splits",
    "combine_sources",
    "domain_pid_counts",
    "reid_statistics",
    "format_statistics_table",
    "register_reid_split",
    "set_reid_metadata",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
# Market-1501 / DukeMTMC-reID / CUHK03-NP file names: "0002_c1s1_000451_03.jpg", "-1_c3s1_...".
MARKET_PATTERN = re.compile(r"([-\d]+)_c(\d)")
# Market convention: -1 = junk (dropped everywhere), 0 = background distractor (gallery only).
JUNK_PID = -1
DISTRACTOR_PID = 0

Record = Dict[str, Any]


def require_path(path: str, what: str, *, is_dir: bool = True, hint: str = "") -> str:
    """Return ``path`` if it exists, else raise :class:`.errors.MissingDatasetFileError` (a
    ``FileNotFoundError``) naming it.

    Args:
        path: folder or file that must exist.
        what: human description used in the message (e.g. "Market-1501 query folder").
        is_dir: require a directory (True) or a regular file (False).
        hint: extra sentence appended to the message (e.g. how to create the file).
    """
    ok = os.path.isdir(path) if is_dir else os.path.isfile(path)
    if not ok:
        kind = "folder" if is_dir else "file"
        msg = (
            f"{what}: expected {kind} '{os.path.abspath(path)}' does not exist (datasets are "
            f"read under $REID_DATASETS, now '{dataset_root()}')."
        )
        if hint:
            msg += " " + hint
        raise MissingDatasetFileError(msg)
    return path


def check_listed_files(list_file: str, entries: Sequence[Tuple[int, str]]) -> None:
    """Check that every image a list file names exists: one ``os.stat`` per entry.

    Catches a list that names missing images when the dataset is loaded rather than when a
    training iteration first reads one (at MSMT17 size, 126k files, this costs well under a
    second with a warm file-system cache; see datasets/README.md).

    Args:
        list_file: the file that lists the images (named in the error).
        entries: ``(line number or entry index, image path)`` pairs.

    Raises:
        MissingDatasetFileError: an image is missing; the message names the list file, the
            line of the first missing image and how many are missing in all.
    """
    missing = []
    for lineno, path in entries:
        try:
            st = os.stat(path)
        except OSError:
            missing.append((lineno, path))
            continue
        if not stat.S_ISREG(st.st_mode):
            missing.append((lineno, path))
    if missing:
        lineno, path = missing[0]
        more = f" ({len(missing)} of {len(entries)} listed images are missing)"
        raise MissingDatasetFileError(
            f"{list_file}:{lineno}: listed image '{path}' does not exist{more}"
        )


def list_images(folder: str) -> List[str]:
    """Sorted absolute paths of the image files directly inside ``folder``."""
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
    return [os.path.abspath(os.path.join(folder, n)) for n in names]


def parse_market_name(
    path: str, pattern: re.Pattern = MARKET_PATTERN, max_cam: Optional[int] = None
) -> Tuple[int, int]:
    """Parse ``(pid, camid)`` (camid 0-based) from a Market-style file name.

    Raises:
        ValueError: the name does not match ``pattern`` or the camera is out of range.
    """
    name = os.path.basename(path)
    m = pattern.search(name)
    if m is None:
        raise ValueError(
            f"Cannot parse person id / camera from '{path}': expected a name matching "
            f"'{pattern.pattern}' such as '0002_c1s1_000451_03.jpg'"
        )
    pid, cam = int(m.group(1)), int(m.group(2))
    if cam < 1 or (max_cam is not None and cam > max_cam):
        raise ValueError(f"Camera c{cam} of '{path}' is outside 1..{max_cam or 9}")
    return pid, cam - 1


def relabel_train(records: List[Record], key: Callable[[Record], Any] = None) -> List[Record]:
    """Relabel training pids to ``0..N-1`` (sorted by the raw key); returns new dicts.

    Args:
        records: records holding a raw ``pid``.
        key: function giving the raw identity of a record (default: ``r["pid"]``); use a
            tuple key when raw pids of several splits share a namespace (e.g. MSMT17 test).
    """
    key = key or (lambda r: r["pid"])
    mapping = {k: i for i, k in enumerate(sorted({key(r) for r in records}))}
    return [dict(r, pid=mapping[key(r)]) for r in records]


def combine_splits(
    train: List[Record],
    test: List[Record],
    dataset_name: str,
    distractor_pid: Optional[int] = DISTRACTOR_PID,
) -> List[Record]:
    """Train + test (query and gallery) of one dataset as a single relabelled training set.

    Used for "Combined MSMT17" and GMN's Protocol-3. Raw test pids may collide with raw train
    pids (MSMT17 numbers both from 0), so identities are keyed by (split, raw pid); junk
    (-1) and test distractors are dropped; an image present in both query and gallery is
    kept once.

    Args:
        train: records of the train split with *raw* pids.
        test: records of the test split (raw pids, ``is_query`` flags).
        dataset_name: value of the ``dataset`` field of the output records.
        distractor_pid: test pid that marks distractors (0 for Market-style sets; None when
            every non-negative pid is a real identity, as in MSMT17).
    """
    out: List[Record] = []
    seen = set()
    for split, recs in ((0, train), (1, test)):  # train ids first, then test ids
        for r in recs:
            if r["pid"] < 0 or (split == 1 and r["pid"] == distractor_pid):
                continue
            if r["file_name"] in seen:
                continue
            seen.add(r["file_name"])
            rec = {k: v for k, v in r.items() if k != "is_query"}
            rec.update(dataset=dataset_name, raw_key=(split, r["pid"]))
            out.append(rec)
    out = relabel_train(out, key=lambda r: r["raw_key"])
    for r in out:
        del r["raw_key"]
    return out


def combine_sources(sources: Sequence[Tuple[str, List[Record]]]) -> List[Record]:
    """Merge several training sets for multi-source training.

    Each output record is a copy of the input record with
    ``"domain"`` = index of its source in ``sources``, ``"domain_pid"`` = the pid relabelled
    to ``0..n_i-1`` within its source (sorted by the source's pid), ``"pid"`` = a global pid
    ``domain_pid + sum(n_j for j < i)`` (unique across sources), and ``"dataset"`` = the
    source's record value if present, else the source name.

    Args:
        sources: ``[(name, records), ...]`` in domain order (e.g. ``DATASETS.TRAIN``).

    Raises:
        ValueError: ``sources`` is empty, a source has no records, or a record has a
            negative pid (junk/unlabelled records must not reach training).
    """
    if len(sources) == 0:
        raise ValueError("combine_sources needs at least one (name, records) source")
    out: List[Record] = []
    offset = 0
    for domain, (name, records) in enumerate(sources):
        if len(records) == 0:
            raise ValueError(f"Training source '{name}' (domain {domain}) has no records")
        raw = sorted({r["pid"] for r in records})
        if raw[0] < 0:
            raise ValueError(f"Training source '{name}' contains negative pid {raw[0]}")
        mapping = {p: i for i, p in enumerate(raw)}
        for r in records:
            dpid = mapping[r["pid"]]
            out.append(
                dict(
                    r,
                    domain=domain,
                    domain_pid=dpid,
                    pid=offset + dpid,
                    dataset=r.get("dataset", name),
                )
            )
        offset += len(raw)
    return out


def domain_pid_counts(records: Iterable[Record]) -> List[int]:
    """Number of distinct identities per domain of :func:`combine_sources` output.

    Returns a list indexed by domain (length = max domain + 1; a domain with no record
    counts 0).

    Raises:
        KeyError: a record has no ``"domain"`` field (naming the file).
    """
    per: Dict[int, set] = {}
    for r in records:
        if "domain" not in r:
            raise KeyError(
                f"Record '{r.get('file_name', '?')}' has no 'domain'; pass the records "
                f"through combine_sources first"
            )
        per.setdefault(int(r["domain"]), set()).add(r.get("domain_pid", r["pid"]))
    if not per:
        return []
    return [len(per.get(d, ())) for d in range(max(per) + 1)]


def _count(records: List[Record]) -> Dict[str, int]:
    return {
        "ids": len({r["pid"] for r in records if r["pid"] >= 0}),
        "images": len(records),
        "cameras": len({r["camid"] for r in records}),
    }


def reid_statistics(
    records: List[Record], distractor_pid: Optional[int] = DISTRACTOR_PID
) -> Dict[str, Dict[str, int]]:
    """Per-subset counts: ``{subset: {"ids", "images", "cameras"}}``.

    Subsets are ``train`` for records without ``is_query``; otherwise ``query`` and
    ``gallery`` (``ids`` never count negative pids; gallery ``ids`` also exclude
    ``distractor_pid``, whose images are counted as ``distractors``; None = no distractor
    pid).
    """
    if not any("is_query" in r for r in records):
        return {"train": _count(records)}
    query = [r for r in records if r["is_query"]]
    gallery = [r for r in records if not r["is_query"]]
    g = _count(gallery)
    distractors = [r for r in gallery if r["pid"] == distractor_pid]
    g["ids"] = len({r["pid"] for r in gallery if r["pid"] >= 0 and r["pid"] != distractor_pid})
    g["distractors"] = len(distractors)
    return {"query": _count(query), "gallery": g}


def format_statistics_table(name: str, stats: Dict[str, Dict[str, int]]) -> str:
    """Plain-text table ``| subset | ids | images | cameras |`` for logs and tools."""
    header = ("subset", "ids", "images", "cameras")
    rows = [
        (k, str(v["ids"]), str(v["images"]), str(v["cameras"]))
        + ((f"(incl. {v['distractors']} distractors)",) if v.get("distractors") else ())
        for k, v in stats.items()
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells):
        body = " | ".join(c.ljust(w) for c, w in zip(cells, widths))
        extra = " " + " ".join(cells[len(widths) :]) if len(cells) > len(widths) else ""
        return f"| {body} |{extra}"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([f"Statistics of '{name}':", line(header), sep] + [line(r) for r in rows])


def set_reid_metadata(
    name: str,
    records: List[Record],
    distractor_pid: Optional[int] = DISTRACTOR_PID,
    **extra: Any,
) -> Dict[str, Any]:
    """Fill ``MetadataCatalog.get(name)`` from ``records``; returns the fields set.

    Train sets: ``num_pids, num_images, num_cams``. Test sets additionally ``num_query,
    num_gallery, num_query_pids, num_gallery_pids, num_distractors`` (``num_pids`` = distinct
    non-distractor ids over query and gallery). Always ``evaluator_type="reid"``,
    ``distractor_pid`` and ``statistics`` (the table as a dict); ``extra`` fields (e.g.
    ``root``, ``layout``) are stored too.
    """
    stats = reid_statistics(records, distractor_pid)
    fields: Dict[str, Any] = dict(
        num_images=len(records),
        num_cams=len({r["camid"] for r in records}),
        evaluator_type="reid",
        distractor_pid=distractor_pid,
        statistics=stats,
    )
    if "train" in stats:
        fields["num_pids"] = stats["train"]["ids"]
    else:
        fields.update(
            num_pids=len({r["pid"] for r in records if r["pid"] != distractor_pid}),
            num_query=stats["query"]["images"],
            num_gallery=stats["gallery"]["images"],
            num_query_pids=stats["query"]["ids"],
            num_gallery_pids=stats["gallery"]["ids"],
            num_distractors=stats["gallery"]["distractors"],
        )
    fields.update(extra)
    MetadataCatalog.get(name).set(**fields)
    return fields


_LOGGED_TABLES: set = set()


def register_reid_split(
    name: str, loader: Callable[[str], Tuple[List[Record], Dict[str, Any]]]
) -> str:
    """Register ``name`` lazily: ``loader(dataset_root())`` runs at ``DatasetCatalog.get``.

    Args:
        name: registered dataset name.
        loader: ``fn(root) -> (records, extra_metadata)``; ``root`` is the datasets root
            resolved when the dataset is loaded (so ``$REID_DATASETS`` may change after
            import). ``extra_metadata`` may hold ``distractor_pid`` (default 0) plus any
            field to store in the metadata.

    Returns:
        ``name``.

    Loading raises :class:`.errors.MissingDatasetFileError` (missing file) or
    :class:`.errors.DatasetFormatError` (malformed file): one line naming the dataset, the file
    and the ``datasets/README.md`` section, ending with the ``tools/check_dataset.py`` command.
    """

    def _load() -> List[Record]:
        try:
            records, extra = loader(dataset_root())
        except (DatasetError, FileNotFoundError, ValueError, KeyError) as e:
            source = dataset_source(name)
            raise dataset_error(e, name, source.title if source else "") from e
        set_reid_metadata(name, records, **extra)
        table = format_statistics_table(name, MetadataCatalog.get(name).statistics)
        # A run loads a set several times (class count, train loader, memory / precise-BN
        # loaders): the table is logged once per set and root, later loads only in the log file.
        key = (name, dataset_root(), table)
        logger.log(logging.DEBUG if key in _LOGGED_TABLES else logging.INFO, table)
        _LOGGED_TABLES.add(key)
        return records

    DatasetCatalog.register(name, _load)
    return name
