"""Built-in dataset registrations (importing this package registers them)."""

# isort: skip_file  (registration order matters: loaders, then builtin names, then crops)

from . import cuhk_sysu  # noqa: F401  (person search: cuhk_sysu_*, synthetic_cuhk_sysu_*)
from . import prw  # noqa: F401  (person search: prw_*, synthetic_prw_*)
from . import common  # noqa: F401  (combine_sources, domain_pid_counts, stats helpers)
from . import market1501, dukemtmc, cuhk03, msmt17, cuhk_sysu_reid  # noqa: F401  (ReID loaders)
from . import builtin  # noqa: F401  (registers the ReID names: see builtin.py)
from .common import combine_sources, domain_pid_counts  # noqa: F401
from .market1501 import register_market_style  # noqa: F401
from .. import person_crops  # noqa: F401,E402  (registers <scene>_crops_{train,test})
