"""``reid-check-dataset`` / ``tools/check_dataset.py``: check that a registered dataset is in
place: print its statistics or what is missing.

For each NAME (a registered ``DatasetCatalog`` name, e.g. ``market1501_train``,
``msmt17_v2_test``, ``prw_query``) under ``$REID_DATASETS`` (default ``datasets/``):

* every file / folder the dataset needs is looked for; the missing ones are printed with the
  path expected and where to get the data (``datasets/README.md`` has the layouts);
* if all are there, the dataset is loaded exactly as training / evaluation load it (every
  listed image is checked) and its statistics table is printed: ids / images / cameras per
  subset for ReID sets, scenes / boxes / labelled boxes / ids / cameras (and queries) for
  person-search sets. A load error is printed as one line naming the file.

Exit status 0 when every named dataset loads, 1 otherwise.

Examples::

    python tools/check_dataset.py market1501_train market1501_test
    REID_DATASETS=/data/reid python tools/check_dataset.py prw_train prw_gallery prw_query
    python tools/check_dataset.py --all        # one line per registered name (no loading of
                                               # synthetic sets that were not generated yet)
    python tools/check_dataset.py --plugin my_project/my_reid my_shop_train   # your dataset
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Dict, List, Optional

from reid_plugins.data import datasets  # noqa: F401  (registers the names)
from reid_plugins.data.catalog import DatasetCatalog, MetadataCatalog, dataset_root
from reid_plugins.data.datasets.common import format_statistics_table
from reid_plugins.data.datasets.errors import DatasetError
from reid_plugins.data.datasets.sources import dataset_source, missing_requirements
from reid_plugins.engine import add_plugin_argument, load_plugins

SCENE_COLUMNS = (
    ("num_images", "scenes"),
    ("num_boxes", "boxes"),
    ("num_labeled_boxes", "labelled boxes"),
    ("num_pids", "ids"),
    ("num_cams", "cameras"),
    ("num_queries", "queries"),
)


def scene_table(name: str, meta: Dict) -> str:
    """``| split | scenes | boxes | labelled boxes | ids | cameras | queries |``."""
    header = ["split"] + [t for _, t in SCENE_COLUMNS]
    row = [name] + [str(meta.get(k, "-")) for k, _ in SCENE_COLUMNS]
    widths = [max(len(h), len(c)) for h, c in zip(header, row)]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([f"Statistics of '{name}':", line(header), sep, line(row)])


def describe_missing(name: str, root: str) -> Optional[str]:
    """Lines naming every missing file / folder of ``name`` and where to get it; None if
    nothing is missing (or nothing is known about ``name``)."""
    missing = missing_requirements(name, root)
    if not missing:
        return None
    source = dataset_source(name)
    lines = [f"'{name}': {len(missing)} expected file(s) / folder(s) missing under '{root}':"]
    lines += [f"  missing: {path}   ({what})" for path, what in missing]
    lines.append(f"  get: {source.get}")
    lines.append(f"  layout: datasets/README.md, section '{source.title}'")
    return "\n".join(lines)


def check(name: str, root: str) -> bool:
    """Print the statistics table of ``name`` or what is missing; True when it loads."""
    text = describe_missing(name, root)
    if text is not None:
        print(text)
        return False
    try:
        DatasetCatalog.get(name)
    except DatasetError as e:
        print(f"'{name}': {e}")
        return False
    meta = MetadataCatalog.get(name)
    if "statistics" in meta:
        print(format_statistics_table(name, meta.statistics))
    else:
        print(scene_table(name, meta))
    print(f"  root: {meta.get('root', '?')}")
    return True


def check_all(root: str) -> bool:
    """One line per registered name: loads (with its size), missing (first path), or
    generated on first use."""
    ok_all = True
    for name in sorted(DatasetCatalog.list()):
        source = dataset_source(name)
        if source is not None and source.generated and not source.requirements(name):
            print(f"{name:<36} generated on first use ({source.title})")
            continue
        missing = missing_requirements(name, root)
        if missing:
            ok_all = False
            print(f"{name:<36} MISSING {missing[0][0]} (+{len(missing) - 1} more)")
            continue
        try:
            records = DatasetCatalog.get(name)
        except DatasetError as e:
            ok_all = False
            print(f"{name:<36} ERROR {e}")
            continue
        print(f"{name:<36} ok, {len(records)} records")
    return ok_all


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="registered dataset names")
    parser.add_argument("--all", action="store_true", help="check every registered name")
    add_plugin_argument(parser)  # a plugin registering its own datasets
    args = parser.parse_args(argv)
    load_plugins(plugins=args.plugin)
    logging.basicConfig(level=logging.WARNING)
    root = os.path.abspath(dataset_root())
    if args.all:
        return 0 if check_all(root) else 1
    if not args.names:
        parser.error("name at least one dataset (or --all)")
    unknown = [n for n in args.names if n not in DatasetCatalog]
    if unknown:
        print(
            f"Not a registered dataset: {', '.join(unknown)}. Registered: "
            f"{', '.join(sorted(DatasetCatalog.list()))}"
        )
        return 2
    print(f"datasets root: {root} ($REID_DATASETS)")
    results = [check(n, root) for n in args.names]
    return 0 if all(results) else 1


def command(argv: Optional[List[str]]) -> int:
    """What the command runs: :func:`main`, whose value is the exit status."""
    return main(argv)


def run(argv: Optional[List[str]] = None) -> int:
    """The ``reid-check-dataset`` console script: :func:`command` through
    :func:`reid_plugins.utils.errors.run_cli` (one-line user errors, ``--debug``)."""
    from reid_plugins.utils.errors import run_cli

    return run_cli(command, argv)


if __name__ == "__main__":
    raise SystemExit(run())
