"""nlfs: neural loss function search.

Quick use::

    import nlfs
    loss = nlfs.Loss("NGL")                   # a catalogue loss as an nn.Module
    loss = nlfs.Loss("-y*log(p) + 0.1*(1-p)**2")  # or any expression
    e = nlfs.parse("exp(alpha - p - p*y)")
    found = nlfs.discover(data=(x, y), budget=20)  # search a loss for your own data (or fitness=f)
"""

from . import backends, expr, losses
from ._export import formula, standalone_source, to_latex, to_sympy, to_torch_source
from ._module import Loss, check_inputs
from .expr import Expr, ExprSyntaxError, canonical, lower, parse
from .losses import LossSpec, register

__version__ = "0.1.0"


def plot_loss_shapes(*args, **kwargs):
    """``nlfs.plots.plot_loss_shapes`` (imported on first use: matplotlib is not needed otherwise)."""
    from .plots import plot_loss_shapes as plot

    return plot(*args, **kwargs)


def discover(*args, **kwargs):
    """``nlfs.search.discover``: search a loss for your own data, model or training loop (imported on
    first use: the search's dependencies are not needed otherwise)."""
    from .search import discover as run

    return run(*args, **kwargs)


__all__ = ["Expr", "ExprSyntaxError", "Loss", "LossSpec", "backends", "canonical", "check_inputs", "discover",
           "expr", "formula", "losses", "lower", "parse", "plot_loss_shapes", "register", "standalone_source",
           "to_latex", "to_sympy", "to_torch_source"]
