import os
import random

import pytest
import torch

# Triton kernels run on the CPU under its interpreter when there is no GPU; it is chosen when the
# first @triton.jit is decorated, so this must come before any test module imports Triton.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Sweep sizes: CI defaults that still catch real bugs; raise NLFS_TEST_SCALE for exhaustive runs.
SCALE = float(os.environ.get("NLFS_TEST_SCALE", "1"))


def scaled(n: int) -> int:
    return max(1, int(n * SCALE))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    random.seed(0)
    yield


@pytest.fixture(autouse=True)
def _catalogue():
    """Losses a test registers (an export it imports) leave with it: registering a different loss under
    a taken name is refused, so one test's run#1 must not meet the next test's."""
    from nlfs import losses

    catalogue, aliases = dict(losses._CATALOGUE), dict(losses._ALIASES)
    yield
    losses._CATALOGUE.clear()
    losses._CATALOGUE.update(catalogue)
    losses._ALIASES.clear()
    losses._ALIASES.update(aliases)


# CI sets NLFS_REQUIRE_BACKENDS=1 (.ci/run): a backend that cannot run (the C++ extension did not
# build, Triton missing) then fails the tests instead of skipping them. A user without a compiler
# still gets skips.
REQUIRE_BACKENDS = os.environ.get("NLFS_REQUIRE_BACKENDS", "") not in ("", "0")


def unavailable(why: str, *, module: bool = False) -> None:
    """Skip (module-wide with ``module``) because a backend cannot run here, or fail under CI."""
    if REQUIRE_BACKENDS:
        pytest.fail(f"NLFS_REQUIRE_BACKENDS is set but {why}", pytrace=False)
    pytest.skip(why, allow_module_level=module)


def require_backend(name: str, *, module: bool = False) -> None:
    """Skip unless backend ``name`` can run here (fail instead under NLFS_REQUIRE_BACKENDS)."""
    from nlfs.backends import available_backends

    why = available_backends()[name]
    if why:
        unavailable(why, module=module)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Hundreds of tiny torch programs: one torch thread avoids oversubscribing a small machine
    (``pytestmark = pytest.mark.usefixtures("one_torch_thread")`` in a module)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
