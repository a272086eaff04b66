"""The NLFS search space (Morgan & Hougen, arXiv 2403.08793): a NASNet-like DAG cell.

Leaves ``y``, ``p``, ``1``, ``-1``; four hidden nodes and a root. A hidden node reads leaves or
earlier hidden nodes; the root reads hidden nodes only. Hidden nodes are unary with probability 0.7,
the root with 0.2. Both ``y`` and ``p`` must be used. 27 unary and 7 binary operators, eps = 1e-7.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..expr import Expr


def _e(name, *args):
    return Expr(name, args)


NLFS_UNARY = {
    "neg": lambda x: -x,
    "ln": lambda x: _e("plog", x),
    "log10": lambda x: _e("plog10", x),
    "exp": lambda x: _e("exp", x),
    "abs": lambda x: _e("abs", x),
    "sigmoid": lambda x: _e("sigmoid", x),
    "inv_one_plus_abs": lambda x: 1 / (1 + _e("abs", x)),
    "softplus": lambda x: _e("softplus", x),
    "erf": lambda x: _e("erf", x),
    "erfc": lambda x: _e("erfc", x),
    "sin": lambda x: _e("sin", x),
    "sinh": lambda x: _e("sinh", x),
    "asinh": lambda x: _e("asinh", x),
    "tanh": lambda x: _e("tanh", x),
    "atan": lambda x: _e("atan", x),
    "reciprocal": lambda x: _e("pinv", x),
    "bessel_i0": lambda x: _e("bessel_i0", x),
    "bessel_i0e": lambda x: _e("bessel_i0e", x),
    "bessel_i1": lambda x: _e("bessel_i1", x),
    "bessel_i1e": lambda x: _e("bessel_i1e", x),
    "relu": lambda x: _e("max", x, Expr.num(0.0)),
    "neg_relu": lambda x: _e("min", x, Expr.num(0.0)),
    "square": lambda x: _e("square", x),
    "sqrt_abs": lambda x: _e("sqrt", x),
    "softsign": lambda x: x / (1 + _e("abs", x)),
    "tanh_derivative": lambda x: 1 - _e("square", _e("tanh", x)),
    "sigmoid_derivative": lambda x: _e("sigmoid", x) * (1 - _e("sigmoid", x)),
}
NLFS_BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "max": lambda a, b: _e("max", a, b),
    "min": lambda a, b: _e("min", a, b),
    "pdiv": lambda a, b: _e("pdiv", a, b),
    "aq": lambda a, b: _e("aq", a, b),
}
LEAVES = ("y", "p", "1", "-1")
HIDDEN = 4


def _leaf(name: str) -> Expr:
    if name in ("y", "p"):
        return Expr.leaf(name)
    return Expr.num(float(name))


@dataclass(frozen=True)
class Node:
    op: str  # a key of NLFS_UNARY or NLFS_BINARY
    inputs: tuple[int, ...]  # -1..-4 are leaves (LEAVES[-i-1]), 0..3 hidden nodes


@dataclass(frozen=True)
class Cell:
    """A genotype: four hidden nodes then the root (index 4)."""

    nodes: tuple[Node, ...]

    def to_expr(self) -> Expr:
        built: list[Expr] = []

        def value(i: int) -> Expr:
            return _leaf(LEAVES[-i - 1]) if i < 0 else built[i]

        for node in self.nodes:
            fn = NLFS_UNARY.get(node.op) or NLFS_BINARY[node.op]
            built.append(fn(*[value(i) for i in node.inputs]))
        return built[-1]

    def is_valid(self) -> bool:
        return self.to_expr().uses("y", "p")


class NLFSSpace:
    name = "nlfs"
    hidden_unary_prob = 0.7
    root_unary_prob = 0.2

    def random_node(self, rng: random.Random, index: int) -> Node:
        is_root = index == HIDDEN
        unary = rng.random() < (self.root_unary_prob if is_root else self.hidden_unary_prob)
        choices = list(range(HIDDEN)) if is_root else list(range(-len(LEAVES), 0)) + list(range(index))
        if unary:
            return Node(rng.choice(sorted(NLFS_UNARY)), (rng.choice(choices),))
        return Node(rng.choice(sorted(NLFS_BINARY)), (rng.choice(choices), rng.choice(choices)))

    def random_cell(self, rng: random.Random, max_tries: int = 10_000) -> Cell:
        for _ in range(max_tries):
            cell = Cell(tuple(self.random_node(rng, i) for i in range(HIDDEN + 1)))
            if cell.is_valid():
                return cell
        raise RuntimeError("could not sample a cell that uses both y and p")

    def random_expr(self, rng: random.Random) -> Expr:
        return self.random_cell(rng).to_expr()

    # -- the paper's mutation menu ---------------------------------------------------------------
    change_op_prob = 0.7
    change_input_prob = 0.15  # the rest switches unary/binary
    swap_prob = 0.2  # share of input changes on binary nodes that swap the arguments instead

    def mutate(self, cell: Cell, rng: random.Random, max_tries: int = 1000) -> Cell:
        """One mutation from the paper's menu; resampled until the child is valid and differs."""
        for _ in range(max_tries):
            child = self._mutate_once(cell, rng)
            if child != cell and child.is_valid():
                return child
        return self.random_cell(rng)

    def _mutate_once(self, cell: Cell, rng: random.Random) -> Cell:
        nodes = list(cell.nodes)
        i = rng.randrange(len(nodes))
        node = nodes[i]
        choices = list(range(HIDDEN)) if i == HIDDEN else list(range(-len(LEAVES), 0)) + list(range(i))
        r = rng.random()
        unary = node.op in NLFS_UNARY
        if r < self.change_op_prob:
            pool = sorted(NLFS_UNARY if unary else NLFS_BINARY)
            nodes[i] = Node(rng.choice(pool), node.inputs)
        elif r < self.change_op_prob + self.change_input_prob:
            if not unary and rng.random() < self.swap_prob:
                nodes[i] = Node(node.op, node.inputs[::-1])
            else:
                k = rng.randrange(len(node.inputs))
                inputs = list(node.inputs)
                inputs[k] = rng.choice(choices)
                nodes[i] = Node(node.op, tuple(inputs))
        else:
            if unary:
                nodes[i] = Node(rng.choice(sorted(NLFS_BINARY)), (node.inputs[0], rng.choice(choices)))
            else:
                nodes[i] = Node(rng.choice(sorted(NLFS_UNARY)), (rng.choice(node.inputs),))
        return Cell(tuple(nodes))

    # -- the genotype interface the search uses ------------------------------------------------------
    def random_genotype(self, rng: random.Random) -> Cell:
        return self.random_cell(rng)

    @staticmethod
    def express(cell: Cell) -> Expr:
        return cell.to_expr()

    @staticmethod
    def to_json(cell: Cell):
        return [[n.op, list(n.inputs)] for n in cell.nodes]
