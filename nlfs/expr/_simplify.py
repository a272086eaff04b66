"""Readable formulas: an exact simplifier for display and export.

``simplify(e)`` rewrites ``e`` so that it computes the same value and the same gradient as ``e`` under
the ops table's protected rules, for every finite logit and every target in [0, 1] (class indices or
probabilities). Only rewrites that are exact there are made:

* an op whose arguments are all numbers becomes the number (the float64 reference, output clamp
  included), as ``specialize`` folds;
* ``0*x``, ``0/x``, ``pdiv(0, x)``, ``aq(0, x)`` are 0 (denominators never vanish; adjoint 0 to x);
* ``1*x``, ``x*1``, ``x/1``, ``x+0``, ``x-0``, ``--x``, ``max(x, x)``, ``min(x, x)`` are ``x`` and
  ``x - x`` is 0, ``x + x`` is ``2*x``, ``x*x`` is ``x**2``;
* signs are normalised: ``-1*x``, ``(-a)*b``, ``a + -b``, ``a - -b``, ``0 - x``, even functions of
  ``-x`` (``cos abs square bessel_i0 bessel_i0e``, the protected logs ``log plog plog10``, which read
  ``|x|``, and ``aq``'s denominator) and ``a + -2``, so ``y*log(-y)`` is ``y*log(y)``;
* ``max``/``min``/``abs``/``sign`` whose outcome a bound on their arguments decides (``y`` and ``p``
  lie in [0, 1], ``sqrt`` is at least sqrt(eps)...) are replaced by that outcome, with a margin so the
  float32 backends agree too; ties (``max(p, 0)`` at an underflowed p) are never decided;
* ``max(x, -x)`` is ``abs(x)``, and ``abs(x)`` of a term of the target alone (no ``p``, ``z`` or
  constant: no gradient, so a tie at 0 changes nothing) with ``x >= 0`` is ``x``: ``max(y, -y)`` is ``y``;
* ``max(x, log(x))`` is ``x`` and ``min(x, log(x))`` is ``log(x)`` for ``x >= 0`` (``log x <= x - 1 < x``,
  and the protected log of a tiny x is log(eps) < 0), so ``max(p, log(p))`` is ``p``.

A rewrite that drops an op's output clamp (``1*x`` -> ``x``) is made only where ``x`` is already
inside [-MAXV, MAXV]: an op's (clamped) value, ``y``, ``p``, ``C`` or such a number; ``z``, ``log(p)``
(exact log-softmax) and huge numbers keep the op. A rewrite never turns a protected ``log(1*p)`` into
``log(p)``, which lowers to log-softmax. Named constants are left alone: substitute them first
(``e.substitute(values)``) to fold them.
"""

from __future__ import annotations

import math

import numpy as np

from ._math import reference_value
from ._node import Expr
from ._ops import EPS, MAXV, OPS

INF = math.inf
_UNIT = (0.0, 1.0)
_LEAF_BOUNDS = {"y": _UNIT, "p": _UNIT, "C": (1.0, MAXV), "z": (-INF, INF)}
_LOGP = (-INF, 0.0)
# Monotone on the whole line: their bounds are the images of the argument's bounds.
_INCREASING = ("exp", "tanh", "sigmoid", "atan", "erf", "asinh", "sinh", "softplus", "cube")
_DECREASING = ("erfc",)


def _margin(v: float) -> float:
    """Slack for strict comparisons: float32 backends may round a bound by ~1e-7 relative."""
    return 1e-5 * (1.0 + abs(v))


