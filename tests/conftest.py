"""Suite-wide test settings."""

import logging

import pytest
import torch

import reid_plugins.methods  # noqa: F401  (registers the built-in methods, as the tools do)
from reid_plugins.config.defaults import _C

# The suite compares exact numbers: pin float32 and contiguous tensors instead of the shipped
# fast path ("auto": bfloat16 autocast + channels-last on CPUs with native bfloat16), which
# tests/engine/test_fast_path.py exercises explicitly. Subprocess tests see the shipped defaults.
_C.SOLVER.AMP.ENABLED = False
_C.TEST.AMP.ENABLED = False
_C.MODEL.CHANNELS_LAST = False
_C.SOLVER.FUSED = False


@pytest.fixture(autouse=True)
def _propagate_package_logs():
    """``setup_logger`` (called by trainers) stops propagation to the root logger, as
    detectron2 does; re-enable it per test so that ``caplog`` sees warnings whatever ran
    before."""
    logger = logging.getLogger("reid_plugins")
    old = logger.propagate
    logger.propagate = True
    yield
    logger.propagate = old


@pytest.fixture(scope="module")
def single_thread():
    """Run a module's tests on one torch thread: tiny convolutions run faster (and robustly on
    a busy machine) that way. The previous thread count is restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
