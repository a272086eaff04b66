"""The Triton special functions (nlfs.kernels.special) against float64 scipy, on CPU under
TRITON_INTERPRET=1 (tests/conftest.py) or on a GPU. Bounds are relative errors; they are the
ones documented in kernels/special.py."""


import numpy as np
import pytest
import torch

from tests.conftest import require_backend

require_backend("triton", module=True)  # a skip, or a failure under CI's NLFS_REQUIRE_BACKENDS
import triton  # noqa: E402, F401

special = pytest.importorskip("scipy.special")

import triton.language as tl  # noqa: E402

from nlfs.backends._triton import kernels_package  # noqa: E402

kernels_package()
import nlfs.kernels.special as S  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TINY = 1.1754944e-38  # smallest normal fp32


@triton.jit
def _apply(x_ptr, o_ptr, n, FN: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    x = tl.load(x_ptr + offs, mask=m, other=0.0)
    tl.store(o_ptr + offs, FN(x), mask=m)


def run(fn, x: torch.Tensor) -> np.ndarray:
    x = x.to(DEVICE).contiguous()
    o = torch.empty_like(x)
    block = 1 << 16
    _apply[(triton.cdiv(x.numel(), block),)](x, o, x.numel(), FN=fn, BLOCK=block)
    return o.double().cpu().numpy()


def _grid():
    parts = [torch.linspace(-30, 30, 120001), torch.logspace(-30, 10, 8001), -torch.logspace(-30, 10, 8001),
             torch.tensor([0.0, 1e-45, -1e-45, 0.625, -0.625, 0.5, 1.0, 8.0, -8.0, 4096.0])]
    return torch.cat(parts).float()


X = _grid()

# name: (scipy reference, bound(x) on relative error, domain filter)
CASES = {
    "tanh": (np.tanh, lambda x: 3e-7, None),
    "sigmoid": (special.expit, lambda x: 3e-7, None),
    "log1p": (np.log1p, lambda x: 3e-7, lambda x: x > -0.999),
    "sinh": (np.sinh, lambda x: 4e-7, lambda x: x.abs() <= 88.0),
    "asinh": (np.arcsinh, lambda x: 3e-7, None),
    "atan": (np.arctan, lambda x: 3e-7, None),
    "erf": (special.erf, lambda x: 3e-7, None),
    # exp(-x^2 + ...) with x^2 rounded to fp32: the error grows like x^2 * 6e-8
    "erfc": (special.erfc, lambda x: 4e-7 + 1.5e-7 * x * x, None),
    "i0e": (special.i0e, lambda x: 6e-7, None),
    "i1e": (special.i1e, lambda x: 2e-6, None),
    "i0": (special.i0, lambda x: 1e-6 + 6e-8 * np.abs(x), lambda x: x.abs() <= 23.1),
    "i1": (special.i1, lambda x: 2e-6 + 6e-8 * np.abs(x), lambda x: x.abs() <= 23.1),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_special_function_accuracy(name):
    ref_fn, bound, domain = CASES[name]
    x = X if domain is None else X[domain(X)]
    got = run(getattr(S, "nlfs_" + name), x)
    x64 = x.double().numpy()
    with np.errstate(all="ignore"):
        ref = ref_fn(x64)
    assert np.isfinite(got).all(), f"{name}: non-finite output"
    # compare where the true value is a normal fp32 number (denormals flush on GPUs)
    ok = np.isfinite(ref) & (np.abs(ref) < 3e38) & ((np.abs(ref) >= TINY) | (ref == 0))
    rel = np.abs(got - ref) / np.maximum(np.abs(ref), TINY)
    allowed = bound(x64)
    bad = ok & (rel > allowed)
    if bad.any():
        i = int(np.argmax(np.where(ok, rel / allowed, 0)))
        lim = allowed if np.isscalar(allowed) else allowed[i]
        raise AssertionError(f"{name}: {int(bad.sum())} points over the bound; worst x={x64[i]!r} "
                             f"got {got[i]!r} ref {ref[i]!r} rel {rel[i]:.3g} > {lim:.3g}")
    # below the normal range the absolute error must still be tiny
    assert np.all(np.abs(got - ref)[np.isfinite(ref) & ~ok & (np.abs(ref) < 1)] < 1e-37)


def test_special_odd_even_symmetry():
    x = torch.linspace(0, 30, 3001).float()
    for name in ("tanh", "sinh", "asinh", "atan", "erf", "i1e", "i1"):
        f = getattr(S, "nlfs_" + name)
        assert np.array_equal(run(f, x), -run(f, -x)), name
    for name in ("i0e", "i0"):
        f = getattr(S, "nlfs_" + name)
        assert np.array_equal(run(f, x), run(f, -x)), name
    erfc = run(S.nlfs_erfc, x) + run(S.nlfs_erfc, -x)
    assert np.allclose(erfc, 2.0, rtol=0, atol=2.5e-7)
