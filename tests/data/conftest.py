import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """These tests run small ops: one thread is as fast, and far faster on a shared, busy CPU."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
