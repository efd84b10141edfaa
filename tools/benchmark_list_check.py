#!/usr/bin/env python
"""Cost of checking every image a list file names (one ``os.stat`` each) at MSMT17 size.

Writes an MSMT17-like tree of empty files (default 126,441 images in 4,101 identity folders,
the size of combined MSMT17) and its list file into a temporary folder, then times
:func:`reid_plugins.data.datasets.msmt17.read_msmt17_list` (parse + check) and the check alone
(:func:`reid_plugins.data.datasets.common.check_listed_files`), best of ``--repeat`` runs
with a warm file-system cache. A cold cache (first read after a reboot, network storage)
costs more: the script cannot measure that without dropping the cache.

Example::

    python tools/benchmark_list_check.py               # MSMT17 size
    python tools/benchmark_list_check.py --files 20000 --ids 700 --dir /data/tmp
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from reid_plugins.utils.env import setup_environment  # noqa: E402

setup_environment()  # before torch is imported (OMP_WAIT_POLICY=PASSIVE unless set)


def make_tree(base: str, files: int, ids: int) -> str:
    """``<base>/train/<pid>/<pid>_<k>_<cam>_0303morning_0000_0.jpg`` (empty) and
    ``<base>/list_train.txt``; returns the list file."""
    lines = []
    for k in range(files):
        pid = k % ids
        rel = f"{pid:04d}/{pid:04d}_{k:06d}_{k % 15 + 1:02d}_0303morning_0000_0.jpg"
        lines.append(f"{rel} {pid}\n")
    for pid in range(ids):
        os.makedirs(os.path.join(base, "train", f"{pid:04d}"), exist_ok=True)
    for line in lines:
        open(os.path.join(base, "train", line.split()[0]), "wb").close()
    list_file = os.path.join(base, "list_train.txt")
    with open(list_file, "w") as f:
        f.writelines(lines)
    return list_file


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=126441)
    parser.add_argument("--ids", type=int, default=4101)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where to write the tree (default: a tmp dir)")
    args = parser.parse_args(argv)

    from reid_plugins.data.datasets.common import check_listed_files
    from reid_plugins.data.datasets.msmt17 import read_msmt17_list

    base = tempfile.mkdtemp(prefix="list_check_", dir=args.dir)
    try:
        t = time.perf_counter()
        list_file = make_tree(base, args.files, args.ids)
        make_s = time.perf_counter() - t
        image_dir = os.path.join(base, "train")
        load, check = [], []
        for _ in range(args.repeat):
            t = time.perf_counter()
            recs = read_msmt17_list(list_file, image_dir, "bench")
            load.append(time.perf_counter() - t)
            entries = [(i, r["file_name"]) for i, r in enumerate(recs, 1)]
            t = time.perf_counter()
            check_listed_files(list_file, entries)
            check.append(time.perf_counter() - t)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    out = dict(files=args.files, load_s=min(load), check_s=min(check),
               us_per_file=1e6 * min(check) / args.files, make_tree_s=make_s)  # fmt: skip
    print(
        f"{args.files} listed files: parse + check {out['load_s']:.3f} s, check alone "
        f"{out['check_s']:.3f} s ({out['us_per_file']:.2f} us per file; warm cache, best of "
        f"{args.repeat}; writing the tree took {make_s:.1f} s)"
    )
    return out


if __name__ == "__main__":
    from reid_plugins.utils.errors import run_cli

    raise SystemExit(run_cli(main))
