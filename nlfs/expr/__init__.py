"""The loss-expression language: nodes, parser/printer, canonical form, ops table, lowering."""

from ._emit import Sym, SymMath, forward_src, partials_src
from ._latex import latex_number
from ._latex import to_latex as expr_to_latex
from ._math import TorchMath
from ._node import Expr, canonical
from ._ops import CLASS_OPS, EPS, LEAVES, MAXV, OPS, Op
from ._parser import ExprSyntaxError, parse, tokenize
from ._program import CLASS_REDUCTIONS, NUM_LIMIT, Instr, Program, lower
from ._simplify import round_numbers, simplify
from ._specialize import merge_common, specialize
from ._sympy import number as sympy_number
from ._sympy import to_sympy as expr_to_sympy

__all__ = [
    "CLASS_OPS", "CLASS_REDUCTIONS", "EPS", "LEAVES", "MAXV", "NUM_LIMIT", "OPS", "Expr", "ExprSyntaxError",
    "Instr", "Op", "Program", "Sym", "SymMath", "TorchMath", "canonical", "expr_to_latex", "expr_to_sympy",
    "forward_src", "latex_number", "lower", "merge_common", "parse", "partials_src", "round_numbers",
    "simplify", "specialize", "sympy_number", "tokenize",
]
