"""The GP tree space: EvoMAL's operators (arXiv 2209.08907) plus exp, sin, cos and ephemeral
random constants, so that NGL is reachable. Leaves ``y``, ``p``, ``1``, ``-1`` and a constant."""

from __future__ import annotations

import random

from ..expr import Expr

GP_BINARY = ("add", "sub", "mul", "min", "max", "aq")
GP_UNARY = ("sign", "square", "abs", "log", "sqrt", "tanh", "exp", "sin", "cos")
GP_LEAVES = ("y", "p", "1", "-1", "const")


class GPSpace:
    name = "gp"
    max_depth = 10
    init_depth = (2, 5)
    constant_range = (-3.0, 3.0)

    def random_leaf(self, rng: random.Random) -> Expr:
        kind = rng.choice(GP_LEAVES)
        if kind in ("y", "p"):
            return Expr.leaf(kind)
        if kind == "const":
            return Expr.num(round(rng.uniform(*self.constant_range), 4))
        return Expr.num(float(kind))

    def random_tree(self, rng: random.Random, depth: int, full: bool) -> Expr:
        """Koza's grow (full=False) or full method."""
        if depth == 0 or (not full and rng.random() < 0.3):
            return self.random_leaf(rng)
        if rng.random() < len(GP_BINARY) / (len(GP_BINARY) + len(GP_UNARY)):
            op = rng.choice(GP_BINARY)
            return Expr(op, (self.random_tree(rng, depth - 1, full), self.random_tree(rng, depth - 1, full)))
        return Expr(rng.choice(GP_UNARY), (self.random_tree(rng, depth - 1, full),))

    def random_expr(self, rng: random.Random, max_tries: int = 10_000) -> Expr:
        """Ramped half-and-half; resampled until both y and p occur."""
        for _ in range(max_tries):
            depth = rng.randint(*self.init_depth)
            e = self.random_tree(rng, depth, full=rng.random() < 0.5)
            if e.uses("y", "p"):
                return e
        raise RuntimeError("could not sample a tree that uses both y and p")
