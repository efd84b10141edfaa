"""Suite-wide test settings."""

import logging

import pytest
import torch

import reid_plugins.methods  # noqa: F401  (registers the built-in methods, as the tools do)


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
