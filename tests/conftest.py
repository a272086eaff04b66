import os
import random

import pytest
import torch

# Sweep sizes: CI defaults that still catch real bugs; raise NLFS_TEST_SCALE for exhaustive runs.
SCALE = float(os.environ.get("NLFS_TEST_SCALE", "1"))


def scaled(n: int) -> int:
    return max(1, int(n * SCALE))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    random.seed(0)
    yield
