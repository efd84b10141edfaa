#!/usr/bin/env python
"""``python tools/check_dataset.py ...`` = ``reid-check-dataset ...``; the code is
:mod:`reid_plugins.cli.check_dataset` (``--help`` lists the options)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # source checkout

from reid_plugins.utils.env import setup_environment  # noqa: E402

setup_environment()  # before torch is imported (OMP_WAIT_POLICY=PASSIVE unless set)

from reid_plugins.cli.check_dataset import *  # noqa: F401,F403,E402
from reid_plugins.cli.check_dataset import command  # noqa: E402
from reid_plugins.utils.errors import run_cli  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(run_cli(command))
