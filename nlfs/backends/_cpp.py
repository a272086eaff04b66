"""The ``cpp`` backend: lowered programs executed by the compiled CPU evaluator ``nlfs._cpp``.

The kernel is fused: one pass over the N x C batch computes the per-sample loss and
``d loss_n / d logits_n`` (the gradient in the logits' dtype, the loss accumulated in double and returned in
:func:`nlfs.backends._base.loss_dtype`). Float64 logits compute in
double. Float32 logits with at least 32 classes compute in float (twice the SIMD lanes), with the
softmax, the row sums and the final softmax-Jacobian combination in double, and every row whose
estimated float rounding noise exceeds ~1e-6 (abs + rel) recomputed in double
(:func:`set_fp32_compute` turns the float path off). The
per-op maths is generated from the ops table into ``csrc/ops_generated.h``
(``python -m nlfs.backends._cpp_codegen``); :func:`op_forward` / :func:`op_partials` expose those
generated loops for testing. A program with an op over a row's classes (``sum_classes``) is evaluated
whole rows at a time, in double, and never target-specialised (its generated row loops reduce over
each row between the op's argument and its consumers). Rows are split over ``std::thread``s:
:func:`set_num_threads` or the ``NLFS_CPP_THREADS`` environment variable; results do not depend on the thread count.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..expr import CLASS_OPS, CLASS_REDUCTIONS, OPS, Program, merge_common, specialize
from ._base import Backend, Kernel, loss_dtype
from ._cpp_codegen import N_LEAF, OP_NAMES, OPCODE

_BUILD_HINT = ("build it with `pip install -e .` from the repository root (needs a C++17 compiler and "
               "pybind11; the install prints the compiler error if the build fails)")

try:
    from .. import _cpp as _ext

    _IMPORT_ERROR = ""
except ImportError as _err:  # not built, or built against another Python
    _ext = None
    _IMPORT_ERROR = f"the C++ extension nlfs._cpp cannot be imported ({_err}); {_BUILD_HINT}"


def _stale_reason() -> str:
    if _ext is None:
        return _IMPORT_ERROR
    if tuple(_ext.op_names()) != OP_NAMES:
        return ("nlfs._cpp was built from an older ops table (opcode names differ); rebuild with "
                "`pip install -e .`")
    from ._cpp_codegen import generate  # cheap: a few ms

    digest_line = next(line for line in generate().splitlines() if "TABLE_DIGEST" in line)
    if f'"{_ext.TABLE_DIGEST}"' not in digest_line:
        return ("nlfs._cpp was built from an older ops table (op maths differ); run "
                "`python -m nlfs.backends._cpp_codegen` and rebuild with `pip install -e .`")
    return ""


_UNAVAILABLE: str | None = None


def unavailable_reason() -> str:
    """"" when nlfs._cpp is importable and matches the ops table, else why not and how to fix it."""
    global _UNAVAILABLE
    if _UNAVAILABLE is None:
        _UNAVAILABLE = _stale_reason()
    return _UNAVAILABLE


def _need_ext():
    why = unavailable_reason()
    if why:
        raise RuntimeError(why)
    return _ext


def set_num_threads(n: int) -> None:
    """Threads the evaluator splits rows over (default: ``NLFS_CPP_THREADS`` or all cores)."""
    _need_ext().set_num_threads(int(n))


def get_num_threads() -> int:
    return _need_ext().get_num_threads()


def set_fp32_compute(on: bool) -> None:
    """Compute float32 logits in float (default, ``True``) or entirely in double (``False``)."""
    _need_ext().set_fp32_compute(bool(on))


def get_fp32_compute() -> bool:
    return bool(_need_ext().get_fp32_compute())


# ---- programs ---------------------------------------------------------------------------------------


def encode(program: Program) -> tuple[list[int], list[int], list[int], list[float]]:
    """Validate ``program`` and flatten it to (opcodes, arg0 slots, arg1 slots, values).

    Raises ValueError on anything the evaluator could not run safely: unknown op, wrong arity,
    an argument that is not an earlier instruction, a constant index outside the constants, a
    non-finite number. The C++ side checks the same again.
    """
    if not isinstance(program, Program):
        raise TypeError(f"expected a Program, got {type(program).__name__}")
    if program.class_reduction not in CLASS_REDUCTIONS:
        raise ValueError(f"class_reduction must be one of {CLASS_REDUCTIONS}, got {program.class_reduction!r}")
    if not program.instrs:
        raise ValueError("program is empty")
    n_consts = len(program.constants)
    ops, a0, a1, vals = [], [], [], []
    for k, ins in enumerate(program.instrs):
        code = OPCODE.get(ins.op)
        if code is None:
            raise ValueError(f"instruction {k}: unknown op {ins.op!r}")
        arity = (OPS.get(ins.op) or CLASS_OPS[ins.op]).arity if code >= N_LEAF else 0
        args = tuple(ins.args)
        if len(args) != arity:
            raise ValueError(f"instruction {k} ({ins.op}): takes {arity} argument(s), got {len(args)}")
        for a in args:
            if not isinstance(a, (int, np.integer)) or isinstance(a, bool) or not 0 <= a < k:
                raise ValueError(f"instruction {k} ({ins.op}): argument slot {a!r} must refer to an "
                                 f"earlier instruction (0..{k - 1})")
        value = 0.0
        if ins.op == "num":
            try:
                value = float(ins.value)
            except (TypeError, ValueError):
                raise ValueError(f"instruction {k} (num): value {ins.value!r} is not a number") from None
            if not math.isfinite(value):
                raise ValueError(f"instruction {k} (num): value {value!r} is not finite")
        elif ins.op == "const":
            idx = ins.value
            if not isinstance(idx, (int, np.integer)) or isinstance(idx, bool) or not 0 <= idx < n_consts:
                raise ValueError(f"instruction {k} (const): index {idx!r} is out of range for "
                                 f"{n_consts} constants")
            value = float(idx)
        ops.append(code)
        a0.append(int(args[0]) if arity >= 1 else -1)
        a1.append(int(args[1]) if arity >= 2 else -1)
        vals.append(value)
    return ops, a0, a1, vals


_F32, _F64 = 0, 1
_T_INDEX, _T_F32, _T_F64 = 0, 1, 2


class CppKernel(Kernel):
    """A program compiled for the C++ evaluator; fused (loss rows and gradient in one call).

    With class-index targets the evaluator runs the program specialised to ``y = 0`` at the other
    classes and to ``y = 1`` at the target class (:func:`nlfs.expr.specialize`), so a loss like
    cross-entropy costs no more than its softmax (not a program over classes, such as NCE's
    ``sum_classes``: its value at one class depends on the y of the others). Class indices are range-checked here
    (``checks_targets``), without a separate pass in Python.
    """

    checks_targets = True
    skips_ignored = True  # class index ignore_index: loss 0, gradient 0, not counted by mean

    def __init__(self, program: Program):
        ext = _need_ext()
        encode(program)  # validate what was given before rewriting it
        self.program = program
        self._n_consts = len(program.constants)
        self._handle = self._compile(ext, merge_common(program))
        if "y" in program.leaves and not program.class_ops:
            self._off = self._compile(ext, specialize(program, 0.0))
            self._on = self._compile(ext, specialize(program, 1.0))
        else:  # nothing to specialise: one program for every class
            self._off = self._on = None
        self._run = ext.run
        self._empty_consts = torch.zeros(1, dtype=torch.float64)

    def _compile(self, ext, program: Program):
        ops, a0, a1, vals = encode(program)
        return ext.Program(ops, a0, a1, vals, self._n_consts, CLASS_REDUCTIONS.index(program.class_reduction))

    @staticmethod
    def _as_input(logits: torch.Tensor) -> torch.Tensor:
        z = logits.detach()
        if z.device.type != "cpu":
            z = z.cpu()
        if z.dtype != torch.float32 and z.dtype != torch.float64:
            z = z.float()
        if not z.is_contiguous():
            z = z.contiguous()
        return z

    def __call__(self, logits: torch.Tensor, target: torch.Tensor, constants: torch.Tensor,
                 ignore_index: int = -100):
        n, c = logits.shape
        z = self._as_input(logits)
        loss = torch.empty(n, dtype=torch.float64)
        grad = torch.empty((n, c), dtype=z.dtype)
        # the buffers are fresh and z is converted: only target and constants need checking
        self._launch(z, n, c, target, constants, loss, grad, ignore_index=ignore_index)
        return _back(loss, logits), _back(grad, logits)

    def reduced(self, logits, target, constants, reduction, inplace=False, ignore_index=-100):
        """(loss reduced over samples, gradient already scaled by that reduction, 1.0). ``inplace`` is
        ignored: the kernel reads each row again after writing parts of its gradient. Rows whose class
        index is ``ignore_index`` give loss 0 and gradient 0 and are left out of "mean"; a mean over
        no rows is nan, as torch's."""
        if reduction == "none":
            loss, grad = self(logits, target, constants, ignore_index=ignore_index)
            return loss, grad, 1.0
        n, c = logits.shape
        z = self._as_input(logits)
        grad = torch.empty((n, c), dtype=z.dtype)
        loss = torch.empty(n, dtype=torch.float64)
        total = torch.empty((), dtype=z.dtype)  # written in the logits' precision (summed in double)
        mean = reduction == "mean"
        inv_batch = 1.0 / max(n, 1) if mean else 1.0  # the batch mean's 1/N, folded into the gradient write
        self._launch(z, n, c, target, constants, loss, grad, inv_batch, total, ignore_index, mean)
        if n == 0 and mean:
            total.fill_(float("nan"))
        return _back(total, logits), _back(grad, logits), 1.0

    def run_into(self, z: torch.Tensor, target: torch.Tensor, constants: torch.Tensor,
                 loss: torch.Tensor, grad: torch.Tensor) -> None:
        """Write into preallocated contiguous CPU buffers: ``loss`` float64 (N,), ``grad`` in z's dtype.

        ``z`` must be a contiguous CPU float32/float64 (N, C) tensor (``__call__`` converts)."""
        n, c = z.shape
        if z.dtype not in (torch.float32, torch.float64) or z.device.type != "cpu" or not z.is_contiguous():
            raise ValueError("z must be a contiguous CPU float32/float64 tensor")
        if (loss.dtype != torch.float64 or tuple(loss.shape) != (n,) or not loss.is_contiguous()
                or grad.dtype != z.dtype or tuple(grad.shape) != (n, c) or not grad.is_contiguous()
                or loss.device.type != "cpu" or grad.device.type != "cpu"):
            raise ValueError("loss must be contiguous float64 (N,) and grad contiguous (N, C) in z's dtype")
        self._launch(z, n, c, target, constants, loss, grad)

    def _launch(self, z, n, c, target, constants, loss, grad, inv_batch=1.0, total=None, ignore_index=-100,
                mean_over_kept=False) -> None:
        """Check/convert target and constants, then run; z, loss and grad are already valid. ``inv_batch``:
        the batch mean's 1/N (1 otherwise), written into the gradient and the total (the compiled
        evaluator's argument keeps its name, ``grad_scale``)."""
        t = target.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        if t.dim() == 1:
            if t.dtype != torch.int64:
                t = t.long()
            if t.shape[0] != n:
                raise ValueError(f"target has {t.shape[0]} entries for {n} rows")
            tcode = _T_INDEX
        elif t.dim() == 2:
            if tuple(t.shape) != (n, c):
                raise ValueError(f"probability targets must have shape {(n, c)}, got {tuple(t.shape)}")
            if t.dtype == torch.float64:
                tcode = _T_F64
            else:
                if t.dtype != torch.float32:
                    t = t.float()
                tcode = _T_F32
        else:
            raise ValueError(f"target must be (N,) or (N, C), got shape {tuple(t.shape)}")
        if not t.is_contiguous():
            t = t.contiguous()
        k = constants
        if self._n_consts:
            if k.device.type != "cpu" or k.dtype != torch.float64:
                k = k.detach().to(device="cpu", dtype=torch.float64)
            if not k.is_contiguous():
                k = k.contiguous()
            if k.numel() < self._n_consts:
                raise ValueError(f"program needs {self._n_consts} constants, got {k.numel()}")
        else:
            k = self._empty_consts
        self._run(self._handle, z.data_ptr(), _F32 if z.dtype == torch.float32 else _F64, t.data_ptr(),
                  tcode, n, c, k.data_ptr(), k.numel(), loss.data_ptr(), grad.data_ptr(), self._off, self._on,
                  inv_batch, 0 if total is None else total.data_ptr(), inv_batch, int(ignore_index),
                  bool(mean_over_kept))


