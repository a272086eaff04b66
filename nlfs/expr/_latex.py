"""LaTeX for an expression, in the subset matplotlib's mathtext renders (so plot labels can use it).

The structure of the expression is kept (simplify it first for a readable form). Protected operators
are written with their rules where that is short (``plog(x)`` is ``\\log(|x| + \\epsilon)``,
``sqrt(x)`` is ``\\sqrt{|x|}``); ``log`` of anything but ``p`` is protected too (``\\ln(\\max(|x|,
\\epsilon))``), which the formula leaves implicit; ``\\epsilon = 10^{-7}``.
"""

from __future__ import annotations

import re

from ._node import Expr

_ATOM, _POW, _FRAC, _NEG, _MUL, _ADD = 10, 5, 6, 3, 2, 1
_L, _R = r"\left(", r"\right)"


def _call(fn: str) -> str:
    return fn.replace("{", "{{").replace("}", "}}") + _L + "{0}" + _R


# op -> (template over the arguments' LaTeX, precedence of the result). One entry per op of the
# table (a test checks that); the infix ops are handled in _render.
SPELLING: dict[str, tuple[str, int]] = {
    "add": ("{0} + {1}", _ADD), "sub": ("{0} - {1}", _ADD), "mul": ("{0} {1}", _MUL),
    "neg": ("-{0}", _NEG),
    "div": (r"\frac{{{0}}}{{{1}}}", _FRAC),
    "pdiv": (r"\frac{{{0}}}{{{1} + \epsilon}}", _FRAC),
    "pinv": (r"\frac{{1}}{{{0} + \epsilon}}", _FRAC),
    "aq": (r"\frac{{{0}}}{{\sqrt{{1 + {1}^{{2}}}}}}", _FRAC),
    "pow": (r"\left|{0}\right|^{{{1}}}", _POW),
    "square": ("{0}^{{2}}", _POW), "cube": ("{0}^{{3}}", _POW),
    "max": (r"\max\left({0}, {1}\right)", _ATOM), "min": (r"\min\left({0}, {1}\right)", _ATOM),
    "abs": (r"\left|{0}\right|", _ATOM),
    "sign": (_call(r"\mathrm{sign}"), _ATOM),
    "exp": ("e^{{{0}}}", _POW),
    "log": (_call(r"\log"), _ATOM),
    "plog": (r"\log\left(\left|{0}\right| + \epsilon\right)", _ATOM),
    "plog10": (r"\log_{{10}}\left(\left|{0}\right| + \epsilon\right)", _ATOM),
    "sqrt": (r"\sqrt{{\left|{0}\right|}}", _ATOM),
    "sin": (_call(r"\sin"), _ATOM), "cos": (_call(r"\cos"), _ATOM), "tanh": (_call(r"\tanh"), _ATOM),
    "sinh": (_call(r"\sinh"), _ATOM), "asinh": (_call(r"\mathrm{asinh}"), _ATOM),
    "atan": (_call(r"\arctan"), _ATOM), "erf": (_call(r"\mathrm{erf}"), _ATOM),
    "erfc": (_call(r"\mathrm{erfc}"), _ATOM), "sigmoid": (_call(r"\sigma"), _ATOM),
    "softplus": (_call(r"\mathrm{softplus}"), _ATOM),
    "bessel_i0": (_call("I_0"), _ATOM), "bessel_i1": (_call("I_1"), _ATOM),
    "bessel_i0e": (r"e^{{-\left|{0}\right|}} I_0\left({0}\right)", _MUL),
    "bessel_i1e": (r"e^{{-\left|{0}\right|}} I_1\left({0}\right)", _MUL),
}
# the ops over classes (CLASS_OPS), likewise
CLASS_SPELLING: dict[str, tuple[str, int]] = {"sum_classes": (r"\sum_{{c}} \left({0}\right)", _MUL)}
# where an argument sits in a spot that delimits it (a call, a fraction, an exponent): no parentheses
_DELIMITED = {"div", "pdiv", "pinv", "aq", "max", "min", "abs", "sign", "log", "plog", "plog10", "sqrt",
              "sin", "cos", "tanh", "sinh", "asinh", "atan", "erf", "erfc", "sigmoid", "softplus",
              "bessel_i0", "bessel_i1", "bessel_i0e", "bessel_i1e", "exp", "sum_classes"}
_GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda",
          "mu", "nu", "xi", "pi", "rho", "sigma", "tau", "phi", "chi", "psi", "omega"}


def latex_number(v: float, digits: int | None = None) -> str:
    """``v`` exactly (shortest round-trip) or to ``digits`` significant digits; powers of ten as
    ``\\times 10^{k}``."""
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    text = repr(v) if digits is None else f"{v:.{digits}g}"
    m = re.fullmatch(r"(-?[\d.]+)e([+-]\d+)", text)
    if m:
        mant, exp = m.group(1), int(m.group(2))
        return (f"10^{{{exp}}}" if mant == "1" else f"{mant} \\times 10^{{{exp}}}") if mant != "-1" \
            else f"-10^{{{exp}}}"
    return text


def latex_name(name: str) -> str:
    """``alpha`` -> ``\\alpha``, ``t3`` -> ``t_{3}``, ``k_1`` -> ``k_{1}``, ``gain`` -> ``\\mathrm{gain}``."""
    m = re.fullmatch(r"([A-Za-z]+)_?(\d*)", name)
    if not m:
        return r"\mathrm{" + name.replace("_", r"\_") + "}"
    base, sub = m.groups()
    base = "\\" + base if base in _GREEK else base if len(base) == 1 else r"\mathrm{" + base + "}"
    return base + (f"_{{{sub}}}" if sub else "")


def to_latex(expr: Expr, digits: int | None = None) -> str:
    """LaTeX (mathtext-compatible) for ``expr``; numbers exact unless ``digits`` is given."""
    out: dict[Expr, tuple[str, int]] = {}
    for node in expr.nodes():
        out[node] = _render(node, out, digits)
    return out[expr][0]


def _wrap(text: str, cond: bool) -> str:
    return f"{_L}{text}{_R}" if cond else text


def _render(node: Expr, out, digits) -> tuple[str, int]:
    op = node.op
    if op == "num":
        text = latex_number(node.value, digits)
        return text, _NEG if text.startswith("-") else _ATOM
    if op == "const":
        return latex_name(node.value), _ATOM
    if not node.args:
        return op, _ATOM
    template, prec = SPELLING[op] if op in SPELLING else CLASS_SPELLING[op]
    args = [out[a] for a in node.args]
    if op == "aq":  # b is squared: a superscript needs an atom below it
        return template.format(args[0][0], _wrap(args[1][0], args[1][1] < _ATOM)), prec
    if op in _DELIMITED:
        return template.format(*[t for t, _ in args]), prec
    (lt, lp), (rt, rp) = args[0], args[-1]
    if op == "neg":
        return template.format(_wrap(lt, lp < _MUL)), prec
    if op in ("square", "cube", "pow"):
        if op == "pow":  # |a|^b; a base that is already |x| keeps one pair of bars
            return (f"{lt}^{{{rt}}}" if node.args[0].op == "abs" else template.format(lt, rt)), prec
        return template.format(_wrap(lt, lp < _ATOM)), prec
    left = _wrap(lt, lp < prec)
    right = _wrap(rt, rp <= prec or (op == "add" and rt.startswith("-")))
    if op == "mul" and (right[0].isdigit() or right.startswith("-") or lp == _FRAC and rp == _FRAC):
        return f"{left} \\cdot {right}", prec
    return template.format(left, right), prec


__all__ = ["CLASS_SPELLING", "SPELLING", "latex_name", "latex_number", "to_latex"]
