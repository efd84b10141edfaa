"""``reid-visualize`` / ``tools/visualize_results.py``: visualise evaluation results from the
evaluators' JSON dumps (no re-inference).

Subcommands (PNG files go to ``--output``)::

    # ReID ranked lists from ReIDEvaluator's dump (query + top-k, green/red borders, distances)
    python tools/visualize_results.py reid --json output/inference/market1501_test/\
reid_topk_market1501_test.json --output vis/reid --order worst --max-queries 20

    # Person search (query box + top-k gallery scenes with the matched box, TDN Fig. 7-8)
    python tools/visualize_results.py search --json output/inference/x/search_results_prw.json \
        --output vis/search --topk 5            # images found through the dump's dataset names
    python tools/visualize_results.py search --json res.json --image-root datasets/prw/frames ...

    # Detections on scenes: a detections JSON (tools/demo.py search writes one) or the gt of a
    # registered scene set
    python tools/visualize_results.py detections --json demo_out/detections.json --output vis/det
    python tools/visualize_results.py detections --dataset synthetic_cuhk_sysu_gallery ...

    # t-SNE coloured by domain and by identity (M3L Fig. 5 / Fig. A) from a features file ...
    python tools/visualize_results.py tsne --features feats.npz --output vis/tsne
    # ... or extract it first (writes <output>/features.npz with save_features)
    python tools/visualize_results.py tsne --config-file cfg.yaml --datasets market1501_test \
        dukemtmc_test --output vis/tsne MODEL.WEIGHTS output/model_final.pth
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
from typing import List, Optional

from tqdm import tqdm

from reid_plugins.engine import add_plugin_argument, load_plugins
from reid_plugins.visualization import visualizer as vis

logger = logging.getLogger("reid_plugins.tools.visualize_results")


def _common(p: argparse.ArgumentParser, order: bool = True) -> None:
    p.add_argument("--output", required=True, help="folder for the PNG files")
    add_plugin_argument(p)  # e.g. a plugin registering the --dataset / --datasets used
    if order:
        p.add_argument("--max-queries", type=int, default=20, help="queries rendered (-1 = all)")
        p.add_argument(
            "--order",
            choices=["index", "worst", "best"],
            default="index",
            help="dump order, or sorted by AP (worst / best first)",
        )
        p.add_argument(
            "--failures-only", action="store_true", help="only queries whose rank-1 result is wrong"
        )


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("reid", help="ranked lists from reid_topk_<dataset>.json")
    p.add_argument("--json", required=True, help="ReIDEvaluator dump reid_topk_<dataset>.json")
    p.add_argument("--topk", type=int, default=None, help="gallery samples shown (default all)")
    p.add_argument("--image-root", default=None, help="folder joined to relative file names")
    _common(p)

    p = sub.add_parser("search", help="person-search results from search_results_<p>.json")
    p.add_argument("--json", required=True, help="PersonSearchEvaluator dump")
    p.add_argument("--topk", type=int, default=5, help="gallery scenes shown (<= 10)")
    p.add_argument("--image-root", default=None, help="folder holding the scene images")
    p.add_argument(
        "--datasets",
        nargs="*",
        default=None,
        help="registered scene sets mapping image ids to files (default: the dump's)",
    )
    p.add_argument("--ncols", type=int, default=6, help="tiles per row")
    _common(p)

    p = sub.add_parser("detections", help="boxes + scores + pids on scenes")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--json", help="detections JSON ({'images': [{file_name, boxes, ...}]})")
    src.add_argument("--dataset", help="registered scene set: draw its ground-truth boxes/pids")
    p.add_argument("--image-root", default=None, help="folder joined to relative names / ids")
    p.add_argument("--score-thresh", type=float, default=0.5, help="hide boxes scoring lower")
    p.add_argument("--max-images", type=int, default=20, help="images rendered (-1 = all)")
    _common(p, order=False)

    p = sub.add_parser("tsne", help="t-SNE by domain and by identity")
    p.add_argument("--features", default=None, help=".npz written by save_features")
    p.add_argument("--config-file", default="", help="config of the model to extract with")
    p.add_argument("--datasets", nargs="*", default=[], help="ReID test sets to extract")
    p.add_argument("--max-batches", type=int, default=None, help="per dataset (quick looks)")
    p.add_argument("--max-per-domain", type=int, default=500, help="samples per domain")
    p.add_argument("--num-ids", type=int, default=7, help="identities in tsne_identity.png")
    p.add_argument("--perplexity", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config KEY VALUE overrides")
    _common(p, order=False)
    return parser.parse_args(argv)


def _limit(n: Optional[int]) -> Optional[int]:
    return None if n is None or n < 0 else n


def _extract_features(args) -> str:
    """Build the model of ``--config-file`` (+ opts, MODEL.WEIGHTS) and save features."""
    import reid_plugins.methods  # noqa: F401  (registers the built-in methods)
    from reid_plugins.checkpoint import Checkpointer
    from reid_plugins.data import build_reid_test_loader
    from reid_plugins.engine import setup_cfg
    from reid_plugins.modeling import build_model

    if not args.config_file or not args.datasets:
        raise SystemExit("tsne: give --features FILE, or --config-file CFG and --datasets NAMES")
    cfg = setup_cfg(args)
    if not cfg.MODEL.WEIGHTS:
        raise SystemExit("tsne: MODEL.WEIGHTS is empty; pass MODEL.WEIGHTS path/to/model.pth")
    model = build_model(cfg)
    Checkpointer(model).load(cfg.MODEL.WEIGHTS, checkpointables=[])
    loaders = []
    for name in args.datasets:
        loader = build_reid_test_loader(cfg, name)[0]
        loaders.append(itertools.islice(loader, args.max_batches) if args.max_batches else loader)
    path = os.path.join(args.output, "features.npz")
    vis.save_features(model, itertools.chain(*loaders), path)
    return path


def main(argv: Optional[List[str]] = None) -> List[str]:
    """Run one subcommand; returns the written PNG paths."""
    args = parse_args(argv)
    load_plugins(getattr(args, "config_file", "") or "", args.plugin)
    os.makedirs(args.output, exist_ok=True)
    if args.command == "reid":
        paths = vis.visualize_reid_dump(
            args.json,
            args.output,
            topk=args.topk,
            max_queries=_limit(args.max_queries),
            order=args.order,
            failures_only=args.failures_only,
            image_root=args.image_root,
        )
    elif args.command == "search":
        resolve = None
        if args.image_root or args.datasets:
            resolve = vis.make_image_resolver(args.image_root, args.datasets or [])
        paths = vis.visualize_search_dump(
            args.json,
            args.output,
            resolve=resolve,
            topk=args.topk,
            max_queries=_limit(args.max_queries),
            order=args.order,
            failures_only=args.failures_only,
            ncols=args.ncols,
        )
    elif args.command == "detections":
        if args.json:
            entries = vis.load_detections(args.json)
            resolve = vis.make_image_resolver(args.image_root, [])
        else:
            from reid_plugins.data import datasets  # noqa: F401  (registers the sets)
            from reid_plugins.data.catalog import DatasetCatalog

            entries = DatasetCatalog.get(args.dataset)
            resolve = vis.make_image_resolver(args.image_root, [args.dataset])
        paths = []
        for i, e in enumerate(tqdm(entries[: _limit(args.max_images)], desc="detections")):
            key = e.get("file_name") or e["image_id"]
            path = key if os.path.exists(key) else resolve(e.get("image_id", key))
            img = vis.draw_detections(
                path, e["boxes"], e.get("scores"), e.get("pids"), score_thresh=args.score_thresh
            )
            name = os.path.splitext(os.path.basename(key))[0]
            paths.append(vis.save_png(os.path.join(args.output, f"{i:04d}_{name}.png"), img))
    else:
        features = args.features or _extract_features(args)
        paths = vis.visualize_tsne(
            features,
            args.output,
            max_per_domain=_limit(args.max_per_domain),
            num_ids=args.num_ids,
            perplexity=args.perplexity,
            seed=args.seed,
        )
    logger.info("Wrote %d PNG file(s) to %s", len(paths), args.output)
    return paths


def command(argv: Optional[List[str]]) -> None:
    """What the command runs: one subcommand, then the number of files written."""
    from reid_plugins.utils.logger import setup_logger

    setup_logger(name="reid_plugins")
    print(f"Wrote {len(main(argv))} PNG file(s)")


def run(argv: Optional[List[str]] = None) -> int:
    """The ``reid-visualize`` console script: :func:`command` through
    :func:`reid_plugins.utils.errors.run_cli` (one-line user errors, ``--debug``)."""
    from reid_plugins.utils.errors import run_cli

    return run_cli(command, argv)


if __name__ == "__main__":
    raise SystemExit(run())
