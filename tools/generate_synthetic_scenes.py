#!/usr/bin/env python
"""Generate the synthetic person-search benchmark and print its statistics.

Example::

    python tools/generate_synthetic_scenes.py --root datasets --format cuhk_sysu --seed 0
    python tools/generate_synthetic_scenes.py --root datasets --format prw --seed 0

The data goes to ``<root>/synthetic_<format>`` (a second run with the same arguments reuses
it) and is read back with the real CUHK-SYSU / PRW parsers, which are also registered as
``synthetic_<format>_{train,gallery,query}`` (with ``REID_DATASETS=<root>``).
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from reid_plugins.utils.env import setup_environment  # noqa: E402

setup_environment()  # before torch is imported (OMP_WAIT_POLICY=PASSIVE unless set)

from reid_plugins.data.catalog import dataset_root  # noqa: E402
from reid_plugins.data.datasets.cuhk_sysu import (  # noqa: E402
    cuhk_sysu_gallery_sizes,
    format_scene_statistics,
    load_cuhk_sysu_gallery,
    load_cuhk_sysu_query,
    load_cuhk_sysu_train,
    scene_statistics,
)
from reid_plugins.data.datasets.prw import (  # noqa: E402
    load_prw_gallery,
    load_prw_query,
    load_prw_train,
)
from reid_plugins.data.synthetic_scenes import FORMATS, generate_synthetic_scenes  # noqa: E402

_LOADERS = {
    "cuhk_sysu": (load_cuhk_sysu_train, load_cuhk_sysu_gallery, load_cuhk_sysu_query),
    "prw": (load_prw_train, load_prw_gallery, load_prw_query),
}


def _pair(text: str):
    a, b = (int(v) for v in text.split(","))
    return a, b


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=dataset_root(), help="datasets root")
    parser.add_argument("--format", choices=FORMATS, default="cuhk_sysu")
    parser.add_argument("--seed", type=int, default=0)
    d = " (default: the generator's)"
    parser.add_argument("--num-train-images", type=int, help="train scene images" + d)
    parser.add_argument("--num-test-images", type=int, help="test scene images" + d)
    parser.add_argument("--num-train-ids", type=int, help="labelled train identities" + d)
    parser.add_argument("--num-test-ids", type=int, help="queried test identities" + d)
    parser.add_argument(
        "--num-gallery-only-ids", type=int, help="labelled test ids never queried" + d
    )
    parser.add_argument("--num-cams", type=int, help="cameras" + d)
    parser.add_argument("--image-size", type=_pair, help="H,W" + d)
    parser.add_argument("--appearances", type=_pair, help="MIN,MAX visits per group" + d)
    parser.add_argument("--frames-per-visit", type=_pair, help="MIN,MAX frames per visit" + d)
    parser.add_argument("--unlabeled-per-image", type=_pair, help="MIN,MAX" + d)
    parser.add_argument("--max-labeled-per-image", type=int, help="labelled persons cap" + d)
    parser.add_argument(
        "--gallery-sizes", type=int, nargs="+", help="cuhk_sysu: TestG<N> files to write" + d
    )
    parser.add_argument("--overwrite", action="store_true", help="replace other generated data")
    args = parser.parse_args(argv)

    keys = (
        "num_train_images", "num_test_images", "num_train_ids", "num_test_ids",
        "num_gallery_only_ids", "num_cams", "image_size", "appearances", "frames_per_visit",
        "unlabeled_per_image", "max_labeled_per_image", "gallery_sizes",
    )  # fmt: skip
    kwargs = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    start = time.perf_counter()
    out = generate_synthetic_scenes(
        args.root, seed=args.seed, fmt=args.format, overwrite=args.overwrite, **kwargs
    )
    took = time.perf_counter() - start
    stats = {}
    for split, loader in zip(("train", "gallery", "query"), _LOADERS[args.format]):
        name = f"synthetic_{args.format}_{split}"
        stats[name] = scene_statistics(loader(out, dataset_name=name))
    print(f"Synthetic {args.format} scenes in {out} ({took:.1f} s, cached runs are instant)")
    print(format_scene_statistics(stats))
    if args.format == "cuhk_sysu":
        print(f"Test protocols: TestG{cuhk_sysu_gallery_sizes(out)} and the full set (-1)")
    return 0


if __name__ == "__main__":
    from reid_plugins.utils.errors import run_cli

    raise SystemExit(run_cli(main))
