"""Suite-wide test settings."""

import logging

import pytest


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
