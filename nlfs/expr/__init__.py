"""The loss-expression language: nodes, parser/printer, canonical form, ops table, lowering."""

from ._node import Expr, canonical
from ._ops import EPS, LEAVES, MAXV, OPS, Op
from ._parser import ExprSyntaxError, parse, tokenize
from ._program import Instr, Program, lower
from ._simplify import round_numbers, simplify
from ._specialize import merge_common, specialize

__all__ = [
    "EPS", "LEAVES", "MAXV", "OPS", "Expr", "ExprSyntaxError", "Instr", "Op", "Program",
    "canonical", "lower", "merge_common", "parse", "round_numbers", "simplify", "specialize", "tokenize",
]
