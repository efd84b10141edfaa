"""Fixtures shared by the model tests (opt-in: request them by name or ``usefixtures``)."""

import pytest
import torch


@pytest.fixture(scope="module")
def single_thread():
    """Run a module's tests on one torch thread: tiny convolutions run faster (and robustly on
    a busy machine) that way. The previous thread count is restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
