"""The command-line tools, importable: ``reid-train`` (``tools/train_net.py``), ``reid-demo``,
``reid-export``, ``reid-analyze``, ``reid-visualize``.

Each module has ``main(argv)`` (returns the result, used by tests) and ``run(argv)`` (the
console script: logging, printing, one-line user errors through
:func:`reid_plugins.utils.errors.run_cli`, exit status). ``tools/<name>.py`` are thin wrappers
so that ``python tools/<name>.py`` works in a source checkout without installing.

Unlike the core packages, this package imports :mod:`reid_plugins.methods` (the built-in
methods) and then the user's plugins (:func:`reid_plugins.engine.setup_cfg`).

Importing it sets the tools' environment defaults (``OMP_WAIT_POLICY=PASSIVE`` unless set,
:func:`reid_plugins.utils.env.setup_environment`) before the tools import torch.
"""

from reid_plugins.utils.env import setup_environment

setup_environment()
