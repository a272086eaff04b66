"""Search spaces: the NLFS DAG cell (Morgan & Hougen), the GP tree space (EvoMAL + exp/sin/cos),
and user-defined tree spaces from TOML/YAML files."""

from pathlib import Path

from ._edits import CLOSE_OPS, small_edit
from ._gp import GP_BINARY, GP_UNARY, GPSpace, TreeSpace
from ._nlfs import NLFS_BINARY, NLFS_UNARY, Cell, NLFSSpace

__all__ = ["CLOSE_OPS", "Cell", "GPSpace", "GP_BINARY", "GP_UNARY", "NLFSSpace", "NLFS_BINARY", "NLFS_UNARY",
           "TreeSpace", "get_space", "small_edit"]


def get_space(name: str):
    """``nlfs``, ``gp``, or a path to a TOML/YAML tree-space file."""
    if name == "nlfs":
        return NLFSSpace()
    if name == "gp":
        return GPSpace()
    if Path(name).suffix in (".toml", ".yaml", ".yml"):
        return TreeSpace.from_file(name)
    raise ValueError(f"unknown search space {name!r}; use nlfs, gp or a .toml/.yaml file")
