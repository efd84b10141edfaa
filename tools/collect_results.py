#!/usr/bin/env python
"""Compare runs: one table of the ``eval_results.json`` found below the given folders.

Examples::

    python tools/collect_results.py output/baseline output/m3l            # Markdown table
    python tools/collect_results.py output --metrics mAP Rank-1 --sort mAP
    python tools/collect_results.py output/tdn/pipeline --metrics mAP top-1 AP --format csv

Columns are ``<dataset>/<task>/<metric>`` for the asked metrics (default: mAP, Rank-1, Rank-5,
mINP, top-1, AP) found in any run; ``arch`` is the run's ``MODEL.META_ARCHITECTURE`` from its
``config.yaml``.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from reid_plugins.utils.env import setup_environment  # noqa: E402

setup_environment()  # before torch is imported (OMP_WAIT_POLICY=PASSIVE unless set)

from reid_plugins.utils.results_table import (  # noqa: E402
    collect_runs,
    format_table,
    select_columns,
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("paths", nargs="+", help="run folders (searched recursively) or result files")
    p.add_argument("--metrics", nargs="+", default=None, help="metric names to show")
    p.add_argument("--sort", default=None, help="sort by this metric (or full column), best first")
    p.add_argument("--format", choices=["md", "csv", "json"], default="md")
    p.add_argument("--digits", type=int, default=1)
    p.add_argument("--output", default="", help="also write the table to this file")
    return p.parse_args(argv)


def main(argv=None) -> str:
    args = parse_args(argv)
    runs = collect_runs(args.paths)
    if not runs:
        raise SystemExit(f"collect_results: no eval_results.json below {args.paths}")
    columns = select_columns(runs, args.metrics)
    text = format_table(runs, columns, fmt=args.format, digits=args.digits, sort_by=args.sort)
    print(text, end="")
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
    return text


if __name__ == "__main__":
    from reid_plugins.utils.errors import run_cli

    raise SystemExit(run_cli(main))