def _back(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` on ``like``'s device; a gradient in ``like``'s dtype, a loss (summed in double) in
    :func:`loss_dtype` of it."""
    want = like.dtype if t.dim() == 2 else loss_dtype(like.dtype)
    if t.dtype != want:
        t = t.to(want)
    if like.device.type != "cpu":
        t = t.to(like.device)
    return t


class CppBackend(Backend):
    name = "cpp"
    fused = True
    lowers_class_ops = True  # evaluated whole rows at a time (csrc/nlfs_cpp.cpp)

    def available(self) -> tuple[bool, str]:
        why = unavailable_reason()
        return (not why), why

    def compile(self, program: Program) -> CppKernel:
        self.check(program)
        return CppKernel(program)


# ---- the generated per-op code, for tests and tools ------------------------------------------------


def op_forward(op: str, a, b=None) -> np.ndarray:
    """The generated C++ forward of table op ``op`` on float64 arrays (unclamped value)."""
    a = np.ascontiguousarray(a, dtype=np.float64).ravel()
    b = a if b is None else np.ascontiguousarray(b, dtype=np.float64).ravel()
    return _need_ext().op_forward(OPCODE[op], a, b)


def op_partials(op: str, a, b=None) -> tuple[np.ndarray, ...]:
    """The generated C++ partial derivatives of table op ``op`` (one array per argument)."""
    a = np.ascontiguousarray(a, dtype=np.float64).ravel()
    b = a if b is None else np.ascontiguousarray(b, dtype=np.float64).ravel()
    pa, pb = _need_ext().op_partials(OPCODE[op], a, b)
    return (pa, pb) if OPS[op].arity == 2 else (pa,)


def special(name: str, x) -> np.ndarray:
    """The evaluator's Cephes Bessel function ``name`` (i0, i0e, i1, i1e) on a float64 array."""
    return _need_ext().special(name, np.ascontiguousarray(x, dtype=np.float64).ravel())
