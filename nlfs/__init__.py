"""nlfs: neural loss function search.

Quick use::

    import nlfs
    loss = nlfs.Loss("NGL")                   # a catalogue loss as an nn.Module
    loss = nlfs.Loss("-y*log(p) + 0.1*(1-p)**2")  # or any expression
    e = nlfs.parse("exp(alpha - p - p*y)")
"""

from . import backends, expr, losses
from ._module import Loss, check_inputs
from .expr import Expr, ExprSyntaxError, canonical, lower, parse
from .losses import LossSpec, register

__version__ = "0.1.0"

__all__ = ["Expr", "ExprSyntaxError", "Loss", "LossSpec", "backends", "canonical", "check_inputs",
           "expr", "losses", "lower", "parse", "register"]
