"""SymPy for an expression: the loss as mathematics, for a paper, a CAS or ``sympy.lambdify``.

Each op is written as the formula it computes away from its protected domains: ``plog(x)`` is
``log(|x| + eps)``, ``pdiv(a, b)`` is ``a/(b + eps)``, ``log(x)`` is ``log(|x|)`` and ``sqrt(x)`` is
``sqrt(|x|)`` exactly as in the ops table (SymPy drops the bars where the argument is positive, as
in ``log(p)``); the floors at eps of ``log``, ``sqrt`` and denominators and the +-1e10 overflow
clamps are left out (they act only within 1e-7 of a singularity or past 1e10). ``log(p)`` is
exact log-softmax. Numbers are kept exactly (integers as SymPy integers).
"""

from __future__ import annotations

from ._node import Expr
from ._ops import EPS


def _spellings(sp):
    eps = sp.Float(EPS)
    sigmoid = lambda x: 1 / (1 + sp.exp(-x))
    i0e = lambda x, n: sp.exp(-sp.Abs(x)) * sp.besseli(n, x)
    return {
        "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
        "div": lambda a, b: a / b, "neg": lambda x: -x,
        "pow": lambda a, b: sp.Abs(a) ** b, "square": lambda x: x**2, "cube": lambda x: x**3,
        "max": sp.Max, "min": sp.Min, "abs": sp.Abs, "sign": sp.sign,
        "pdiv": lambda a, b: a / (b + eps), "pinv": lambda x: 1 / (x + eps),
        "aq": lambda a, b: a / sp.sqrt(1 + b**2),
        "exp": sp.exp, "log": lambda x: sp.log(sp.Abs(x)), "plog": lambda x: sp.log(sp.Abs(x) + eps),
        "plog10": lambda x: sp.log(sp.Abs(x) + eps, 10), "sqrt": lambda x: sp.sqrt(sp.Abs(x)),
        "sin": sp.sin, "cos": sp.cos, "tanh": sp.tanh, "sinh": sp.sinh, "asinh": sp.asinh,
        "atan": sp.atan, "erf": sp.erf, "erfc": sp.erfc, "sigmoid": sigmoid,
        "softplus": lambda x: sp.log(1 + sp.exp(x)),
        "bessel_i0": lambda x: sp.besseli(0, x), "bessel_i1": lambda x: sp.besseli(1, x),
        "bessel_i0e": lambda x: i0e(x, 0), "bessel_i1e": lambda x: i0e(x, 1),
    }


_TABLE = None


def spellings() -> dict:
    global _TABLE
    if _TABLE is None:
        import sympy

        _TABLE = _spellings(sympy)
    return _TABLE


def number(v: float):
    import sympy

    return sympy.Integer(int(v)) if v == int(v) and abs(v) < 1e15 else sympy.Float(v)


def to_sympy(expr: Expr):
    """A SymPy expression for ``expr`` over real symbols ``y p z C`` (and one per named constant)."""
    import sympy

    table = spellings()
    symbols: dict[str, object] = {}

    def symbol(name: str, **assumptions):
        if name not in symbols:
            symbols[name] = sympy.Symbol(name, real=True, **assumptions)
        return symbols[name]

    leaf = {"y": lambda: symbol("y", nonnegative=True), "p": lambda: symbol("p", positive=True),
            "z": lambda: symbol("z"), "C": lambda: symbol("C", positive=True)}
    out: dict[Expr, object] = {}
    for node in expr.nodes():
        if node.op == "num":
            out[node] = number(node.value)
        elif node.op == "const":
            out[node] = symbol(node.value)
        elif not node.args:
            out[node] = leaf[node.op]()
        else:
            fn = table.get(node.op) or sympy.Function(node.op)  # an op over classes: opaque to SymPy
            out[node] = fn(*[out[a] for a in node.args])
    return out[expr]


__all__ = ["number", "spellings", "to_sympy"]
