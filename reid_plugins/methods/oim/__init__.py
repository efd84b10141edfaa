"""OIM* (Xiao et al., "Joint Detection and Identification Feature Learning for Person
Search", CVPR 2017, arXiv 1604.01850; the OIM* variant of TDN's Table III)."""

from .loss import UNLABELED_PID, OIMLoss  # noqa: F401
from .model import OIMSearch  # noqa: F401