class _Simplifier:
    def __init__(self):
        self.bounds: dict[Expr, tuple[float, float]] = {}

    # -- bounds ---------------------------------------------------------------------------------
    def bound(self, e: Expr) -> tuple[float, float]:
        hit = self.bounds.get(e)
        if hit is None:
            hit = self.bounds[e] = self._bound(e)
        return hit

    def _bound(self, e: Expr) -> tuple[float, float]:
        op = e.op
        if op == "num":
            return (e.value, e.value)
        if op == "const":
            return (-INF, INF)
        if op in _LEAF_BOUNDS:
            return _LEAF_BOUNDS[op]
        if op == "log" and e.args[0].op == "p":
            return _LOGP
        b = [self.bound(a) for a in e.args]
        lo, hi = self._op_bound(op, b)
        if math.isnan(lo) or math.isnan(hi):
            lo, hi = -INF, INF
        return (max(lo, -MAXV), min(hi, MAXV))  # every op's value is clamped to +-MAXV

    def _op_bound(self, op: str, b) -> tuple[float, float]:
        if op in _INCREASING:
            return (reference_value(op, [b[0][0]]), reference_value(op, [b[0][1]]))
        if op in _DECREASING:
            return (reference_value(op, [b[0][1]]), reference_value(op, [b[0][0]]))
        (lo, hi) = b[0]
        if op == "neg":
            return (-hi, -lo)
        if op == "add":
            return (lo + b[1][0], hi + b[1][1])
        if op == "sub":
            return (lo - b[1][1], hi - b[1][0])
        if op == "mul":
            with np.errstate(all="ignore"):
                ends = [x * w for x in (lo, hi) for w in b[1]]
            if any(math.isnan(v) for v in ends):  # 0 * inf
                return (-INF, INF)
            return (min(ends), max(ends))
        if op in ("max", "min"):
            f = max if op == "max" else min
            return (f(lo, b[1][0]), f(hi, b[1][1]))
        if op in ("abs", "square"):
            m_lo = 0.0 if lo <= 0.0 <= hi else min(abs(lo), abs(hi))
            m_hi = max(abs(lo), abs(hi))
            return (reference_value(op, [m_lo]), reference_value(op, [m_hi]))
        if op in ("sqrt", "log", "plog", "plog10"):  # increasing in |x|
            m_lo = 0.0 if lo <= 0.0 <= hi else min(abs(lo), abs(hi))
            return (reference_value(op, [m_lo]), reference_value(op, [max(abs(lo), abs(hi))]))
        if op == "sign":
            return (float(np.sign(lo)), float(np.sign(hi)))
        if op in ("sin", "cos"):
            return (-1.0, 1.0)
        if op == "bessel_i0":
            return (1.0, MAXV)
        if op == "bessel_i0e":
            return (0.0, 1.0)
        if op == "aq":  # |aq(a, b)| <= |a|, with a's sign
            return (min(lo, 0.0), max(hi, 0.0))
        return (-INF, INF)

    # -- rewriting ------------------------------------------------------------------------------
    def in_range(self, e: Expr) -> bool:
        """``e``'s value is inside [-MAXV, MAXV] as the backends feed it to an op (no clamp needed)."""
        if e.op == "num":
            return abs(e.value) <= MAXV
        if e.op == "log" and e.args[0].op == "p":
            return False  # exact log-softmax, not clamped
        return e.op in OPS or e.op in ("y", "p", "C")

    def rule(self, node: Expr, args: tuple[Expr, ...]) -> Expr | None:
        if not args:
            return None
        out = self._rewrite(node.op, args)
        if out is None:
            out = Expr(node.op, args)
        # lowering reads log(p) as exact log-softmax: never make one out of a protected log
        if out.op == "log" and out.args[0].op == "p" and not (node.op == "log" and node.args[0].op == "p"):
            return Expr("log", (Expr("abs", (out.args[0],)),))  # the protected log of p, exactly
        return out

    def _rewrite(self, op: str, args: tuple[Expr, ...]) -> Expr | None:
        if all(a.op == "num" for a in args) and op in OPS:  # sum_classes(2) is 2*C, not a number
            v = reference_value(op, [a.value for a in args])
            if math.isfinite(v):
                return Expr.num(v + 0.0)  # + 0.0: -0.0 and 0.0 print alike
        fn = getattr(self, "_" + op, None)
        return fn(*args) if fn is not None else None

    def _num(self, e: Expr, v: float) -> bool:
        return e.op == "num" and e.value == v

    def _neg_of(self, e: Expr) -> Expr | None:
        """An x with ``e == -x`` exactly (value, clamps and gradient), when one is at hand."""
        if e.op == "neg" and self.in_range(e.args[0]):
            return e.args[0]
        if e.op == "num" and e.value < 0.0:
            return Expr.num(-e.value)
        if e.op == "mul":
            a, b = e.args
            if a.op == "num" and a.value < 0.0:
                return b if a.value == -1.0 and self.in_range(b) else Expr("mul", (Expr.num(-a.value), b))
            for k in (0, 1):
                x = e.args[k]
                if x.op == "neg" and self.in_range(x.args[0]):
                    return Expr("mul", (x.args[0], b) if k == 0 else (a, x.args[0]))
        return None

    def _neg(self, x):
        inner = self._neg_of(x)
        if inner is not None:
            return inner
        if x.op == "sub":
            return Expr("sub", (x.args[1], x.args[0]))  # -(a - b) = b - a, rounding is symmetric
        return None

    def _add(self, a, b):
        for x, o in ((a, b), (b, a)):
            if self._num(x, 0.0) and self.in_range(o):
                return o
        if a is b and self.in_range(a):
            return Expr("mul", (Expr.num(2.0), a))
        nb = self._neg_of(b)
        if nb is not None:
            return Expr("sub", (a, nb))
        na = self._neg_of(a)
        if na is not None:
            return Expr("sub", (b, na))
        return None

    def _sub(self, a, b):
        if self._num(b, 0.0) and self.in_range(a):
            return a
        if a is b:
            return Expr.num(0.0)
        if self._num(a, 0.0):
            return Expr("neg", (b,))
        nb = self._neg_of(b)
        if nb is not None:
            return Expr("add", (a, nb))
        return None

    def _mul(self, a, b):
        if self._num(a, 0.0) or self._num(b, 0.0):
            return Expr.num(0.0)
        for x, o in ((a, b), (b, a)):
            if self._num(x, 1.0) and self.in_range(o):
                return o
            if self._num(x, -1.0):
                return Expr("neg", (o,))
        if b.op == "num" and a.op != "num":
            return Expr("mul", (b, a))  # the coefficient first
        na, nb = self._neg_of(a), self._neg_of(b)
        if nb is not None and (na is not None or a.op == "num"):
            return Expr("mul", (na if na is not None else Expr.num(-a.value), nb))  # (-a)*(-b); 2*-x = -2*x
        if a is b and self.in_range(a):
            return Expr("square", (a,))
        return None

    def _div(self, a, b):
        if self._num(a, 0.0):
            return Expr.num(0.0)
        if self._num(b, 1.0) and self.in_range(a):
            return a
        na = self._neg_of(a)
        if na is not None:
            return Expr("neg", (Expr("div", (na, b)),))
        return None

    def _pdiv(self, a, b):
        if self._num(a, 0.0):
            return Expr.num(0.0)
        return None

    def _aq(self, a, b):
        if self._num(a, 0.0):
            return Expr.num(0.0)
        nb = self._neg_of(b)
        if nb is not None:  # aq is even in b, value and gradient
            return Expr("aq", (a, nb))
        return None

    def _even(self, op, x):
        nx = self._neg_of(x)
        if nx is not None:
            return Expr(op, (nx,))
        if x.op == "abs" and op == "abs":
            return x
        return None

    def _cos(self, x):
        return self._even("cos", x)

    def _log(self, x):  # every log reads |x| (log(p) is exact log-softmax, and -p is not p)
        return self._even("log", x)

    def _plog(self, x):
        return self._even("plog", x)

    def _plog10(self, x):
        return self._even("plog10", x)

    def _square(self, x):
        return self._even("square", x)

    def _bessel_i0(self, x):
        return self._even("bessel_i0", x)

    def _bessel_i0e(self, x):
        return self._even("bessel_i0e", x)

    def _abs(self, x):
        lo, hi = self.bound(x)
        if lo > _margin(lo) and self.in_range(x):
            return x
        if lo >= 0.0 and _target_only(x) and self.in_range(x):
            return x  # a tie at 0 only matters to a gradient, and a term of the target has none
        if hi < -_margin(hi) and self.in_range(x):
            return Expr("neg", (x,))
        return self._even("abs", x)

    def _sign(self, x):
        lo, hi = self.bound(x)
        if lo > _margin(lo):
            return Expr.num(1.0)
        if hi < -_margin(hi):
            return Expr.num(-1.0)
        return None

    def _max(self, a, b):
        return self._extremum(a, b, True)

    def _min(self, a, b):
        return self._extremum(a, b, False)

    def _extremum(self, a, b, is_max):
        if a is b and self.in_range(a):
            return a  # the tie rule splits the gradient evenly: 0.5 + 0.5
        for x, lx in ((a, b), (b, a)):  # log(x) <= x - 1 < x for x >= 0 (log(eps) < 0 below eps)
            if lx.op == "log" and lx.args[0] is x and self.bound(x)[0] >= 0.0:
                out = x if is_max else lx
                if self.in_range(out):
                    return out
        (alo, ahi), (blo, bhi) = self.bound(a), self.bound(b)
        if not is_max:  # min(a, b) = a when a is always below b
            alo, ahi, blo, bhi = -ahi, -alo, -bhi, -blo
        if alo > bhi + _margin(bhi) and self.in_range(a):
            return a
        if blo > ahi + _margin(ahi) and self.in_range(b):
            return b
        if is_max and (self._neg_of(b) is a or self._neg_of(a) is b):
            return self._abs(a if self._neg_of(b) is a else b) or Expr("abs", (a if self._neg_of(b) is a else b,))
        return None


def _target_only(e: Expr) -> bool:
    return not (e.leaves & {"p", "z"}) and not e.constants


def simplify(expr: Expr, max_passes: int = 8) -> Expr:
    """``expr`` rewritten into a smaller, readable form with the same value and gradient (see the
    module doc); idempotent."""
    s = _Simplifier()
    for _ in range(max_passes):
        out = expr.map_nodes(s.rule)
        if out is expr:
            break
        expr = out
    return expr


def round_numbers(expr: Expr, digits: int = 4) -> Expr:
    """``expr`` with every number rounded to ``digits`` significant digits, for display only."""
    def rnd(n, args):
        if n.op == "num" and n.value != 0.0:
            return Expr.num(float(f"{n.value:.{digits}g}"))
        return None

    return expr.map_nodes(rnd)


__all__ = ["EPS", "round_numbers", "simplify"]
