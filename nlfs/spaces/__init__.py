"""Search spaces: the NLFS DAG cell (Morgan & Hougen) and a GP tree space (EvoMAL + exp/sin/cos)."""

from ._gp import GP_BINARY, GP_UNARY, GPSpace
from ._nlfs import NLFS_BINARY, NLFS_UNARY, Cell, NLFSSpace

__all__ = ["Cell", "GPSpace", "GP_BINARY", "GP_UNARY", "NLFSSpace", "NLFS_BINARY", "NLFS_UNARY",
           "get_space"]


def get_space(name: str):
    if name == "nlfs":
        return NLFSSpace()
    if name == "gp":
        return GPSpace()
    raise ValueError(f"unknown search space {name!r}; known: nlfs, gp")
