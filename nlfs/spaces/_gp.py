"""Tree spaces for genetic programming.

The default ``gp`` space is EvoMAL's (arXiv 2209.08907): binary ``+ - * min max`` and the analytic
quotient, unary ``sign``, ``x**2``, ``|x|``, protected ``log``/``sqrt``, ``tanh``, plus ``exp``,
``sin``, ``cos`` and ephemeral random constants so that NGL is reachable; leaves ``y``, ``p``,
``1``, ``-1``. A user-defined tree space comes from a small TOML or YAML file (``TreeSpace.from_file``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from ..expr import OPS, Expr
from ._edits import small_edit

GP_BINARY = ("add", "sub", "mul", "min", "max", "aq")
GP_UNARY = ("sign", "square", "abs", "log", "sqrt", "tanh", "exp", "sin", "cos")
GP_LEAVES = ("y", "p", "1", "-1", "const")


@dataclass
class TreeSpace:
    """Expression trees over chosen ops and leaves (``y``, ``p``, ``z``, ``C``, numbers, ``const``
    for an ephemeral random constant), with depth/size limits against bloat."""

    name: str = "tree"
    unary: tuple[str, ...] = GP_UNARY
    binary: tuple[str, ...] = GP_BINARY
    leaves: tuple[str, ...] = GP_LEAVES
    max_depth: int = 10
    max_size: int = 60
    init_depth: tuple[int, int] = (2, 5)
    constant_range: tuple[float, float] = (-3.0, 3.0)
    required: tuple[str, ...] = ("y", "p")
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        for op in (*self.unary, *self.binary):
            if op not in OPS:
                raise ValueError(f"space {self.name!r}: unknown operator {op!r}; known: {', '.join(sorted(OPS))}")
            want = 1 if op in self.unary else 2
            if OPS[op].arity != want:
                raise ValueError(f"space {self.name!r}: operator {op!r} has arity {OPS[op].arity}, "
                                 f"listed as {'unary' if want == 1 else 'binary'}")
        for leaf in self.leaves:
            if leaf not in ("y", "p", "z", "C", "const"):
                try:
                    float(leaf)
                except ValueError:
                    raise ValueError(f"space {self.name!r}: bad leaf {leaf!r}") from None
        if not self.unary and not self.binary:
            raise ValueError(f"space {self.name!r} has no operators")

    # -- sampling -----------------------------------------------------------------------------------
    def random_leaf(self, rng: random.Random) -> Expr:
        kind = rng.choice(self.leaves)
        if kind in ("y", "p", "z", "C"):
            return Expr.leaf(kind)
        if kind == "const":
            return Expr.num(round(rng.uniform(*self.constant_range), 4))
        return Expr.num(float(kind))

    def random_tree(self, rng: random.Random, depth: int, full: bool) -> Expr:
        """Koza's grow (full=False) or full method."""
        if depth == 0 or (not full and rng.random() < 0.3):
            return self.random_leaf(rng)
        n_bin, n_un = len(self.binary), len(self.unary)
        if n_bin and rng.random() < n_bin / (n_bin + n_un):
            op = rng.choice(self.binary)
            return Expr(op, (self.random_tree(rng, depth - 1, full), self.random_tree(rng, depth - 1, full)))
        return Expr(rng.choice(self.unary), (self.random_tree(rng, depth - 1, full),))

    def fits(self, e: Expr) -> bool:
        return e.depth <= self.max_depth and e.tree_size <= self.max_size and e.uses(*self.required)

    def random_expr(self, rng: random.Random, max_tries: int = 10_000) -> Expr:
        """Ramped half-and-half; resampled until the required leaves occur."""
        for _ in range(max_tries):
            depth = rng.randint(*self.init_depth)
            e = self.random_tree(rng, depth, full=rng.random() < 0.5)
            if self.fits(e):
                return e
        raise RuntimeError(f"could not sample a tree that uses {self.required}")

    # -- variation ----------------------------------------------------------------------------------
    def crossover(self, a: Expr, b: Expr, rng: random.Random, max_tries: int = 50) -> Expr:
        """Subtree crossover: a random subtree of ``a`` replaced by a random subtree of ``b``."""
        pa, pb = list(a.positions()), list(b.positions())
        for _ in range(max_tries):
            path, _ = rng.choice(pa)
            _, donor = rng.choice(pb)
            child = a.replace_at(path, donor)
            if child is not a and self.fits(child):
                return child
        return a

    def subtree_mutation(self, a: Expr, rng: random.Random, max_tries: int = 50) -> Expr:
        positions = list(a.positions())
        for _ in range(max_tries):
            path, _ = rng.choice(positions)
            child = a.replace_at(path, self.random_tree(rng, rng.randint(0, 3), full=False))
            if child is not a and self.fits(child):
                return child
        return a

    def point_mutation(self, a: Expr, rng: random.Random, max_tries: int = 50) -> Expr:
        """Replace one node by another of the same arity (a leaf by a leaf)."""
        positions = list(a.positions())
        for _ in range(max_tries):
            path, node = rng.choice(positions)
            if not node.args or node.op in ("num", "const"):
                new = self.random_leaf(rng)
            else:
                pool = self.unary if len(node.args) == 1 else self.binary
                new = Expr(rng.choice(pool), node.args)
            child = a.replace_at(path, new)
            if child is not a and self.fits(child):
                return child
        return a

    small_edit_prob = 1 / 3  # the rest split evenly between subtree and point mutation

    def mutate(self, a: Expr, rng: random.Random) -> Expr:
        r = rng.random()
        if r < self.small_edit_prob:
            child = small_edit(a, self, rng)
            if child is not a:
                return child
        if r < (1 + self.small_edit_prob) / 2:
            return self.subtree_mutation(a, rng)
        return self.point_mutation(a, rng)

    # -- the genotype interface the search uses (a tree is its own genotype) --------------------------
    def random_genotype(self, rng: random.Random) -> Expr:
        return self.random_expr(rng)

    @staticmethod
    def express(tree: Expr) -> Expr:
        return tree

    @staticmethod
    def to_json(tree: Expr):
        return str(tree)

    # -- user-defined spaces --------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | Path) -> TreeSpace:
        """Read a space from TOML (``.toml``) or YAML (``.yaml``/``.yml``)::

            unary = ["log", "exp", "tanh"]
            binary = ["add", "sub", "mul"]
            leaves = ["y", "p", "1", "const"]
            max_depth = 6
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"search-space file {path} does not exist")
        text = path.read_text()
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise ValueError(f"search-space file {path} must end in .toml, .yaml or .yml")
        known = {"name", "unary", "binary", "leaves", "max_depth", "max_size", "init_depth",
                 "constant_range", "required"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}; allowed: {sorted(known)}")
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        kwargs.setdefault("name", path.stem)
        return cls(**kwargs)


class GPSpace(TreeSpace):
    def __init__(self, **kwargs):
        kwargs.setdefault("name", "gp")
        super().__init__(**kwargs)
