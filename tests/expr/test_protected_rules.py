"""The protected-domain rules pinned to literal values from the rule table in docs/losses.md (eps = 1e-7,
MAXV = 1e10, each clamp and floor), written out here by hand, independent of the ops table's own
constants and code: a wrong constant in the table, or in a backend's generated code, fails."""

import math

import numpy as np
import pytest
import torch

import nlfs
from nlfs.expr import OPS
from nlfs.expr._math import NumpyMath
from tests.conftest import require_backend

LN_EPS = -16.11809565095832  # ln(1e-7)
LN_MAXV = 23.025850929940457  # ln(1e10)

# (op, args, value): the table in docs/losses.md, one literal per rule
CASES = [
    # log(x) = ln(max(|x|, eps)), sqrt(x) = sqrt(max(|x|, eps))
    ("log", (0.0,), LN_EPS), ("log", (-1e-9,), LN_EPS), ("log", (-2.0,), math.log(2.0)),
    ("sqrt", (0.0,), 3.1622776601683794e-4), ("sqrt", (-4.0,), 2.0),
    # plog(x) = ln(|x| + eps), plog10, pinv(x) = 1/(x + eps), pdiv(a, b) = a/(b + eps)
    ("plog", (0.0,), LN_EPS), ("plog", (-1.0,), math.log(1.0000001)),
    ("plog10", (0.0,), -7.0), ("plog10", (-1.0,), math.log10(1.0000001)),
    ("pinv", (0.0,), 1e7), ("pinv", (1.0,), 1.0 / 1.0000001), ("pinv", (-1e-7,), 1e7),
    ("pdiv", (1.0, 0.0), 1e7), ("pdiv", (2.0, -1.0), 2.0 / -0.9999999),
    # denominators floored in magnitude at eps, keeping their sign (0 counts as positive)
    ("div", (1.0, 0.0), 1e7), ("div", (1.0, 1e-9), 1e7), ("div", (1.0, -1e-9), -1e7), ("div", (3.0, 2.0), 1.5),
    # exp, sinh, Bessel I0/I1, x**2, x**3, a**b = |a|**b clamp their input (output at most 1e10)
    ("exp", (1000.0,), 1e10), ("exp", (23.0,), math.exp(23.0)),
    ("sinh", (1000.0,), math.sinh(LN_MAXV)), ("sinh", (-1000.0,), -math.sinh(LN_MAXV)),
    ("square", (1e6,), 1e10), ("square", (-1e6,), 1e10), ("square", (3.0,), 9.0),
    ("cube", (1e4,), 1e10), ("cube", (-1e4,), -1e10), ("cube", (-2.0,), -8.0),
    ("pow", (-4.0, 0.5), 2.0), ("pow", (0.0, 0.5), math.sqrt(1e-7)), ("pow", (10.0, 100.0), 1e10),
    ("bessel_i0", (1000.0,), 836014003.64057),  # I0(ln 1e10), scipy.special.i0
    ("bessel_i0", (-1000.0,), 836014003.64057),
]


def _table(op, args):
    return float(np.asarray(OPS[op].forward(NumpyMath(), *[np.float64(a) for a in args])))


@pytest.mark.parametrize("op, args, value", CASES, ids=[f"{c[0]}{c[1]}" for c in CASES])
def test_ops_table_matches_the_readme_rule(op, args, value):
    assert _table(op, args) == pytest.approx(value, rel=1e-9, abs=0)


@pytest.mark.parametrize("op, args, value", CASES, ids=[f"{c[0]}{c[1]}" for c in CASES])
def test_cpp_generated_code_matches_the_readme_rule(op, args, value):
    require_backend("cpp")
    from nlfs.backends._cpp import op_forward

    got = op_forward(op, [args[0]], [args[-1]])[0]
    assert got == pytest.approx(value, rel=1e-9, abs=0)


def test_readme_constants():
    assert nlfs.expr.EPS == 1e-7 and nlfs.expr.MAXV == 1e10


@pytest.mark.parametrize("backend", ["torch", "cpp", "triton"])
def test_every_value_is_clamped_to_maxv_in_every_backend(backend):
    """A product 1e12 is held to 1e10, in every backend (fp64 logits); so is a sum and a quotient."""
    require_backend(backend)
    z = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    t = torch.tensor([0])
    for text, want in [("y*(z*1000000)*1000000", 1e10), ("-y*(z*1000000)*1000000", -1e10),
                       ("y*(1e10 + 1e10) + 0*p", 1e10), ("y*(z/0.0000000000001)", 1e7)]:  # floored
        got = nlfs.Loss(text, backend=backend, reduction="sum")(z, t)
        assert float(got) == pytest.approx(want, rel=1e-12), (text, backend)


def test_overflowing_numbers_and_constants_behave_the_same_in_every_backend():
    """1e308 would be inf in a float32 backend and a number in a float64 one: the parser refuses it, a
    constant that large is a ValueError at construction, and a constructed Expr holding one is lowered
    to float32's largest value, after which every backend applies the same clamps."""
    for text in ("1e308**2*p", "max(1e308, p)*y", "-1e39*p"):
        with pytest.raises(nlfs.expr.ExprSyntaxError, match="number too large"):
            nlfs.parse(text)
    for value in (1e308, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="float32's range"):
            nlfs.Loss("alpha*p", constants={"alpha": value})
        with pytest.raises(ValueError, match="float32's range"):
            nlfs.Loss("alpha*p", constants={"alpha": 1.0}).set_constants(alpha=value)
    e = nlfs.expr.Expr("mul", (nlfs.expr.Expr.num(1e308), nlfs.expr.Expr.leaf("p")))
    z, t = torch.randn(3, 4, dtype=torch.float64), torch.tensor([0, 1, 3])
    values = {}
    for backend in ("torch", "cpp", "triton"):
        try:
            require_backend(backend)
        except pytest.skip.Exception:
            continue
        for dtype in (torch.float32, torch.float64):
            values[backend, dtype] = float(nlfs.Loss(e, backend=backend)(z.to(dtype), t))
    assert set(values.values()) == {4e10}, values  # every element clamped to 1e10, 4 classes
