"""The ops table checked against itself: partial-derivative rules against autograd of the forward
rule, torch against the float64 NumPy/SciPy reference, and the protected rules' finiteness."""

import numpy as np
import pytest
import torch

from nlfs.expr import MAXV, OPS
from nlfs.expr._math import NumpyMath, TorchMath

TM, NM = TorchMath(), NumpyMath()
UNARY = sorted(n for n, o in OPS.items() if o.arity == 1)
BINARY = sorted(n for n, o in OPS.items() if o.arity == 2)

# Points away from kinks/ties (where one-sided rules legitimately differ) but across each op's range.
_X = np.concatenate([np.linspace(-30, 30, 241), [-1e-3, 2e-3, 0.37, -0.91, 5e-5, 1e-8, 40.0, -50.0]])


def _points(arity):
    rng = np.random.default_rng(0)
    if arity == 1:
        return [_X + 1e-3 * rng.standard_normal(_X.shape)]
    a = rng.uniform(-6, 6, 400)
    b = rng.uniform(-6, 6, 400)
    return [a, b]


@pytest.mark.parametrize("name", UNARY + BINARY)
def test_partial_rules_match_autograd_of_forward(name):
    op = OPS[name]
    args = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in _points(op.arity)]
    out = op.forward(TM, *args)
    grads = torch.autograd.grad(out.sum(), args, allow_unused=True)
    rules = op.partials(TM, *[a.detach() for a in args], out.detach())
    for i, (g, r) in enumerate(zip(grads, rules)):
        g = torch.zeros_like(args[i]) if g is None else g
        r = torch.as_tensor(r, dtype=torch.float64).expand_as(g)
        torch.testing.assert_close(r, g, rtol=1e-9, atol=1e-12, msg=lambda m: f"{name} arg {i}: {m}")


@pytest.mark.parametrize("name", UNARY + BINARY)
def test_torch_forward_matches_float64_numpy_reference(name):
    op = OPS[name]
    pts = _points(op.arity)
    with np.errstate(all="ignore"):
        ref = np.asarray(op.forward(NM, *pts), dtype=np.float64)
    got = op.forward(TM, *[torch.tensor(a, dtype=torch.float64) for a in pts]).numpy()
    np.testing.assert_allclose(got, np.broadcast_to(ref, got.shape), rtol=1e-12, atol=1e-300)


EXTREMES = np.array([-1e10, -1e4, -88.0, -1.0, -1e-7, -1e-30, 0.0, 1e-30, 1e-7, 0.5, 1.0, 88.0, 1e4, 1e10])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", UNARY + BINARY)
def test_protected_rules_are_finite_on_extremes(name, dtype):
    op = OPS[name]
    if op.arity == 1:
        pts = [EXTREMES]
    else:
        a, b = np.meshgrid(EXTREMES, EXTREMES)
        pts = [a.ravel(), b.ravel()]
    args = [torch.tensor(a, dtype=dtype, requires_grad=True) for a in pts]
    out = op.forward(TM, *args)
    if not op.bounded:
        out = out.clamp(-MAXV, MAXV)
    assert torch.isfinite(out).all(), f"{name} value not finite"
    assert out.abs().max() <= MAXV * (1 + 1e-6)
    grads = torch.autograd.grad(out.sum(), args, allow_unused=True)
    for g in grads:
        assert g is None or torch.isfinite(g).all(), f"{name} gradient not finite"
    rules = op.partials(TM, *[a.detach() for a in args], op.forward(TM, *[a.detach() for a in args]))
    for r in rules:
        assert torch.isfinite(torch.as_tensor(r)).all(), f"{name} partial rule not finite"


def test_every_op_is_documented_and_named_consistently():
    for name, op in OPS.items():
        assert op.name == name and op.doc and op.arity in (1, 2)
