"""Config: ``get_cfg()``, the config-adder registry and the shared person-search keys.

Each method's ``add_<method>_config(cfg)`` lives in its own package
(``reid_plugins.methods.<method>.config``) and is registered with
:func:`register_config_adder` where it is defined; :func:`add_all_configs` applies every
registered adder. Importing :mod:`reid_plugins.methods` (the tools do) registers the built-in
methods; user plugins register theirs the same way.
"""

from .config import CfgNode, ConfigError, add_subtree, get_cfg, global_cfg, set_global_cfg

__all__ = [
    "CfgNode",
    "ConfigError",
    "add_subtree",
    "get_cfg",
    "global_cfg",
    "set_global_cfg",
    "add_all_configs",
    "register_config_adder",
]

_CONFIG_ADDERS = []


def register_config_adder(fn):
    """Register an ``add_<method>_config(cfg)`` function used by :func:`add_all_configs`."""
    if fn not in _CONFIG_ADDERS:
        _CONFIG_ADDERS.append(fn)
    return fn


def add_all_configs(cfg):
    """Apply every registered ``add_<method>_config`` (what ``tools/train_net.py`` uses).

    Only adders already registered are applied: import :mod:`reid_plugins.methods` (and any
    plugin module) first. Returns ``cfg``.
    """
    for fn in _CONFIG_ADDERS:
        fn(cfg)
    return cfg


from .person_search_config import add_person_search_config  # noqa: E402,F401  (shared keys)
