"""The ops table: the single source of truth for every primitive of the loss language.

Each :class:`Op` holds its name, arity, printed spelling, forward maths and partial derivatives.
The maths is written once, against an abstract *math namespace* ``m`` (see ``_math.py``); each
backend supplies a namespace that spells the primitives its own way (``torch.exp``, ``tl.exp``,
``std::exp``, ``np.exp``), so every backend computes exactly the same protected function.

Protected-domain rules (identical in every backend; eps = 1e-7 as in the NLFS paper):

* ``log(x)  = ln(max(|x|, eps))``; ``sqrt(x) = sqrt(max(|x|, eps))`` (EvoMAL's protected forms).
  ``log(p)`` applied directly to the softmax leaf is evaluated exactly as log-softmax of the logits.
* ``plog(x) = ln(|x| + eps)``, ``plog10(x) = log10(|x| + eps)``, ``pinv(x) = 1/(x + eps)`` and
  ``pdiv(a, b) = a/(b + eps)`` are the NLFS paper's own protected operators.
* Every denominator is floored in magnitude at eps, keeping its sign (0 counts as positive).
* ``exp``, ``sinh``, ``bessel_i0``/``bessel_i1``, ``x**2``, ``x**3`` and ``a**b`` clamp their input so
  the output stays below MAXV = 1e10; ``a**b = |a|**b`` (``exp(b*log(max(|a|, eps)))``).
* Every node's value is clamped to [-MAXV, MAXV] and every adjoint (dL/dnode) is clamped to the same
  range, so finite input never yields NaN or Inf in the loss or in the gradient, in fp32 or fp64.
  The clamp passes gradient where the unclamped value is inside the range (``torch.clamp``'s rule).
* ``max``/``min`` split the gradient evenly at ties, ``abs`` has gradient 0 at 0 (PyTorch's rules).

Every op of ``OPS`` is elementwise over the (N, C) batch; the fused kernels (C++, Triton) are generated
from it. ``CLASS_OPS`` holds the ops over a row's classes (``sum_classes``, which NCE needs), written against
the namespace's row-sum primitive ``m.sum_classes``: the fused kernels generate them from this table too,
evaluating whole rows (a row reduction between the argument's forward and its consumers; backward gives
every class the row sum of the adjoints times the op's partial). A backend that cannot lower them refuses
a program that uses one (``Backend.refuses``), and ``backend="auto"`` then picks one that can.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

EPS = 1e-7
MAXV = 1e10
LOGMAX = math.log(MAXV)  # exp(LOGMAX) == MAXV
SQRTMAX = math.sqrt(MAXV)
CBRTMAX = MAXV ** (1.0 / 3.0)
LN10 = math.log(10.0)
TWO_OVER_SQRTPI = 2.0 / math.sqrt(math.pi)
TIE_EPS = 1e-6  # |x| below which x/x-style limits use their value at 0 (bessel_i1, bessel_i1e)


@dataclass(frozen=True)
class Op:
    """A primitive of the loss language.

    ``forward(m, *args)`` returns the unclamped value; ``partials(m, *args, out)`` returns one partial
    derivative per argument, given the unclamped value ``out``. ``bounded`` ops cannot leave
    [-MAXV, MAXV] for inputs inside it, so backends may skip their output clamp.
    """

    name: str
    arity: int
    forward: Callable
    partials: Callable
    doc: str
    symbol: str | None = None  # infix spelling for binary operators, prefix for neg
    precedence: int = 0  # for infix printing
    commutative: bool = False
    bounded: bool = False
    aliases: tuple[str, ...] = field(default=())
    over_classes: bool = False  # the value at a class depends on the whole row (CLASS_OPS)


def _safe_den(m, d):
    """Floor |d| at EPS keeping its sign; 0 counts as positive."""
    # 0*d keeps the floor in d's dtype (a bare float would be float32 in torch.where)
    return m.where(m.abs(d) >= EPS, d, m.where(d >= 0.0, 0.0 * d + EPS, 0.0 * d - EPS))


def _den_ok(m, d):
    return m.abs(d) >= EPS


def _cosh_clamped(m, x):
    xc = m.clamp(x, -LOGMAX, LOGMAX)
    return 0.5 * (m.exp(xc) + m.exp(-xc))


def _tie(m, a, b):
    """d max(a, b)/da: 1 where a > b, 0.5 at a tie, 0 otherwise."""
    return m.where(a > b, 1.0, m.where(a < b, 0.0, 0.5))


def _x_or_one(m, x):
    return m.where(m.abs(x) < TIE_EPS, 1.0, x)


def _pow_inner(m, a, b):
    return b * m.log(m.clamp(m.abs(a), EPS, None))


_OPS: list[Op] = [
    # ---- binary arithmetic ------------------------------------------------------------------
    Op("add", 2, lambda m, a, b: a + b, lambda m, a, b, o: (1.0, 1.0), "a + b",
       symbol="+", precedence=1, commutative=True),
    Op("sub", 2, lambda m, a, b: a - b, lambda m, a, b, o: (1.0, -1.0), "a - b",
       symbol="-", precedence=1),
    Op("mul", 2, lambda m, a, b: a * b, lambda m, a, b, o: (b, a), "a * b",
       symbol="*", precedence=2, commutative=True),
    Op("div", 2, lambda m, a, b: a / _safe_den(m, b),
       lambda m, a, b, o: (1.0 / _safe_den(m, b),
                           m.where(_den_ok(m, b), -o / _safe_den(m, b), 0.0)),
       "a / b, |b| floored at eps", symbol="/", precedence=2),
    Op("pow", 2, lambda m, a, b: m.exp(m.clamp(_pow_inner(m, a, b), None, LOGMAX)),
       lambda m, a, b, o: (
           m.where(_pow_inner(m, a, b) <= LOGMAX,
                   m.where(m.abs(a) >= EPS, b * o / _safe_den(m, a), 0.0), 0.0),
           m.where(_pow_inner(m, a, b) <= LOGMAX, o * m.log(m.clamp(m.abs(a), EPS, None)), 0.0)),
       "|a| ** b = exp(b*log(max(|a|, eps))), exponent clamped", symbol="**", precedence=4),
    Op("max", 2, lambda m, a, b: m.maximum(a, b), lambda m, a, b, o: (_tie(m, a, b), _tie(m, b, a)),
       "max(a, b)", commutative=True),
    Op("min", 2, lambda m, a, b: m.minimum(a, b), lambda m, a, b, o: (_tie(m, b, a), _tie(m, a, b)),
       "min(a, b)", commutative=True),
    Op("pdiv", 2, lambda m, a, b: a / _safe_den(m, b + EPS),
       lambda m, a, b, o: (1.0 / _safe_den(m, b + EPS),
                           m.where(_den_ok(m, b + EPS), -o / _safe_den(m, b + EPS), 0.0)),
       "a / (b + eps) (NLFS protected division)"),
    Op("aq", 2, lambda m, a, b: a / m.sqrt(1.0 + b * b),
       lambda m, a, b, o: (1.0 / m.sqrt(1.0 + b * b), -o * b / (1.0 + b * b)),
       "a / sqrt(1 + b**2) (analytic quotient)"),
    # ---- unary ------------------------------------------------------------------------------
    Op("neg", 1, lambda m, x: -x, lambda m, x, o: (-1.0,), "-x", symbol="-", precedence=3),
    Op("abs", 1, lambda m, x: m.abs(x), lambda m, x, o: (m.sign(x),), "|x|"),
    Op("sign", 1, lambda m, x: m.sign(x), lambda m, x, o: (0.0 * x,), "sign(x)", bounded=True),
    Op("square", 1, lambda m, x: m.clamp(x, -SQRTMAX, SQRTMAX) * m.clamp(x, -SQRTMAX, SQRTMAX),
       lambda m, x, o: (m.where(m.abs(x) <= SQRTMAX, 2.0 * x, 0.0),), "x**2", bounded=True),
    Op("cube", 1, lambda m, x: m.clamp(x, -CBRTMAX, CBRTMAX) * m.clamp(x, -CBRTMAX, CBRTMAX)
       * m.clamp(x, -CBRTMAX, CBRTMAX),
       lambda m, x, o: (m.where(m.abs(x) <= CBRTMAX, 3.0 * x * x, 0.0),), "x**3", bounded=True),
    Op("exp", 1, lambda m, x: m.exp(m.clamp(x, None, LOGMAX)),
       lambda m, x, o: (m.where(x <= LOGMAX, o, 0.0),), "exp(x), x clamped at ln(MAXV)",
       bounded=True),
    Op("log", 1, lambda m, x: m.log(m.clamp(m.abs(x), EPS, None)),
       lambda m, x, o: (m.where(m.abs(x) >= EPS, 1.0 / _safe_den(m, x), 0.0),),
       "ln(max(|x|, eps)); log(p) is exact log-softmax", bounded=True),
    Op("plog", 1, lambda m, x: m.log(m.abs(x) + EPS),
       lambda m, x, o: (m.sign(x) / (m.abs(x) + EPS),), "ln(|x| + eps) (NLFS)", bounded=True),
    Op("plog10", 1, lambda m, x: m.log(m.abs(x) + EPS) * (1.0 / LN10),
       lambda m, x, o: (m.sign(x) / ((m.abs(x) + EPS) * LN10),), "log10(|x| + eps) (NLFS)",
       bounded=True),
    Op("sqrt", 1, lambda m, x: m.sqrt(m.clamp(m.abs(x), EPS, None)),
       lambda m, x, o: (m.where(m.abs(x) >= EPS, m.sign(x) * 0.5 / o, 0.0),),
       "sqrt(max(|x|, eps))", bounded=True),
    Op("pinv", 1, lambda m, x: 1.0 / _safe_den(m, x + EPS),
       lambda m, x, o: (m.where(_den_ok(m, x + EPS), -o * o, 0.0),), "1 / (x + eps) (NLFS)",
       bounded=True),
    Op("sin", 1, lambda m, x: m.sin(x), lambda m, x, o: (m.cos(x),), "sin(x)", bounded=True),
    Op("cos", 1, lambda m, x: m.cos(x), lambda m, x, o: (-m.sin(x),), "cos(x)", bounded=True),
    Op("tanh", 1, lambda m, x: m.tanh(x), lambda m, x, o: (1.0 - o * o,), "tanh(x)", bounded=True),
    Op("sinh", 1, lambda m, x: m.sinh(m.clamp(x, -LOGMAX, LOGMAX)),
       lambda m, x, o: (m.where(m.abs(x) <= LOGMAX, _cosh_clamped(m, x), 0.0),),
       "sinh(x), x clamped to +-ln(MAXV)", bounded=True),
    Op("asinh", 1, lambda m, x: m.asinh(x), lambda m, x, o: (1.0 / m.sqrt(1.0 + x * x),),
       "asinh(x)", bounded=True),
    Op("atan", 1, lambda m, x: m.atan(x), lambda m, x, o: (1.0 / (1.0 + x * x),), "atan(x)",
       bounded=True),
    Op("erf", 1, lambda m, x: m.erf(x),
       lambda m, x, o: (TWO_OVER_SQRTPI * m.exp(-m.clamp(x * x, None, 1e4)),), "erf(x)",
       bounded=True),
    Op("erfc", 1, lambda m, x: m.erfc(x),
       lambda m, x, o: (-TWO_OVER_SQRTPI * m.exp(-m.clamp(x * x, None, 1e4)),), "erfc(x)",
       bounded=True),
    Op("sigmoid", 1, lambda m, x: m.sigmoid(x), lambda m, x, o: (o * (1.0 - o),), "sigmoid(x)",
       bounded=True),
    Op("softplus", 1, lambda m, x: m.maximum(x, 0.0) + m.log1p(m.exp(-m.abs(x))),
       lambda m, x, o: (m.sigmoid(x),), "ln(1 + exp(x)), computed stably"),
    Op("bessel_i0", 1, lambda m, x: m.i0(m.clamp(x, -LOGMAX, LOGMAX)),
       lambda m, x, o: (m.where(m.abs(x) <= LOGMAX, m.i1(m.clamp(x, -LOGMAX, LOGMAX)), 0.0),),
       "I0(x), x clamped to +-ln(MAXV)", bounded=True),
    Op("bessel_i0e", 1, lambda m, x: m.i0e(x),
       lambda m, x, o: (m.i1e(x) - m.sign(x) * o,), "exp(-|x|) I0(x)", bounded=True),
    Op("bessel_i1", 1, lambda m, x: m.i1(m.clamp(x, -LOGMAX, LOGMAX)),
       lambda m, x, o: (m.where(m.abs(x) <= LOGMAX,
                                m.where(m.abs(x) < TIE_EPS, 0.5,
                                        m.i0(m.clamp(x, -LOGMAX, LOGMAX)) - o / _x_or_one(m, x)),
                                0.0),),
       "I1(x), x clamped to +-ln(MAXV)", bounded=True),
    Op("bessel_i1e", 1, lambda m, x: m.i1e(x),
       lambda m, x, o: (m.where(m.abs(x) < TIE_EPS, 0.5 - m.abs(x),  # series: 1/2 - |x| + O(x^2)
                                m.i0e(x) - o * (m.sign(x) + 1.0 / _x_or_one(m, x))),),
       "exp(-|x|) I1(x)", bounded=True),
]

OPS: dict[str, Op] = {op.name: op for op in _OPS}

# Ops over a row's classes. ``sum_classes(x)`` is the sum of x over the classes of its row, the same at
# every class (Normalized CE's denominator, Ma et al. 2020). An op over classes has one value per row, so
# its partial is d value / d x_j at each class j: here 1, and the adjoint of x at class j is the sum of the
# row's adjoints of the output (the torch backend's autograd forms it from ``forward``; the fused kernels
# from this partial). Nesting (a sum inside a sum) is evaluated node by node like any other op.
CLASS_OPS: dict[str, Op] = {op.name: op for op in [
    Op("sum_classes", 1, lambda m, x: m.sum_classes(x), lambda m, x, o: (1.0,),
       "sum of x over the classes of its row (the same at every class)", over_classes=True),
]}

# Functions a user may call by name in a string (binary infix ops are also callable: add(a, b)).
CALLABLE: dict[str, Op] = {op.name: op for op in _OPS} | CLASS_OPS
CALLABLE["ln"] = OPS["log"]

LEAVES = ("y", "p", "z", "C")


def op(name: str) -> Op:
    """An elementwise op or an op over classes, by name."""
    try:
        return OPS[name] if name in OPS else CLASS_OPS[name]
    except KeyError:
        raise KeyError(f"unknown op {name!r}; known: {', '.join(sorted(OPS | CLASS_OPS))}") from None
