"""Target specialisation: a program with the target leaf ``y`` fixed to a number.

With class-index targets ``y`` is one-hot: 0 at every class but the target, 1 there. A fused kernel
can then evaluate ``specialize(program, 0.0)`` at every class and ``specialize(program, 1.0)`` at
the target class only. Fixing ``y`` usually collapses most of the program: cross-entropy's
``-y*log(p)`` becomes the constant 0 off the target, so its kernel only has the softmax to do there.

The rewrite is exact under the ops table's semantics for finite input (every adjoint is clamped to
+-MAXV, and every op's value is):

* an op whose arguments are all numbers becomes the number (evaluated by the float64 NumPy
  reference, output clamp included) when that is finite;
* ``0*x``, ``x*0``, ``0/x`` (every denominator is floored away from 0), ``pdiv(0, x)`` and
  ``aq(0, x)`` are 0, with adjoint ``0 * g = 0`` to ``x``;
* ``x+0``, ``0+x``, ``x-0``, ``1*x``, ``x*1`` and ``x/1`` are ``x``, value and adjoint alike, when
  ``x`` is already inside [-MAXV, MAXV]: an op's (clamped) value, ``p``, ``C`` or such a number.
  The logits ``z``, ``log(p)`` and named constants are not clamped, so there the op stays: its
  output clamp (and the zero adjoint outside the range) is part of the loss.

With non-finite logits the two forms may differ: ``0 * log(p)`` is 0 off the target where the full
program gives NaN at a logit of -inf.

Named constants stay runtime values (``Loss.set_constants`` changes them without a recompile), so
they are never folded. Equal instructions are merged and unreachable ones dropped.
"""

from __future__ import annotations

import math

from ._math import reference_value
from ._ops import MAXV, OPS
from ._program import Instr, Program, _drop_dead

_ZERO_IF_FIRST_ZERO = ("div", "pdiv", "aq")  # 0 / anything (denominators never vanish)
_IN_RANGE_LEAVES = ("p", "C")  # leaves the backends never need to clamp (z, logp and constants can be huge)


def _fold(op: str, values: list[float]) -> float | None:
    """``op`` at ``values`` as a number, or None where that is not finite (the op then stays)."""
    v = reference_value(op, values)
    return v if math.isfinite(v) else None


def _emitter():
    """(instructions, emit): ``emit(ins)`` appends ``ins`` unless an equal instruction is already
    there, and returns its slot."""
    out: list[Instr] = []
    index: dict[tuple, int] = {}

    def emit(ins: Instr) -> int:
        key = (ins.op, ins.args, ins.value)
        slot = index.get(key)
        if slot is None:
            slot = index[key] = len(out)
            out.append(ins)
        return slot

    return out, emit


def _finish(out: list[Instr], root: int, like: Program) -> Program:
    """The instructions ``root`` depends on (its arguments are all earlier slots), root last."""
    return Program(tuple(_drop_dead(out[:root + 1])), like.constants, like.class_reduction)


def specialize(program: Program, y: float) -> Program:
    """``program`` with every ``y`` leaf replaced by the number ``y``, simplified exactly. Elementwise
    programs only (the fused kernels' one-hot split): an op over classes mixes the row's y values."""
    if program.class_ops:
        raise ValueError(f"specialize: {', '.join(sorted(program.class_ops))} sums over classes; "
                         "only elementwise programs can be specialised to one y")
    out, emit_any = _emitter()
    number: dict[int, float] = {}  # slot -> its value, for the slots that are numbers

    def emit(ins: Instr) -> int:
        slot = emit_any(ins)
        if ins.op == "num":
            number[slot] = float(ins.value)
        return slot

    def in_range(slot: int) -> bool:
        """The slot's value is inside [-MAXV, MAXV] as the backends feed it to an op."""
        op = out[slot].op
        return op in OPS or op in _IN_RANGE_LEAVES or (op == "num" and abs(number[slot]) <= MAXV)

    def num(v: float) -> int:
        return emit(Instr("num", (), float(v) + 0.0))  # + 0.0: -0.0 and 0.0 are one number

    remap: list[int] = []
    for ins in program.instrs:
        remap.append(_rewrite(ins, [remap[a] for a in ins.args], number, emit, num, y, in_range))
    return _finish(out, remap[-1], program)


def _rewrite(ins: Instr, args: list[int], number: dict[int, float], emit, num, y: float,
             in_range) -> int:
    op = ins.op
    if op == "y":
        return num(y)
    if not args:
        return emit(Instr(op, (), ins.value))
    vals = [number.get(a) for a in args]
    if all(v is not None for v in vals):
        folded = _fold(op, vals)
        if folded is not None:
            return num(folded)
    if op == "mul":
        for k in (0, 1):
            if vals[k] == 0.0:
                return num(0.0)
        for k in (0, 1):
            if vals[k] == 1.0 and in_range(args[1 - k]):
                return args[1 - k]
    elif op == "add":
        for k in (0, 1):
            if vals[k] == 0.0 and in_range(args[1 - k]):
                return args[1 - k]
    elif op == "sub" and vals[1] == 0.0 and in_range(args[0]):
        return args[0]
    elif op in _ZERO_IF_FIRST_ZERO and vals[0] == 0.0:
        return num(0.0)
    elif op == "div" and vals[1] == 1.0 and in_range(args[0]):
        return args[0]
    return emit(Instr(op, tuple(args)))


def merge_common(program: Program) -> Program:
    """``program`` with equal instructions merged (each leaf then occurs once) and unreachable ones
    dropped; nothing is folded, so every value is computed exactly as before."""
    out, emit = _emitter()
    remap: list[int] = []
    for ins in program.instrs:
        remap.append(emit(Instr(ins.op, tuple(remap[a] for a in ins.args), ins.value)))
    return _finish(out, remap[-1], program)
