"""Configuration system: a thin layer over fvcore's :class:`CfgNode`.

fvcore already implements ``_BASE_`` inheritance (relative paths resolved against the child
file) and strict key checking. This module adds what users of a research toolbox expect on
top of it:

* every error raised while merging a YAML file names **the file** and **the key**;
* ``merge_from_list`` errors name the offending command-line key;
* :func:`get_cfg` returns a fresh copy of the documented defaults.
"""

from __future__ import annotations

import logging
import os
from typing import Any, List

from fvcore.common.config import CfgNode as _FvCfgNode

from ..utils.errors import UserError

__all__ = [
    "CfgNode",
    "ConfigError",
    "ConfigFileNotFoundError",
    "add_subtree",
    "get_cfg",
    "set_global_cfg",
    "global_cfg",
]


class ConfigError(UserError, KeyError):
    """Raised for an unknown key, a wrong type or value, or an unreadable config file.

    A :class:`~reid_plugins.utils.errors.UserError` (the tools print it as one line). Also a
    ``KeyError`` so that code expecting yacs' ``KeyError`` keeps working, but ``str(err)`` is
    the plain, readable message (``KeyError`` would quote it).
    """

    hint = "fix the config file or the KEY VALUE override; --debug shows the traceback"

    def __str__(self) -> str:  # pragma: no cover - trivial
        return str(self.args[0]) if self.args else ""


class ConfigFileNotFoundError(ConfigError, FileNotFoundError):
    """A config file (or one of its ``_BASE_`` files) does not exist."""

    hint = "check the path given to --config-file (relative paths start at the current folder)"


class CfgNode(_FvCfgNode):
    """fvcore ``CfgNode`` with actionable error messages.

    Behaviour is identical to fvcore's except that failures while merging report the file
    (for :meth:`merge_from_file`) or the command-line pair (for :meth:`merge_from_list`) and
    the full dotted key.
    """

    def merge_from_file(self, cfg_filename: str, allow_unsafe: bool = False) -> None:
        """Merge a YAML file (following its ``_BASE_`` chain) into this config.

        Args:
            cfg_filename: path to a YAML file.
            allow_unsafe: allow python tags in YAML (fvcore semantics).

        Raises:
            ConfigFileNotFoundError: (a ``FileNotFoundError``) the file, or one of its
                ``_BASE_`` files, does not exist.
            ConfigError: a key in the file does not exist in the config, or has the wrong type.
        """
        if not os.path.isfile(cfg_filename):
            raise ConfigFileNotFoundError(f"Config file not found: '{cfg_filename}'")
        try:
            loaded = self.load_yaml_with_base(cfg_filename, allow_unsafe=allow_unsafe)
        except FileNotFoundError as e:
            raise ConfigFileNotFoundError(f"While loading config '{cfg_filename}': {e}") from e
        except Exception as e:  # yaml syntax errors etc.
            raise ConfigError(f"Cannot parse config file '{cfg_filename}': {e}") from e
        loaded = type(self)(loaded)
        try:
            self.merge_from_other_cfg(loaded)
        except (KeyError, ValueError, TypeError, AssertionError) as e:
            msg = e.args[0] if e.args else str(e)
            raise ConfigError(f"Invalid config file '{cfg_filename}': {msg}") from e

    def merge_from_list(self, cfg_list: List[Any]) -> "CfgNode":
        """Merge ``[KEY, VALUE, KEY, VALUE, ...]`` overrides (as given on the command line).

        Raises:
            ConfigError: odd number of items, unknown key or type mismatch; the message names
                the key and the value.
        """
        if len(cfg_list) % 2 != 0:
            raise ConfigError(
                f"Command-line overrides must be KEY VALUE pairs, got an odd number: {cfg_list}"
            )
        for key, value in zip(cfg_list[0::2], cfg_list[1::2]):
            try:
                super().merge_from_list([key, value])
            except (KeyError, ValueError, TypeError, AssertionError) as e:
                msg = e.args[0] if e.args else str(e)
                raise ConfigError(f"Invalid command-line override '{key} {value}': {msg}") from e
        return self

    def dump(self, *args, **kwargs) -> str:
        """YAML dump of the config (same as fvcore's)."""
        return super().dump(*args, **kwargs)


logger = logging.getLogger(__name__)


global_cfg = CfgNode()


def get_cfg() -> CfgNode:
    """Return a fresh copy of the toolbox's default config.

    Method-specific subtrees are added by ``add_<method>_config(cfg)`` functions.
    """
    from .defaults import _C

    return _C.clone()


def set_global_cfg(cfg: CfgNode) -> None:
    """Store ``cfg`` in :data:`global_cfg` (for code that has no config argument)."""
    global_cfg.clear()
    global_cfg.update(cfg)


def add_subtree(parent: "CfgNode", key: str, defaults: "CfgNode") -> "CfgNode":
    """Add ``parent[key] = defaults``, or only the keys of ``defaults`` missing under an
    existing ``parent[key]`` (recursively): the one idiom of every ``add_<method>_config``.

    Idempotent and never overwrites a value that is already set. Returns ``parent[key]``.
    """
    if key not in parent:
        parent[key] = defaults
        return parent[key]
    node = parent[key]
    for name, value in defaults.items():
        if isinstance(value, _FvCfgNode) and name in node:
            add_subtree(node, name, value)
        elif name not in node:
            node[name] = value
    return node
