"""Collect the ``eval_results.json`` of several runs into one comparison table.

Every trainer writes ``OUTPUT_DIR/eval_results.json`` as ``{dataset: {task: {metric: value}}}``
(``task`` = ``"reid"`` for ReID evaluators; ``"search"``, ``"detection"``... for person
search). :func:`collect_runs` finds those files below the given folders, :func:`flatten_results`
turns one into ``{"<dataset>/<task>/<metric>": value}`` and :func:`format_table` renders the rows
as Markdown, CSV or JSON. ``tools/collect_results.py`` is the command-line front end::

    python tools/collect_results.py output/gmn output/m3l --metrics mAP Rank-1 --sort mAP
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from typing import Dict, Iterable, List, Optional, Sequence

__all__ = [
    "RESULTS_FILE",
    "DEFAULT_METRICS",
    "collect_runs",
    "flatten_results",
    "select_columns",
    "format_table",
]

#: The file each run writes (``DefaultTrainer.test``).
RESULTS_FILE = "eval_results.json"
#: Metrics shown when none are asked for (ReID, then person search / detection).
DEFAULT_METRICS = ("mAP", "Rank-1", "Rank-5", "mINP", "top-1", "AP")


def flatten_results(results: Dict, source: str = "<results>") -> Dict[str, float]:
    """``{dataset: {task: {metric: value}}}`` -> ``{"dataset/task/metric": value}``.

    Nested dictionaries of any depth are joined with ``/``; non-numeric leaves are dropped.

    Raises:
        ValueError: ``results`` is not a dictionary (``source`` names the file).
    """
    if not isinstance(results, dict):
        raise ValueError(f"{source}: expected a JSON object of evaluation results")
    flat: Dict[str, float] = {}

    def walk(prefix: str, node) -> None:
        for key, value in node.items():
            name = f"{prefix}/{key}" if prefix else str(key)
            if isinstance(value, dict):
                walk(name, value)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                flat[name] = float(value)

    walk("", results)
    return flat


def _run_name(path: str, roots: Sequence[str]) -> str:
    for root in roots:
        rel = os.path.relpath(path, root)
        if not rel.startswith(".."):
            base = os.path.basename(os.path.normpath(root))
            return base if rel == "." else os.path.join(base, rel)
    return path


def collect_runs(paths: Iterable[str]) -> List[Dict]:
    """Runs below ``paths`` (folders searched recursively, or ``eval_results.json`` files).

    Returns one dict per run, sorted by name: ``{"run": name, "dir": folder, "arch":
    META_ARCHITECTURE from the run's config.yaml ("" if absent), "metrics": flattened
    results}``.

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: a results file is not valid JSON (the message names it).
    """
    paths = [str(p) for p in paths]
    roots = [p for p in paths if os.path.isdir(p)]
    files: List[str] = []
    for p in paths:
        if os.path.isfile(p):
            files.append(p)
        elif os.path.isdir(p):
            for dirpath, _, names in os.walk(p):
                if RESULTS_FILE in names:
                    files.append(os.path.join(dirpath, RESULTS_FILE))
        else:
            raise FileNotFoundError(f"collect_results: no such file or folder: '{p}'")
    runs = []
    for f in sorted(set(files)):
        try:
            with open(f) as fh:
                data = json.load(fh)
        except json.JSONDecodeError as e:
            raise ValueError(f"{f}: not valid JSON ({e})") from e
        run_dir = os.path.dirname(os.path.abspath(f))
        runs.append(
            {
                "run": _run_name(run_dir, [os.path.abspath(r) for r in roots]),
                "dir": run_dir,
                "arch": _meta_architecture(run_dir),
                "metrics": flatten_results(data, f),
            }
        )
    return sorted(runs, key=lambda r: r["run"])


def _meta_architecture(run_dir: str) -> str:
    cfg = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(cfg):
        return ""
    with open(cfg) as fh:
        for line in fh:
            stripped = line.strip()
            if stripped.startswith("META_ARCHITECTURE:"):
                return stripped.split(":", 1)[1].strip()
    return ""


def select_columns(runs: Sequence[Dict], metrics: Optional[Sequence[str]] = None) -> List[str]:
    """Flattened keys present in at least one run whose last part is one of ``metrics``
    (default :data:`DEFAULT_METRICS`), ordered by dataset/task, then by ``metrics`` order."""
    wanted = list(metrics) if metrics else list(DEFAULT_METRICS)
    keys = {k for r in runs for k in r["metrics"]}
    chosen = [k for k in keys if k.rsplit("/", 1)[-1] in wanted]
    return sorted(chosen, key=lambda k: (k.rsplit("/", 1)[0], wanted.index(k.rsplit("/", 1)[-1])))


def _fmt(value: Optional[float], digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def format_table(
    runs: Sequence[Dict],
    columns: Sequence[str],
    *,
    fmt: str = "md",
    digits: int = 1,
    sort_by: Optional[str] = None,
) -> str:
    """Render ``runs`` (from :func:`collect_runs`) with the given flattened ``columns``.

    Args:
        fmt: ``"md"`` (Markdown table), ``"csv"`` or ``"json"``.
        digits: decimals in Markdown / CSV.
        sort_by: a column, or a metric name (a row's value is then that of the first column
            ending with it that the row has); rows are sorted by it, best (largest) first,
            missing values last.

    Raises:
        ValueError: unknown ``fmt`` or ``sort_by``.
    """
    rows = list(runs)
    if sort_by:
        match = [c for c in columns if c == sort_by or c.rsplit("/", 1)[-1] == sort_by]
        if not match:
            raise ValueError(f"--sort '{sort_by}' is not one of the columns {list(columns)}")

        def key(r):
            values = [r["metrics"][c] for c in match if c in r["metrics"]]
            return -values[0] if values else math.inf

        rows.sort(key=key)
    header = ["run", "arch", *columns]
    if fmt == "json":
        return json.dumps(
            [
                {"run": r["run"], "arch": r["arch"], **{c: r["metrics"].get(c) for c in columns}}
                for r in rows
            ],
            indent=2,
        )
    table = [
        [r["run"], r["arch"] or "-", *(_fmt(r["metrics"].get(c), digits) for c in columns)]
        for r in rows
    ]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(table)
        return out.getvalue()
    if fmt != "md":
        raise ValueError(f"format must be 'md', 'csv' or 'json', got '{fmt}'")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    return "\n".join(lines) + "\n"
