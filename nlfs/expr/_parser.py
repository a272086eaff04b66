"""Parse infix loss expressions, as pasted from a paper or from Python.

Grammar (Python's precedence: ``**`` binds tighter than unary minus, which binds tighter than ``*``)::

    expr  := term (("+" | "-") term)*
    term  := unary (("*" | "/") unary)*
    unary := "-" unary | power
    power := atom ("**" unary)?
    atom  := NUMBER | NAME | NAME "(" expr ("," expr)* ")" | "(" expr ")"

``x**2`` and ``x**3`` become the exact ``square``/``cube`` ops; any other ``a**b`` is ``|a|**b``.
Names ``y p z C`` are leaves; other bare names are named constants; ``name(...)`` calls an op.

Limits (anything beyond raises :class:`ExprSyntaxError`, never ``RecursionError``): at most
``MAX_NESTING`` = 100 nested levels of parentheses, calls, unary minus and ``**`` exponents; an
expression tree at most ``MAX_DEPTH`` = 200 deep (a sum of 300 terms is 300 deep); numbers at most
float32's largest finite value, 3.4028235e38 (beyond, a float32 backend would hold inf).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ._node import Expr
from ._ops import CALLABLE, LEAVES, OPS
from ._program import NUM_LIMIT

MAX_NESTING = 100
MAX_DEPTH = 200


class ExprSyntaxError(ValueError):
    """A malformed expression; ``token`` and ``position`` say where."""

    def __init__(self, message: str, token: str, position: int, text: str):
        caret = " " * position + "^"
        super().__init__(f"{message} at position {position} (token {token!r})\n  {text}\n  {caret}")
        self.token = token
        self.position = position


@dataclass(frozen=True)
class _Tok:
    kind: str  # num, name, op, end
    text: str
    pos: int


_TOKEN_RE = re.compile(
    r"\s*(?:(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)|(?P<name>[A-Za-z_][A-Za-z_0-9]*)"
    r"|(?P<op>\*\*|[-+*/(),]))"
)


def tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    n = len(text)
    while pos < n:
        if text[pos].isspace():
            pos += 1
            continue
        m = _TOKEN_RE.match(text, pos)
        if m is None or m.end() == pos:
            raise ExprSyntaxError("unexpected character", text[pos], pos, text)
        kind = m.lastgroup
        start = m.start(kind)
        toks.append(_Tok(kind, m.group(kind), start))
        pos = m.end()
    toks.append(_Tok("end", "end of input", n))
    return toks


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = tokenize(text)
        self.i = 0
        self.nesting = 0

    def nest(self, tok: _Tok) -> None:
        """One level deeper (the caller's ``finally`` undoes it): refused beyond MAX_NESTING, long
        before Python's recursion limit."""
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            self.fail(f"nesting deeper than {MAX_NESTING} levels", tok)

    def peek(self, k: int = 0) -> _Tok:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def take(self) -> _Tok:
        t = self.toks[self.i]
        self.i += 1
        return t

    def fail(self, message: str, tok: _Tok | None = None):
        tok = tok or self.peek()
        raise ExprSyntaxError(message, tok.text, tok.pos, self.text)

    def expect(self, text: str) -> _Tok:
        t = self.peek()
        if t.text != text or t.kind == "end":
            self.fail(f"expected {text!r}")
        return self.take()

    def parse(self) -> Expr:
        if self.peek().kind == "end":
            self.fail("empty expression")
        e = self.expr()
        if self.peek().kind != "end":
            self.fail("unexpected token")
        if e.depth > MAX_DEPTH:
            raise ExprSyntaxError(f"expression tree deeper than {MAX_DEPTH} ({e.depth})", self.toks[0].text, 0,
                                  self.text)
        return e

    def expr(self) -> Expr:
        e = self.term()
        while self.peek().kind == "op" and self.peek().text in "+-":
            op = self.take().text
            rhs = self.term()
            e = Expr("add" if op == "+" else "sub", (e, rhs))
        return e

    def term(self) -> Expr:
        e = self.unary()
        while self.peek().kind == "op" and self.peek().text in ("*", "/"):
            op = self.take().text
            rhs = self.unary()
            e = Expr("mul" if op == "*" else "div", (e, rhs))
        return e

    def unary(self) -> Expr:
        t = self.peek()
        if t.kind == "op" and t.text == "-":
            self.take()
            nxt, after = self.peek(), self.peek(1)
            if nxt.kind == "num" and not (after.kind == "op" and after.text == "**"):
                return Expr.num(-self.number())
            self.nest(t)
            try:
                return Expr("neg", (self.unary(),))
            finally:
                self.nesting -= 1
        if t.kind == "op" and t.text == "+":
            self.fail("unary '+' is not supported")
        return self.power()

    def power(self) -> Expr:
        base = self.atom()
        if self.peek().kind == "op" and self.peek().text == "**":
            self.nest(self.take())
            try:
                exponent = self.unary()
            finally:
                self.nesting -= 1
            if exponent.op == "num" and exponent.value in (2.0, 3.0):
                return Expr("square" if exponent.value == 2.0 else "cube", (base,))
            return Expr("pow", (base, exponent))
        return base

    def atom(self) -> Expr:
        t = self.peek()
        if t.kind == "num":
            return Expr.num(self.number())
        if t.kind == "op" and t.text == "(":
            self.nest(self.take())
            try:
                e = self.expr()
                self.expect(")")
            finally:
                self.nesting -= 1
            return e
        if t.kind == "name":
            self.take()
            if self.peek().kind == "op" and self.peek().text == "(":
                return self.call(t)
            if t.text in LEAVES:
                return Expr.leaf(t.text)
            if t.text in OPS or t.text in CALLABLE:
                self.fail(f"function {t.text!r} needs arguments", t)
            return Expr.const(t.text)
        if t.kind == "end":
            self.fail("unexpected end of input", t)
        self.fail("unexpected token", t)

    def number(self) -> float:
        t = self.take()
        value = float(t.text)
        if value > NUM_LIMIT:  # inf in a float32 backend, finite in a float64 one
            self.fail(f"number too large (beyond float32's {NUM_LIMIT:.8g})", t)
        return value

    def call(self, name_tok: _Tok) -> Expr:
        spec = CALLABLE.get(name_tok.text)
        if spec is None:
            self.fail("unknown function", name_tok)
        self.nest(self.expect("("))
        try:
            return self._call_args(name_tok, spec)
        finally:
            self.nesting -= 1

    def _call_args(self, name_tok: _Tok, spec) -> Expr:
        args = [self.expr()]
        while self.peek().kind == "op" and self.peek().text == ",":
            self.take()
            args.append(self.expr())
        close = self.peek()
        if close.text != ")" or close.kind == "end":
            self.fail("expected ')'")
        if len(args) != spec.arity:
            self.fail(f"{name_tok.text} takes {spec.arity} argument(s), got {len(args)}", name_tok)
        self.take()
        return Expr(spec.name, tuple(args))


def parse(text: str) -> Expr:
    """Parse ``text`` into an :class:`Expr`; a malformed string raises :class:`ExprSyntaxError`
    (a ``ValueError``) naming the offending token and its position."""
    if not isinstance(text, str):
        raise TypeError(f"parse expects a string, got {type(text).__name__}")
    return _Parser(text).parse()
