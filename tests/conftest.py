"""Shared fixtures."""
import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tiny-model tests on one torch thread (restored afterwards): on a busy 2-core machine two
    threads make small MLPs many times slower, and one thread keeps the results reproducible."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
