#!/usr/bin/env python
"""``python tools/demo.py ...`` = ``reid-demo ...``; the code is
:mod:`reid_plugins.cli.demo` (``--help`` lists the options)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # source checkout

from reid_plugins.cli.demo import *  # noqa: F401,F403,E402  (sets the environment before torch)
from reid_plugins.cli.demo import run  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(run())
