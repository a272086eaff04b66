"""Immutable, hash-consed expression nodes, and their canonical form.

Structurally equal expressions are the *same object* (hash-consing), so a shared subexpression is
represented once and the tree is really a DAG. Equality is identity; ``Expr.hash`` is a structural
hash that is stable across processes.

Canonical form (:func:`canonical`, ``Expr.canonical``): trivially equal expressions (``a+b``/``b+a``,
``x*1``, ``--x``, ``a-b``/``-b+a``, folded number subexpressions) map to one expression, so they share
a hash in the search's duplicate check. Sums and products are flattened, their operands sorted by
printed form.
"""

from __future__ import annotations

import hashlib
import math
import weakref
from collections.abc import Iterator

from ._math import reference_value
from ._ops import CLASS_OPS, LEAVES, OPS

_LEAF_OPS = frozenset(LEAVES)
_INTERN: weakref.WeakValueDictionary[tuple, Expr] = weakref.WeakValueDictionary()


def _value_key(value):
    if isinstance(value, float):
        return value.hex()  # distinguishes -0.0 from 0.0
    return value


class Expr:
    """A node of a loss expression: a leaf (``y p z C``), a number, a named constant, or an op."""

    __slots__ = ("op", "args", "value", "_hash", "_str", "__weakref__")

    op: str
    args: tuple[Expr, ...]
    value: float | str | None

    def __new__(cls, op: str, args: tuple = (), value=None):
        args = tuple(args)
        key = (op, _value_key(value), tuple(id(a) for a in args))
        node = _INTERN.get(key)
        if node is not None:
            return node
        _validate(op, args, value)
        node = object.__new__(cls)
        object.__setattr__(node, "op", op)
        object.__setattr__(node, "args", args)
        object.__setattr__(node, "value", value)
        object.__setattr__(node, "_hash", None)
        object.__setattr__(node, "_str", None)
        _INTERN[key] = node
        return node

    # -- immutability and pickling ----------------------------------------------------------
    def __setattr__(self, name, value):
        raise AttributeError("Expr is immutable")

    def __reduce__(self):
        return (Expr, (self.op, self.args, self.value))

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    # -- constructors ---------------------------------------------------------------------------
    @staticmethod
    def num(value: float) -> Expr:
        return Expr("num", (), float(value))

    @staticmethod
    def const(name: str) -> Expr:
        return Expr("const", (), name)

    @staticmethod
    def leaf(name: str) -> Expr:
        return Expr(name)

    @staticmethod
    def call(name: str, *args) -> Expr:
        return Expr(name, tuple(_as_expr(a) for a in args))

    # -- kind predicates ------------------------------------------------------------------------
    @property
    def is_leaf(self) -> bool:
        return not self.args

    # -- structure --------------------------------------------------------------------------------
    def nodes(self) -> list[Expr]:
        """Distinct nodes in topological order, children before parents; ``self`` is last."""
        order: list[Expr] = []
        seen: set[int] = set()
        stack: list[tuple[Expr, bool]] = [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            for a in reversed(node.args):
                if id(a) not in seen:
                    stack.append((a, False))
        return order

    @property
    def size(self) -> int:
        """Number of distinct nodes (the DAG size)."""
        return len(self.nodes())

    @property
    def tree_size(self) -> int:
        """Number of nodes with shared subexpressions counted every time they occur."""
        sizes: dict[int, int] = {}
        for n in self.nodes():
            sizes[id(n)] = 1 + sum(sizes[id(a)] for a in n.args)
        return sizes[id(self)]

    @property
    def depth(self) -> int:
        """Edges on the longest root-to-leaf path (a leaf has depth 0)."""
        depths: dict[int, int] = {}
        for n in self.nodes():
            depths[id(n)] = 1 + max((depths[id(a)] for a in n.args), default=-1)
        return depths[id(self)]

    @property
    def constants(self) -> tuple[str, ...]:
        """Names of the named constants, sorted."""
        return tuple(sorted({n.value for n in self.nodes() if n.op == "const"}))

    @property
    def leaves(self) -> frozenset[str]:
        """Which of ``y p z C`` occur."""
        return frozenset(n.op for n in self.nodes() if n.op in _LEAF_OPS)

    def uses(self, *names: str) -> bool:
        return set(names) <= self.leaves

    def positions(self) -> Iterator[tuple[tuple[int, ...], Expr]]:
        """(path, subtree) for every tree position, pre-order; a path is a tuple of arg indices."""
        stack: list[tuple[tuple[int, ...], Expr]] = [((), self)]
        while stack:
            path, node = stack.pop()
            yield path, node
            for i in reversed(range(len(node.args))):
                stack.append((path + (i,), node.args[i]))

    def at(self, path: tuple[int, ...]) -> Expr:
        node = self
        for i in path:
            node = node.args[i]
        return node

    def replace_at(self, path: tuple[int, ...], new: Expr) -> Expr:
        """A copy with the subtree at ``path`` replaced by ``new``."""
        if not path:
            return _as_expr(new)
        i = path[0]
        args = list(self.args)
        args[i] = args[i].replace_at(path[1:], new)
        return Expr(self.op, tuple(args), self.value)

    def replace(self, old: Expr, new: Expr) -> Expr:
        """A copy with every occurrence of ``old`` replaced by ``new``."""
        return self.map_nodes(lambda n, args: _as_expr(new) if n is old else None)

    def substitute(self, values: dict[str, float]) -> Expr:
        """Replace named constants by numbers."""
        return self.map_nodes(
            lambda n, args: Expr.num(values[n.value]) if n.op == "const" and n.value in values else None
        )

    def map_nodes(self, fn) -> Expr:
        """Bottom-up rebuild: ``fn(node, new_args)`` returns a replacement or None to keep the node."""
        done: dict[int, Expr] = {}
        for n in self.nodes():
            new_args = tuple(done[id(a)] for a in n.args)
            out = fn(n, new_args)
            if out is None:
                out = n if all(x is y for x, y in zip(new_args, n.args)) else Expr(n.op, new_args, n.value)
            done[id(n)] = out
        return done[id(self)]

    # -- text and hashing -----------------------------------------------------------------------
    def __str__(self) -> str:
        if self._str is None:
            from ._printer import to_text

            object.__setattr__(self, "_str", to_text(self))
        return self._str

    def __repr__(self) -> str:
        return f"nlfs.parse({str(self)!r})"

    @property
    def hash(self) -> str:
        """Structural hash (hex sha256 of the printed form), stable across processes."""
        if self._hash is None:
            object.__setattr__(self, "_hash", hashlib.sha256(str(self).encode()).hexdigest())
        return self._hash

    def canonical(self) -> Expr:
        return canonical(self)

    @property
    def canonical_hash(self) -> str:
        return self.canonical().hash

    # -- building with Python operators -------------------------------------------------------------
    def __add__(self, o):
        return Expr("add", (self, _as_expr(o)))

    def __radd__(self, o):
        return Expr("add", (_as_expr(o), self))

    def __sub__(self, o):
        return Expr("sub", (self, _as_expr(o)))

    def __rsub__(self, o):
        return Expr("sub", (_as_expr(o), self))

    def __mul__(self, o):
        return Expr("mul", (self, _as_expr(o)))

    def __rmul__(self, o):
        return Expr("mul", (_as_expr(o), self))

    def __truediv__(self, o):
        return Expr("div", (self, _as_expr(o)))

    def __rtruediv__(self, o):
        return Expr("div", (_as_expr(o), self))

    def __pow__(self, o):
        if isinstance(o, (int, float)) and o in (2, 3):
            return Expr("square" if o == 2 else "cube", (self,))
        return Expr("pow", (self, _as_expr(o)))

    def __neg__(self):
        return Expr("neg", (self,))

    __hash__ = object.__hash__

    def __eq__(self, other):
        return self is other


def _as_expr(x) -> Expr:
    if isinstance(x, Expr):
        return x
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return Expr.num(x)
    raise TypeError(f"cannot use {x!r} in a loss expression")


def _validate(op: str, args: tuple, value) -> None:
    if op == "num":
        if args or not isinstance(value, float) or not math.isfinite(value):
            raise ValueError(f"a number leaf needs a finite float value, got {value!r}")
        return
    if op == "const":
        if args or not isinstance(value, str) or not value.isidentifier():
            raise ValueError(f"a named constant needs an identifier name, got {value!r}")
        if value in _LEAF_OPS or value in OPS or value in CLASS_OPS:
            raise ValueError(f"{value!r} is reserved and cannot name a constant")
        return
    if value is not None:
        raise ValueError(f"only numbers and constants carry a value, not {op!r}")
    if op in _LEAF_OPS:
        if args:
            raise ValueError(f"leaf {op!r} takes no arguments")
        return
    spec = OPS.get(op) or CLASS_OPS.get(op)
    if spec is None:
        raise ValueError(f"unknown op {op!r}")
    if len(args) != spec.arity:
        raise ValueError(f"{op} takes {spec.arity} argument(s), got {len(args)}")
    for a in args:
        if not isinstance(a, Expr):
            raise TypeError(f"argument of {op} is not an Expr: {a!r}")


# -- canonical form ---------------------------------------------------------------------------
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
    while factors:
        f = factors.pop(0)
        while f.op == "neg":
            coeff = -coeff
            f = f.args[0]
        if f.op == "mul":  # a product under a sign: its factors join these (a canonical form is flat)
            inner: list[Expr] = []
            _terms(f, "mul", inner)
            factors[0:0] = inner
        elif f.op == "num":
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
    if all(a.op == "num" for a in args) and op in OPS:  # sum_classes(2) is 2*C: not a number
        # clamped whatever the op, bounded ones too: a folded number is kept inside [-MAXV, MAXV]
        return Expr.num(reference_value(op, [a.value for a in args], clamp_bounded=True))
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
