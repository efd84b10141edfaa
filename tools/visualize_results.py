#!/usr/bin/env python
"""``python tools/visualize_results.py ...`` = ``reid-visualize ...``; the code is
:mod:`reid_plugins.cli.visualize_results` (``--help`` lists the options)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # source checkout

from reid_plugins.cli.visualize_results import *  # noqa: F401,F403,E402  (sets the environment before torch)
from reid_plugins.cli.visualize_results import run  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(run())
