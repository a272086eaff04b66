"""Print an expression as infix text that ``parse`` reads back to the identical expression."""

from __future__ import annotations

from ._ops import OPS

_ATOM = 10  # precedence of leaves, calls and non-negative numbers
_NEG = 3


def format_number(v: float) -> str:
    if v == int(v) and abs(v) < 1e15 and not (v == 0 and str(v).startswith("-")):
        return str(int(v))
    return repr(v)


def _prec(node) -> int:
    if node.op == "num":
        return _ATOM if node.value >= 0 and not str(node.value).startswith("-") else _NEG
    spec = OPS.get(node.op)
    if spec is None or not spec.symbol or node.op in ("square", "cube"):
        return 4 if node.op in ("square", "cube") else _ATOM
    if node.op == "pow" and _is_small_int_exponent(node):
        return _ATOM  # printed as a call, see below
    return spec.precedence


def _is_small_int_exponent(node) -> bool:
    b = node.args[1]
    return b.op == "num" and b.value in (2.0, 3.0)


def to_text(root) -> str:
    text: dict[int, str] = {}
    for node in root.nodes():
        text[id(node)] = _render(node, text)
    return text[id(root)]


def _wrap(s: str, cond: bool) -> str:
    return f"({s})" if cond else s


def _render(node, text) -> str:
    op = node.op
    if op == "num":
        return format_number(node.value)
    if op == "const":
        return node.value
    if not node.args:
        return op
    args = [text[id(a)] for a in node.args]
    if op in ("square", "cube"):
        return _wrap(args[0], _prec(node.args[0]) < _ATOM) + ("**2" if op == "square" else "**3")
    if op == "neg":
        child = node.args[0]
        # -(2) keeps neg-of-a-number distinct from the literal -2
        paren = child.op == "num" and _prec(child) == _ATOM or _prec(child) < _NEG
        return "-" + _wrap(args[0], paren)
    spec = OPS.get(op)  # None: an op over classes, printed as a call
    if spec is not None and spec.arity == 2 and spec.symbol and not (op == "pow" and _is_small_int_exponent(node)):
        p = spec.precedence
        left, right = node.args
        if op == "pow":  # right-associative, operands must be atoms
            lp = _prec(left) < _ATOM
            rp = _prec(right) < _ATOM
        else:
            lp = _prec(left) < p
            rp = _prec(right) <= p
        return f"{_wrap(args[0], lp)} {spec.symbol} {_wrap(args[1], rp)}"
    return f"{op}({', '.join(args)})"
