"""Source-code emission from the ops table, for code-generating backends (Triton, C++).

An op's maths (``Op.forward`` / ``Op.partials``) is evaluated with a :class:`SymMath` whose values
are source strings, so a backend only says how it spells each primitive; the protected rules come
from the table unchanged. Example::

    m = SymMath(TRITON_SPELLING, literal=lambda v: f"{v!r}")
    forward_src(m, "exp", ["x"])          # 'tl.exp(tl.minimum(x, 23.02...))'
"""

from __future__ import annotations

from ._ops import op as _op


class Sym:
    """A source-code expression; Python operators build bigger expressions."""

    __slots__ = ("src", "m")

    def __init__(self, src: str, m: SymMath):
        self.src = src
        self.m = m

    def _bin(self, op, other, rev=False):
        o = self.m.lift(other)
        a, b = (o, self) if rev else (self, o)
        return Sym(f"({a.src} {op} {b.src})", self.m)

    def __add__(self, o): return self._bin("+", o)
    def __radd__(self, o): return self._bin("+", o, True)
    def __sub__(self, o): return self._bin("-", o)
    def __rsub__(self, o): return self._bin("-", o, True)
    def __mul__(self, o): return self._bin("*", o)
    def __rmul__(self, o): return self._bin("*", o, True)
    def __truediv__(self, o): return self._bin("/", o)
    def __rtruediv__(self, o): return self._bin("/", o, True)
    def __neg__(self): return Sym(f"(-{self.src})", self.m)
    def __lt__(self, o): return self._bin("<", o)
    def __le__(self, o): return self._bin("<=", o)
    def __gt__(self, o): return self._bin(">", o)
    def __ge__(self, o): return self._bin(">=", o)

    def __str__(self):
        return self.src


class SymMath:
    """A math namespace that writes source code.

    ``spelling`` maps each primitive (abs sign exp log log1p sqrt sin cos tanh sinh asinh atan erf
    erfc sigmoid i0 i0e i1 i1e maximum minimum where) to a format string over ``{0}``, ``{1}``...;
    ``clamp`` is built from maximum/minimum; ``literal`` spells a Python float.
    """

    PRIMITIVES = ("abs", "sign", "exp", "log", "log1p", "sqrt", "sin", "cos", "tanh", "sinh", "asinh",
                  "atan", "erf", "erfc", "sigmoid", "i0", "i0e", "i1", "i1e", "maximum", "minimum",
                  "where")

    def __init__(self, spelling: dict[str, str], literal=repr):
        missing = set(self.PRIMITIVES) - set(spelling)
        if missing:
            raise ValueError(f"spelling lacks primitives {sorted(missing)}")
        self.spelling = spelling
        self.literal = literal

    def lift(self, v) -> Sym:
        if isinstance(v, Sym):
            return v
        return Sym(self.literal(float(v)), self)

    def _call(self, name, *args) -> Sym:
        return Sym(self.spelling[name].format(*[self.lift(a).src for a in args]), self)

    def clamp(self, x, lo, hi):
        if lo is not None:
            x = self.maximum(x, lo)
        if hi is not None:
            x = self.minimum(x, hi)
        return x

    def __getattr__(self, name):
        # the primitives every backend spells, and any other its spelling offers (sum_classes: torch's)
        if name in SymMath.PRIMITIVES or name in self.__dict__.get("spelling", {}):
            return lambda *args: self._call(name, *args)
        raise AttributeError(name)


def forward_src(m: SymMath, op: str, args: list[str]) -> str:
    """Source of ``op`` applied to variables named ``args`` (unclamped value)."""
    return m.lift(_op(op).forward(m, *[Sym(a, m) for a in args])).src


def partials_src(m: SymMath, op: str, args: list[str], out: str) -> list[str]:
    """Source of each partial derivative of ``op``, given its unclamped value in variable ``out``."""
    parts = _op(op).partials(m, *[Sym(a, m) for a in args], Sym(out, m))
    return [m.lift(p).src for p in parts]
