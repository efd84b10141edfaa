"""The one config set-up of every command: plugins first, then defaults, file and overrides.

:func:`setup_cfg` is what ``tools/*.py`` (and the ``reid-*`` console scripts) call to turn a
command line into a config; it imports the user's plugins (see
:mod:`reid_plugins.utils.plugins` and ``docs/plugins.md``) **before** building the defaults, so
that a plugin's config adder, backbone, meta-architecture, dataset or evaluator is known when
the file is merged. The core never imports :mod:`reid_plugins.methods`: the commands import it
themselves (and an installed distribution declares it in the ``reid_plugins.plugins``
entry-point group).
"""

from __future__ import annotations

import argparse
from typing import List, Optional, Sequence

from ..config import CfgNode, add_all_configs, get_cfg
from ..utils import plugins as _plugins

__all__ = ["add_plugin_argument", "load_plugins", "import_cfg_plugins", "setup_cfg"]


def add_plugin_argument(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--plugin MODULE_OR_FILE`` (repeatable) to ``parser``; returns it."""
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE_OR_FILE",
        help=(
            "import this module (pkg.mod) or .py file before building the config, to register "
            f"your own backbones, models, datasets, evaluators and config keys; repeatable. "
            f"Also: the config key PLUGINS and ${_plugins.ENV_VAR} (see docs/plugins.md)"
        ),
    )
    return parser


def load_plugins(
    config_file: str = "", plugins: Sequence[str] = (), opts: Sequence[str] = ()
) -> List[str]:
    """Import the entry-point plugins, then ``$REID_PLUGINS``, the ``PLUGINS`` of
    ``config_file`` (and its ``_BASE_`` chain), ``plugins`` (``--plugin``) and a ``PLUGINS``
    override in ``opts``.

    Returns:
        The imported specs other than entry points (files as absolute paths), in order,
        without duplicates: what ``cfg.PLUGINS`` records so that the dumped ``config.yaml``
        alone reloads them.

    Raises:
        PluginError: one line naming the plugin and where it was listed.
    """
    _plugins.load_entry_point_plugins()
    specs = _plugins.plugins_from_env()
    if config_file:
        specs += _plugins.plugins_from_config_file(config_file)
    specs += [(_plugins.resolve_spec(p), "--plugin") for p in plugins or ()]
    specs += _plugins.plugins_from_opts(opts or ())
    return _plugins.import_plugins(specs)


def import_cfg_plugins(cfg: CfgNode) -> List[str]:
    """Import the entry-point plugins and ``cfg.PLUGINS`` (e.g. in a freshly spawned worker
    that received a finished config)."""
    _plugins.load_entry_point_plugins()
    return _plugins.import_plugins((s, "PLUGINS of the config") for s in cfg.get("PLUGINS", []))


def _without_plugins(opts: List[str]) -> List[str]:
    """``opts`` less its ``PLUGINS VALUE`` pairs (an odd trailing item is kept for the error)."""
    even = len(opts) - len(opts) % 2
    out: List[str] = []
    for key, value in zip(opts[0:even:2], opts[1:even:2]):
        if key != "PLUGINS":
            out += [key, value]
    return out + opts[even:]


def setup_cfg(
    args: Optional[argparse.Namespace] = None,
    *,
    config_file: Optional[str] = None,
    opts: Optional[Sequence[str]] = None,
    plugins: Optional[Sequence[str]] = None,
) -> CfgNode:
    """Plugins (:func:`load_plugins`), then defaults + every registered config adder, then the
    file, then ``KEY VALUE`` overrides. Returns the (unfrozen) config.

    Args:
        args: a parsed command line with ``config_file``, ``opts`` and ``plugin`` attributes
            (any may be missing); the keyword arguments override them.
        config_file: YAML file ("" = defaults only).
        opts: ``[KEY, VALUE, ...]`` overrides.
        plugins: ``--plugin`` entries.

    ``cfg.PLUGINS`` is set to every plugin imported (files as absolute paths), so that the
    config dumped to ``OUTPUT_DIR/config.yaml`` reloads them by itself.
    """
    if config_file is None:
        config_file = getattr(args, "config_file", "") or ""
    if opts is None:
        opts = getattr(args, "opts", None) or []
    if plugins is None:
        plugins = getattr(args, "plugin", None) or []
    opts = list(opts)
    loaded = load_plugins(config_file, plugins, opts)
    cfg = add_all_configs(get_cfg())
    if config_file:
        cfg.merge_from_file(config_file)
    cfg.merge_from_list(_without_plugins(opts))  # imported above; the full list set below
    cfg.PLUGINS = loaded
    return cfg
