"""Config: ``get_cfg()`` and the ``add_<method>_config`` functions."""

from .config import CfgNode, ConfigError, get_cfg, global_cfg, set_global_cfg

__all__ = [
    "CfgNode",
    "ConfigError",
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

    Importing :mod:`reid_plugins.modeling` registers the method adders.
    """
    import reid_plugins.modeling  # noqa: F401  (registers methods and their adders)

    for fn in _CONFIG_ADDERS:
        fn(cfg)
    return cfg


from .gmn_config import add_gmn_config  # noqa: E402,F401  (registers the GMN adder)
from .m3l_config import add_m3l_config  # noqa: E402,F401
from .person_search_config import add_person_search_config  # noqa: E402,F401
from .tdn_config import add_tdn_config  # noqa: E402,F401  (registers the TDN adder)
