"""Lowering: an expression becomes a straight-line program, one instruction per distinct node.

Every backend consumes this form: the torch backend interprets it with autograd, the Triton backend
generates a kernel from it, the C++ backend executes it as an instruction list. ``log(p)`` lowers to
the leaf ``logp`` (exact log-softmax), so cross-entropy-like losses never take the log of an
underflowed probability.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._node import Expr
from ._ops import CLASS_OPS, OPS

LEAF_OPS = ("y", "p", "z", "logp", "C")
# The largest number a program holds: float32's largest finite value. A number beyond it would be
# inf in a float32 backend and finite in a float64 one; the parser refuses such numbers and a
# constructed Expr's are lowered as +-NUM_LIMIT (then the ops' own clamps apply, the same everywhere).
NUM_LIMIT = 3.4028234663852886e38
CLASS_REDUCTIONS = ("class_sum", "element_mean")  # how f(y, p) combines over classes


@dataclass(frozen=True)
class Instr:
    op: str  # a leaf, "num", "const" or an ops-table name
    args: tuple[int, ...] = ()
    value: float | int | None = None  # the number for "num"; the constant's index for "const"

    @property
    def bounded(self) -> bool:
        return self.op in LEAF_OPS or self.op in ("num", "const") or (OPS.get(self.op) or CLASS_OPS[self.op]).bounded


@dataclass(frozen=True)
class Program:
    instrs: tuple[Instr, ...]
    constants: tuple[str, ...]
    class_reduction: str

    @property
    def output(self) -> int:
        return len(self.instrs) - 1

    @property
    def leaves(self) -> frozenset[str]:
        return frozenset(i.op for i in self.instrs if i.op in LEAF_OPS)

    @property
    def class_ops(self) -> frozenset[str]:
        """The ops over classes the program uses (none: it is elementwise, every backend lowers it)."""
        return frozenset(i.op for i in self.instrs if i.op in CLASS_OPS)


def lower(expr: Expr, class_reduction: str = "class_sum", constants: tuple[str, ...] | None = None) -> Program:
    """Lower ``expr``; ``constants`` fixes the order of named constants (default: sorted names).
    Numbers outside float32's range are lowered as +-NUM_LIMIT (its largest finite value)."""
    if class_reduction not in CLASS_REDUCTIONS:
        raise ValueError(f"class_reduction must be one of {CLASS_REDUCTIONS}, got {class_reduction!r}")
    names = tuple(constants) if constants is not None else expr.constants
    missing = set(expr.constants) - set(names)
    if missing:
        raise ValueError(f"constants {sorted(missing)} are not in the constant order {names}")
    slot: dict[int, int] = {}
    instrs: list[Instr] = []
    for node in expr.nodes():
        if node.op == "log" and node.args[0].op == "p":
            ins = Instr("logp")
        elif node.op == "num":
            ins = Instr("num", (), min(NUM_LIMIT, max(-NUM_LIMIT, float(node.value))))
        elif node.op == "const":
            ins = Instr("const", (), names.index(node.value))
        elif not node.args:
            ins = Instr(node.op)
        else:
            ins = Instr(node.op, tuple(slot[id(a)] for a in node.args))
        slot[id(node)] = len(instrs)
        instrs.append(ins)
    return Program(tuple(_drop_dead(instrs)), names, class_reduction)


def _drop_dead(instrs: list[Instr]) -> list[Instr]:
    """Remove instructions no longer reachable from the output (e.g. ``p`` used only inside log(p))."""
    live = {len(instrs) - 1}
    for k in range(len(instrs) - 1, -1, -1):
        if k in live:
            live.update(instrs[k].args)
    remap: dict[int, int] = {}
    out: list[Instr] = []
    for k, ins in enumerate(instrs):
        if k in live:
            remap[k] = len(out)
            out.append(Instr(ins.op, tuple(remap[a] for a in ins.args), ins.value))
    return out
