#!/usr/bin/env python
"""``python tools/check_dataset.py ...`` = ``reid-check-dataset ...``; the code is
:mod:`reid_plugins.cli.check_dataset` (``--help`` lists the options)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # source checkout

from reid_plugins.cli.check_dataset import *  # noqa: F401,F403,E402  (sets the environment)
from reid_plugins.cli.check_dataset import run  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(run())
