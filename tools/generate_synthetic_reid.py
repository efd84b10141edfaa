#!/usr/bin/env python
"""Generate the synthetic multi-domain ReID benchmark (Market-1501 layout) and print its
statistics as read back by the Market loader.

    python tools/generate_synthetic_reid.py --root datasets --seed 0
    python tools/generate_synthetic_reid.py --root datasets --domains synA synB --num-train-ids 60

Writes ``<root>/synthetic_reid/<domain>/{bounding_box_train,bounding_box_test,query}`` and a
``manifest.json`` per domain; with the same parameters a second run reuses the files. The
domains are then registered as ``synthetic_reid_<domain>_train`` / ``_test`` (with
``REID_DATASETS=<root>``).
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from reid_plugins.utils.env import setup_environment  # noqa: E402

setup_environment()  # before torch is imported (OMP_WAIT_POLICY=PASSIVE unless set)

from reid_plugins.data.datasets.common import (  # noqa: E402
    format_statistics_table,
    reid_statistics,
)
from reid_plugins.data.datasets.market1501 import load_market_style  # noqa: E402
from reid_plugins.data.synthetic_reid import (  # noqa: E402
    DEFAULT_DOMAINS,
    generate_synthetic_reid,
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--root",
        default=os.environ.get("REID_DATASETS", "datasets"),
        help="datasets root (default: $REID_DATASETS or datasets/)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--domains", nargs="+", default=list(DEFAULT_DOMAINS))
    dataset_like = " (default: the domain's dataset-like value, see the generator docstring)"
    p.add_argument("--num-train-ids", type=int, default=None, help="ids per domain" + dataset_like)
    p.add_argument("--num-test-ids", type=int, default=None, help="test ids" + dataset_like)
    p.add_argument(
        "--images-per-id-per-cam",
        type=int,
        default=None,
        help="uniform layout: every id in every camera with this many images" + dataset_like,
    )
    p.add_argument("--num-cams", type=int, default=None, help="cameras" + dataset_like)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--num-distractors", type=int, default=50)
    p.add_argument("--num-junk", type=int, default=20)
    p.add_argument(
        "--test-ids-scale",
        type=float,
        default=1.0,
        help="multiply every domain's dataset-like number of test ids (a larger test split)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="regenerate even if a matching manifest exists"
    )
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    paths = generate_synthetic_reid(
        args.root,
        seed=args.seed,
        domains=tuple(args.domains),
        num_train_ids=args.num_train_ids,
        num_test_ids=args.num_test_ids,
        images_per_id_per_cam=args.images_per_id_per_cam,
        num_cams=args.num_cams,
        height=args.height,
        width=args.width,
        num_distractors=args.num_distractors,
        test_ids_scale=args.test_ids_scale,
        num_junk=args.num_junk,
        overwrite=args.overwrite,
    )
    elapsed = time.perf_counter() - start
    for domain, path in paths.items():
        stats = {}
        for split in ("train", "test"):
            recs = load_market_style(path, split, dataset_name=f"synthetic_reid_{domain}_{split}")
            stats.update(reid_statistics(recs))
        print(format_statistics_table(f"synthetic_reid_{domain} ({path})", stats))
    print(
        f"{len(paths)} domain(s) ready under {os.path.join(args.root, 'synthetic_reid')} "
        f"in {elapsed:.1f} s (seed {args.seed})"
    )
    return 0


if __name__ == "__main__":
    from reid_plugins.utils.errors import run_cli

    raise SystemExit(run_cli(main))
