"""Small edits of a loss tree, for searches that start near a good loss (warm starts).

Subtree mutation replaces a random subtree with a random one: from cross-entropy that is almost
always a far jump. The edits here move a short distance instead:

- ``perturb``: scale one number by exp(N(0, 0.3)) (sign kept; 0 becomes a small number);
- ``add_term``: add ``c * f(p)`` or ``c * f(p, y)``, a small random tree with a small coefficient;
- ``swap``: replace one operator by a close one (same arity, similar shape), e.g. tanh -> atan.

Every edit keeps to the space's operators and limits; ``small_edit`` returns the tree unchanged when
no edit applies (the caller then falls back to an ordinary mutation).
"""

from __future__ import annotations

import math
import random

from ..expr import Expr

# Operators that behave alike on the ranges losses see; a swap stays within one group.
CLOSE_OPS: tuple[frozenset[str], ...] = (
    frozenset({"add", "sub"}), frozenset({"min", "max"}), frozenset({"mul", "aq", "pdiv"}),
    frozenset({"tanh", "sin", "atan", "erf", "asinh", "softsign"}),
    frozenset({"exp", "sinh", "softplus"}), frozenset({"log", "plog", "asinh"}),
    frozenset({"square", "abs", "sqrt"}), frozenset({"cos", "sigmoid"}),
)
EDITS = ("perturb", "add_term", "swap")


def _round(x: float) -> float:
    return float(f"{x:.4g}")


def perturb_number(tree: Expr, rng: random.Random, sigma: float = 0.3) -> Expr:
    numbers = [(path, node) for path, node in tree.positions() if node.op == "num"]
    if not numbers:
        return tree
    path, node = rng.choice(numbers)
    v = float(node.value)
    new = _round(v * math.exp(rng.gauss(0.0, sigma))) if v != 0 else _round(rng.gauss(0.0, 0.1))
    return tree.replace_at(path, Expr.num(new))


def close_op(op: str, allowed: set[str], rng: random.Random) -> str | None:
    pool = sorted({o for g in CLOSE_OPS if op in g for o in g} & allowed - {op})
    return rng.choice(pool) if pool else None


def swap_op(tree: Expr, space, rng: random.Random) -> Expr:
    allowed = set(space.unary) | set(space.binary)
    ops = [(path, node) for path, node in tree.positions() if node.args]
    rng.shuffle(ops)
    for path, node in ops:
        other = close_op(node.op, allowed, rng)
        if other is not None:
            return tree.replace_at(path, Expr(other, node.args))
    return tree


def add_term(tree: Expr, space, rng: random.Random) -> Expr:
    """``tree + c * f``: f a random tree of depth <= 2 over p (or p and y) and the space's ops."""
    with_y = rng.random() < 0.5
    for _ in range(50):
        f = space.random_tree(rng, rng.randint(1, 2), full=False)
        if f.uses("p") and (not with_y or f.uses("y")) and not f.leaves & {"z", "C"}:
            break
    else:
        f = Expr.leaf("p") * Expr.leaf("y") if with_y else Expr.leaf("p")
    c = _round(rng.choice((-1, 1)) * math.exp(rng.uniform(math.log(0.05), 0.0)))
    return tree + Expr.num(c) * f


def small_edit(tree: Expr, space, rng: random.Random, max_tries: int = 20) -> Expr:
    """One small edit that changes the tree and fits the space (or the tree itself if none does)."""
    for _ in range(max_tries):
        kind = rng.choice(EDITS)
        if kind == "perturb":
            child = perturb_number(tree, rng)
        elif kind == "swap":
            child = swap_op(tree, space, rng)
        else:
            child = add_term(tree, space, rng)
        if child is not tree and space.fits(child):
            return child
    return tree
