"""Meta-architectures (importing registers them in META_ARCH_REGISTRY)."""

from .baseline import ReIDBaseline  # noqa: F401
from .build import META_ARCH_REGISTRY, build_model  # noqa: F401
from .gmn import GMN  # noqa: F401,E402
from .m3l import M3L  # noqa: F401,E402
from .oim_search import OIMSearch  # noqa: F401
from .tdn import TDN  # noqa: F401,E402
