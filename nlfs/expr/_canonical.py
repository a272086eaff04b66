"""Canonical form: trivially equal expressions (``a+b``/``b+a``, ``x*1``, ``--x``, ``a-b``/``-b+a``,
folded number subexpressions) map to one expression, so they share a hash in the search's
duplicate check. Sums and products are flattened, their operands sorted by printed form."""

from __future__ import annotations

import numpy as np

from ._node import Expr
from ._ops import MAXV, OPS

_NUMPY_MATH = None


def _fold(op: str, values: list[float]) -> float:
    global _NUMPY_MATH
    if _NUMPY_MATH is None:
        from ._math import NumpyMath

        _NUMPY_MATH = NumpyMath()
    with np.errstate(all="ignore"):
        out = OPS[op].forward(_NUMPY_MATH, *[np.float64(v) for v in values])
    return float(np.clip(out, -MAXV, MAXV))


def _terms(node: Expr, op: str, out: list[Expr]) -> None:
    if node.op == op:
        for a in node.args:
            _terms(a, op, out)
    else:
        out.append(node)


def _rebuild(op: str, items: list[Expr]) -> Expr:
    items = sorted(items, key=str)
    e = items[0]
    for x in items[1:]:
        e = Expr(op, (e, x))
    return e


def _sum(args: tuple[Expr, ...]) -> Expr:
    terms: list[Expr] = []
    for a in args:
        _terms(a, "add", terms)
    total = sum(t.value for t in terms if t.op == "num")
    rest = [t for t in terms if t.op != "num"]
    if total != 0.0 or not rest:
        rest.append(Expr.num(total))
    return rest[0] if len(rest) == 1 else _rebuild("add", rest)


def _product(args: tuple[Expr, ...]) -> Expr:
    factors: list[Expr] = []
    for a in args:
        _terms(a, "mul", factors)
    coeff = 1.0
    rest: list[Expr] = []
    for f in factors:
        while f.op == "neg":
            coeff = -coeff
            f = f.args[0]
        if f.op == "num":
            coeff *= f.value
        else:
            rest.append(f)
    if coeff == 0.0 or not rest:
        return Expr.num(coeff)
    body = rest[0] if len(rest) == 1 else _rebuild("mul", rest)
    if coeff == 1.0:
        return body
    if coeff == -1.0:
        return Expr("neg", (body,))
    return _rebuild("mul", [Expr.num(coeff)] + rest)


def _rule(node: Expr, args: tuple[Expr, ...]) -> Expr | None:
    op = node.op
    if not args:
        return None
    if all(a.op == "num" for a in args):
        return Expr.num(_fold(op, [a.value for a in args]))
    if op == "sub":
        a, b = args
        return _sum((a, _negate(b)))
    if op == "add":
        return _sum(args)
    if op == "mul":
        return _product(args)
    if op == "neg":
        return _negate(args[0])
    if op in ("max", "min"):
        a, b = sorted(args, key=str)
        return a if a is b else Expr(op, (a, b))
    if op == "div" and args[1].op == "num" and args[1].value == 1.0:
        return args[0]
    if op == "abs" and args[0].op in ("abs", "neg"):
        return Expr("abs", (args[0].args[0],)) if args[0].op == "neg" else args[0]
    return Expr(op, args)


def _negate(x: Expr) -> Expr:
    if x.op == "neg":
        return x.args[0]
    if x.op == "num":
        return Expr.num(-x.value)
    if x.op == "mul":
        return _product((Expr.num(-1.0), x))
    return Expr("neg", (x,))


def canonical(expr: Expr) -> Expr:
    """The canonical form of ``expr`` (idempotent)."""
    return expr.map_nodes(_rule)
