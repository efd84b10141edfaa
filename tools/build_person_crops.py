#!/usr/bin/env python
"""Build the person-crop ReID set of a person-search dataset (TDN's teacher training data).

Every labelled box of ``<dataset>_train`` is cropped and resized to 256x128 (bilinear) into
``$REID_DATASETS/<dataset>_crops/bounding_box_train`` in the Market-1501 layout; the queries
of ``<dataset>_query`` and the labelled gallery persons of ``<dataset>_gallery`` go to
``query`` / ``bounding_box_test``. The result is registered as ``<dataset>_crops_train`` /
``<dataset>_crops_test`` (see :mod:`reid_plugins.data.person_crops`), so the teacher trains
with an ordinary ReID config, e.g. ``projects/tdn/teacher_prw.yaml``.

Examples::

    python tools/build_person_crops.py --dataset prw
    python tools/build_person_crops.py --dataset cuhk_sysu --root /data/reid
    python tools/build_person_crops.py --dataset synthetic_cuhk_sysu --size 256 128 --overwrite
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from reid_plugins.utils.env import setup_environment  # noqa: E402

setup_environment()  # before torch is imported (OMP_WAIT_POLICY=PASSIVE unless set)

from reid_plugins.data.person_crops import SCENE_PREFIXES, build_person_crops  # noqa: E402
from reid_plugins.engine import add_plugin_argument, load_plugins  # noqa: E402


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dataset",
        required=True,
        help=f"registered scene-dataset prefix ({', '.join(SCENE_PREFIXES)} or your own)",
    )
    parser.add_argument("--root", default=None, help="datasets root (default $REID_DATASETS)")
    parser.add_argument("--size", type=int, nargs=2, default=[256, 128], metavar=("H", "W"))
    parser.add_argument("--splits", nargs="+", default=["train", "test"], choices=["train", "test"])
    parser.add_argument("--overwrite", action="store_true", help="rebuild existing crops")
    add_plugin_argument(parser)  # a plugin registering your own scene dataset
    args = parser.parse_args(argv)
    load_plugins(plugins=args.plugin)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = build_person_crops(
        args.dataset, args.root, size=args.size, splits=args.splits, overwrite=args.overwrite
    )
    print(f"Crops of '{args.dataset}' in {out}: train with DATASETS.TRAIN "
          f"[{args.dataset}_crops_train], evaluate on [{args.dataset}_crops_test]")  # fmt: skip
    return out


if __name__ == "__main__":
    from reid_plugins.utils.errors import run_cli

    raise SystemExit(run_cli(main))
