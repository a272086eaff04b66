"""The Triton backend: one generated, fused loss-and-gradient kernel per loss program.

``compile(program)`` writes a readable Python/Triton source file (``HEADER`` + generated
``nlfs_body`` + the two templates of ``nlfs.kernels.templates``) into a disk cache keyed by a sha256
of the program and the code-generator version, imports it and returns a :class:`TritonKernel`.
The per-node maths comes from the ops table through :func:`nlfs.expr._emit.forward_src` /
``partials_src``, spelled with ``tl.*`` and the special functions of ``nlfs.kernels.special``, so
the kernel computes exactly the protected function of the torch reference.

Gradient (reverse mode at generation time): root adjoint 1 (1/C for ``element_mean``); for every
node, in reverse order, its adjoint is clamped to +-MAXV, masked to 0 where a non-bounded node's
unclamped value left [-MAXV, MAXV] (torch.clamp's rule), then multiplied into each argument's
adjoint by the op's partial. With the leaf adjoints g_p, g_logp, g_z and h = p*g_p + g_logp:
``dL/dz_j = h_j - p_j * sum_c h_c + g_z_j``, all in fp32, cast once at the store.

Ops over a row's classes (``sum_classes``, NCE's denominator) are spelled as a masked ``tl.sum`` over the
tile's class axis broadcast back to the row; reverse mode gives every class of the row the row sum of
the node's adjoints times the op's partial. They need the whole row in one tile: such a program always
launches the tile kernel (``launch_config(..., whole_rows=True)``) and is never target-specialised.

Runs on CUDA tensors, or on CPU tensors when ``TRITON_INTERPRET=1`` (set before the first compile).
Inputs: fp32/fp16/bf16 logits (maths in fp32) or fp64 logits (maths and loss in fp64); int targets
(N,) or float probability targets (N, C). With class-index targets a row whose target is
``ignore_index`` is skipped (loss 0, gradient 0, not counted by ``mean``); any other target outside
[0, C) gives a NaN loss row and gradient row: checked on the device, without a host sync.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import importlib.util
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..expr import CLASS_OPS, MAXV, OPS, Program, Sym, SymMath, forward_src, partials_src, specialize
from ._base import Backend, Kernel, loss_dtype

CODEGEN_VERSION = "5"

SPELLING = {
    "abs": "tl.abs({0})", "sign": "nlfs_sign({0})", "exp": "tl.exp({0})", "log": "tl.log({0})",
    "log1p": "nlfs_log1p({0})", "sqrt": "tl.sqrt({0})", "sin": "tl.sin({0})", "cos": "tl.cos({0})",
    "tanh": "nlfs_tanh({0})", "sinh": "nlfs_sinh({0})", "asinh": "nlfs_asinh({0})",
    "atan": "nlfs_atan({0})", "erf": "nlfs_erf({0})", "erfc": "nlfs_erfc({0})",
    "sigmoid": "nlfs_sigmoid({0})", "i0": "nlfs_i0({0})", "i0e": "nlfs_i0e({0})",
    "i1": "nlfs_i1({0})", "i1e": "nlfs_i1e({0})",
    "maximum": "tl.maximum({0}, {1})", "minimum": "tl.minimum({0}, {1})",
    "where": "tl.where({0}, {1}, {2})",
    # the row sum over the tile's real classes (mask), at every class of the row
    "sum_classes": "(zero + tl.sum(tl.where(mask, {0}, 0.0), axis=1)[:, None])",
}
_GRAD_LEAVES = {"p": "g_p", "logp": "g_logp", "z": "g_z"}

# Launch shapes. GPU: tiles of ~2K elements; the interpreter runs programs one after another in
# NumPy, so there fewer, larger programs are much faster.
_TILE_MAX_C = {"gpu": 1024, "interp": 4096}
_TILE_ELEMS = {"gpu": 2048, "interp": 32768}
_LOOP_BLOCK = {"gpu": 2048, "interp": 16384}
# Elements per thread on a GPU (warps = block elements / (32 * this), at most 16). Triton unrolls the
# straight-line body once per element a thread holds, so this sets code size, registers and compile
# time; 4 fp32 elements are one 16-byte load. bench/compile_latency.py compiles 4 and 8 side by side:
# at 8 the tile kernels have far more code and registers and compile more slowly
# (bench/results/compile_latency_cpu_256x10_bf16.md). Runtime: bench/kernels_gpu.py times both.
ELEMS_PER_THREAD = int(os.environ.get("NLFS_TRITON_ELEMS_PER_THREAD", "4"))


# ---------------------------------------------------------------------------------------------
# kernels/ as nlfs.kernels
# ---------------------------------------------------------------------------------------------

def kernels_package():
    """``nlfs.kernels`` (the top-level ``kernels/`` folder), also from a checkout not installed."""
    try:
        return importlib.import_module("nlfs.kernels")
    except ModuleNotFoundError:
        pass
    root = Path(__file__).resolve().parents[2] / "kernels"
    if not (root / "__init__.py").exists():
        raise ImportError("nlfs.kernels not found: reinstall nlfs (pip install -e .) so that the "
                          "top-level kernels/ folder is mapped to nlfs.kernels")
    spec = importlib.util.spec_from_file_location("nlfs.kernels", root / "__init__.py",
                                                  submodule_search_locations=[str(root)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["nlfs.kernels"] = mod
    spec.loader.exec_module(mod)
    return mod


def _templates():
    kernels_package()
    return importlib.import_module("nlfs.kernels.templates")


_SOURCE_HASH: str | None = None


def _sources_hash() -> str:
    """Hash of everything the generated source depends on besides the program: the kernel templates
    and special functions, this code generator and the expression modules it draws on (ops table,
    emitter, specialisation, lowering). Editing any of them invalidates the disk cache."""
    global _SOURCE_HASH
    if _SOURCE_HASH is None:
        from .. import expr

        pkg = kernels_package()
        files = [Path(pkg.__path__[0]) / name for name in ("special.py", "templates.py")]
        files.append(Path(sys.modules[__name__].__file__))
        # the expression modules are read as files, not imported: only their bytes matter here
        files += [Path(expr.__file__).parent / f"{name}.py"
                  for name in ("_emit", "_math", "_ops", "_program", "_specialize")]
        h = hashlib.sha256()
        for f in files:
            h.update(f.read_bytes())
        _SOURCE_HASH = h.hexdigest()
    return _SOURCE_HASH


# ---------------------------------------------------------------------------------------------
# code generation
# ---------------------------------------------------------------------------------------------

def program_text(program: Program) -> str:
    """A canonical one-line text of the program (the cache key's input; constant names omitted)."""
    parts = []
    for k, ins in enumerate(program.instrs):
        if ins.op == "num":
            parts.append(f"v{k}={float(ins.value)!r}")
        elif ins.op == "const":
            parts.append(f"v{k}=const[{ins.value}]")
        elif ins.args:
            parts.append(f"v{k}={ins.op}({','.join(f'v{a}' for a in ins.args)})")
        else:
            parts.append(f"v{k}={ins.op}")
    return f"{program.class_reduction}: " + "; ".join(parts)


def _clamp(src: str) -> str:
    return f"tl.minimum(tl.maximum({src}, {-MAXV!r}), {MAXV!r})"


def generate_body(program: Program, name: str = "nlfs_body", with_y: bool = True) -> str:
    """Source of ``nlfs_body(z, y, p, logp, cf, const_ptr) -> (f, g_p, g_logp, g_z)`` (without the
    ``y`` argument for a target-specialised program, which has no ``y`` leaf). A program over classes
    reads ``z`` as the tile kernel's (rows, classes) tile, whose columns below ``cf`` are the real classes."""
    if not with_y and "y" in program.leaves:
        raise ValueError("a body without the y argument needs a program without y")
    m = SymMath(SPELLING, literal=lambda v: repr(float(v)))
    instrs = program.instrs
    grad = []
    for ins in instrs:
        if ins.op in _GRAD_LEAVES:
            grad.append(True)
        elif ins.op in OPS or ins.op in CLASS_OPS:
            grad.append(any(grad[a] for a in ins.args))
        else:
            grad.append(False)
    params = "z, y, p, logp, cf, const_ptr" if with_y else "z, p, logp, cf, const_ptr"
    L = ["@triton.jit", f"def {name}({params}):", "    zero = tl.zeros_like(z)"]
    if program.class_ops:  # the real classes of the tile (padding columns are not summed)
        L.append("    mask = tl.arange(0, z.shape[1])[None, :] < cf")
    L.append("    # ---- forward ----")
    raw: dict[int, str] = {}
    for k, ins in enumerate(instrs):
        v = f"v{k}"
        if ins.op in ("y", "p", "z", "logp"):
            L.append(f"    {v} = {ins.op}")
        elif ins.op == "C":
            L.append(f"    {v} = zero + cf")
        elif ins.op == "num":
            L.append(f"    {v} = zero + {float(ins.value)!r}")
        elif ins.op == "const":
            L.append(f"    {v} = zero + tl.load(const_ptr + {int(ins.value)})")
        else:
            spec = OPS.get(ins.op) or CLASS_OPS[ins.op]
            src = forward_src(m, ins.op, [f"v{a}" for a in ins.args])
            L.append(f"    # {v} = {ins.op}({', '.join(f'v{a}' for a in ins.args)})")
            if spec.bounded:
                L.append(f"    {v} = {src}")
                raw[k] = v
            else:
                L.append(f"    r{k} = {src}")
                L.append(f"    {v} = {_clamp(f'r{k}')}")
                raw[k] = f"r{k}"
    out = len(instrs) - 1
    L.append(f"    f = v{out}")
    L.append("    # ---- reverse ----")
    leaf_adj: dict[str, list[str]] = {name: [] for name in _GRAD_LEAVES.values()}
    defined: set[int] = set()
    if grad[out]:
        root = "1.0 / cf" if program.class_reduction == "element_mean" else "1.0"
        L.append(f"    a{out} = zero + {root}")
        defined.add(out)
    for k in range(out, -1, -1):
        ins = instrs[k]
        if not grad[k] or k not in defined:
            continue
        L.append(f"    a{k} = {_clamp(f'a{k}')}")
        if ins.op in _GRAD_LEAVES:
            leaf_adj[_GRAD_LEAVES[ins.op]].append(f"a{k}")
            continue
        spec = OPS.get(ins.op) or CLASS_OPS[ins.op]
        adj = f"a{k}"
        if not spec.bounded:
            L.append(f"    b{k} = tl.where(tl.abs(r{k}) <= {MAXV!r}, a{k}, 0.0)")
            adj = f"b{k}"
        if spec.over_classes:  # every class of the row receives the row sum of the adjoints
            L.append(f"    s{k} = {m.sum_classes(Sym(adj, m))}")
            adj = f"s{k}"
        parts = partials_src(m, ins.op, [f"v{a}" for a in ins.args], raw[k])
        for a, part in zip(ins.args, parts, strict=True):
            if not grad[a]:
                continue
            if part == "1.0":
                contrib = adj
            elif part == "-1.0":
                contrib = f"(-{adj})"
            else:
                contrib = f"{adj} * {part}"
            if a in defined:
                L.append(f"    a{a} = a{a} + {contrib}")
            else:
                L.append(f"    a{a} = {contrib}")
                defined.add(a)
    for name, terms in leaf_adj.items():
        L.append(f"    {name} = " + (" + ".join(terms) if terms else "zero"))
    L.append("    return f, g_p, g_logp, g_z")
    return "\n".join(L) + "\n"


def generate_source(program: Program) -> str:
    """The kernel file: the general body (probability targets), the bodies specialised to y = 0 and
    y = 1 (class-index targets, :func:`nlfs.expr.specialize`) and the two templates."""
    t = _templates()
    header = t.HEADER.format(version=CODEGEN_VERSION, reduction=program.class_reduction,
                             text=program_text(program))
    if program.class_ops:  # never specialised (TritonKernel.specialised): the templates only name them
        bodies = [generate_body(program)] + [_UNUSED_BODY.format(name=n) for n in ("nlfs_body_off", "nlfs_body_on")]
    else:
        bodies = [generate_body(program),
                  generate_body(specialize(program, 0.0), "nlfs_body_off", with_y=False),
                  generate_body(specialize(program, 1.0), "nlfs_body_on", with_y=False)]
    return header + "\n" + "\n\n".join(bodies) + "\n" + t.TILE_KERNEL + "\n" + t.LOOP_KERNEL


_UNUSED_BODY = '''@triton.jit
def {name}(z, p, logp, cf, const_ptr):
    # not launched: a program over classes is not target-specialised
    zero = tl.zeros_like(z)
    return zero, zero, zero, zero
'''


# Relative cost of an op for choosing the tile kernel's form (see specialise_tile).
_CHEAP_OPS = frozenset({"add", "sub", "mul", "neg", "abs", "sign", "max", "min", "square", "cube"})


def program_cost(program: Program) -> int:
    """A rough per-element cost: 1 per cheap op, 4 per any other (division, exp, log, trig...)."""
    return sum(1 if ins.op in _CHEAP_OPS else 4 for ins in program.instrs if ins.op in OPS)


# The specialised tile's fixed extra work (reloading each row's target logit, forming its p and log p)
# in program_cost units. Calibrated on static sm_90 SASS counts of the catalogue's bf16 tile kernels
# (`python -m bench.compile_latency --random 0 --elems-per-thread 4 --forms specialised,general --shape
# BxC`, bench/results/compile_latency_cpu_*_bf16_specialised-general.md): at 1000 and 1024 classes
# specialising saves instructions for Focal, SCE and Poly1, while for CE, LabelSmoothingCE and Baikal it
# about breaks even or costs some. Below 256 classes per row (16-128 lanes) it adds instructions for
# Focal and Poly1 as well, and such kernels are launch-bound anyway: the tile specialises only from 256.
_SPECIALISED_TILE_OVERHEAD = 3.0
_SPECIALISED_TILE_MIN_C = 256


def specialise_tile(program: Program, elems_per_thread: int) -> bool:
    """Whether the row-tile kernel should use the target-specialised bodies for index targets.

    There the y = 0 body runs on every element and the y = 1 body once per row, and a thread holding
    ``elems_per_thread`` elements of one row computes its row's y = 1 body redundantly with the
    row's other threads: worth it when cost(off) + cost(on) / elems_per_thread + the fixed overhead
    < cost(full). (The column-loop kernel evaluates y = 1 once per row of thousands of classes: always
    worth it there.)"""
    if "y" not in program.leaves:
        return False
    off, on = program_cost(specialize(program, 0.0)), program_cost(specialize(program, 1.0))
    return off + on / max(1, elems_per_thread) + _SPECIALISED_TILE_OVERHEAD < program_cost(program)


def cache_dir() -> Path:
    env = os.environ.get("NLFS_CACHE_DIR")
    return Path(env) / "triton" if env else Path.home() / ".cache" / "nlfs" / "triton"


def cache_key(program: Program) -> str:
    text = f"nlfs-triton codegen {CODEGEN_VERSION}\n{_sources_hash()}\n{program_text(program)}"
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# the kernel
# ---------------------------------------------------------------------------------------------

def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


@dataclass
class CompileStats:
    """Compile latency of one kernel: ``source`` is ``generated``, ``disk`` or ``memory``."""

    source: str
    codegen_s: float = 0.0  # writing the source (0 on a cache hit)
    import_s: float = 0.0  # importing the module (triton.jit decoration)
    jit_s: dict = field(default_factory=dict)  # launch configuration -> first-launch seconds
    path: str = ""

    def as_dict(self) -> dict:
        return {"source": self.source, "codegen_s": self.codegen_s, "import_s": self.import_s,
                "first_launch_s": dict(self.jit_s), "path": self.path}


class TritonKernel(Kernel):
    """``kernel(logits, target, constants) -> (loss_rows [N], grad [N, C] in logits' dtype)``; the loss
    rows (and the maths) in fp64 for fp64 logits, else fp32.

    ``inplace=True`` writes the gradient into ``logits`` (contiguous logits only) and returns it;
    ``out=(loss, grad)`` gives the output buffers; the gradient is written times ``grad_scale`` (the
    batch mean's 1/N from ``reduced``; the name is the generated and AOT-compiled kernels' argument).
    """

    skips_ignored = True  # class index ignore_index: loss 0, gradient 0, not counted by mean

    def __init__(self, program: Program, module, stats: CompileStats):
        self.program = program
        self.module = module
        self.stats = stats
        self._mean = program.class_reduction == "element_mean"
        self._nconst = len(program.constants)
        self._const_cache: dict = {}
        self.elems_per_thread: int | None = None  # None: the module's ELEMS_PER_THREAD
        self._has_y = "y" in program.leaves and not program.class_ops  # (a program over classes: never specialised)
        self.whole_rows = bool(program.class_ops)  # the tile kernel, whole rows (launch_config)
        self._spec_tile: dict[int, bool] = {}
        # None: decide per template (specialise_tile / always in the loop); False/True: force it
        self.specialise: bool | None = None

    def specialised(self, template: str, elems_per_thread: int, block_c: int) -> bool:
        """Whether a launch of ``template`` with class-index targets uses the specialised bodies."""
        if not self._has_y:
            return False
        if self.specialise is not None:
            return self.specialise
        if template == "nlfs_loop_kernel":
            return True
        if block_c < _SPECIALISED_TILE_MIN_C:
            return False
        hit = self._spec_tile.get(elems_per_thread)
        if hit is None:
            hit = self._spec_tile[elems_per_thread] = specialise_tile(self.program, elems_per_thread)
        return hit

    @property
    def source_path(self) -> str:
        return self.stats.path

    def compile_report(self) -> dict:
        return self.stats.as_dict()

    def _device_constants(self, constants: torch.Tensor | None, device: torch.device,
                          dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``dtype`` (the compute dtype) copy of ``constants`` on ``device``, refreshed only when the
        tensor changes."""
        if constants is None or constants.numel() == 0:
            key = ("empty", device, dtype)
            dev = self._const_cache.get(key)
            if dev is None:
                dev = self._const_cache[key] = torch.zeros(1, dtype=dtype, device=device)
            return dev
        if constants.numel() < self._nconst:
            raise ValueError(f"kernel needs {self._nconst} constants {self.program.constants}, "
                             f"got {constants.numel()}")
        if constants.device == device and constants.dtype == dtype and constants.is_contiguous():
            return constants
        key = (constants.data_ptr(), constants._version, constants.device, device, dtype)
        hit = self._const_cache.get(key)
        if hit is None:
            self._const_cache.clear()
            dev = constants.detach().reshape(-1).to(device=device, dtype=dtype).contiguous()
            # the source tensor is kept alive with its copy: its address cannot be reused by another
            # tensor (version 0 again) while the key stands
            hit = self._const_cache[key] = (constants, dev)
        return hit[1]

    def reduced(self, logits: torch.Tensor, target: torch.Tensor, constants: torch.Tensor, reduction: str,
                inplace: bool = False, ignore_index: int = -100):
        """The 1/N of "mean" is applied where the gradient is written, so nothing is left for backward.
        ``inplace`` (the caller's policy: ``may_overwrite_logits``): the gradient overwrites contiguous
        logits (each program reads its rows before it writes them), saving an (N, C) buffer.

        With class-index targets, "mean" divides by the rows whose target is not ``ignore_index``,
        counted on the device (no host sync); the gradient is written times 1/N and the factor
        N/count left for backward, whose scaling kernel skips the pass on the device when it is 1
        (no row ignored and an upstream gradient of 1)."""
        n = logits.shape[0]
        inv_batch = 1.0 / max(n, 1) if reduction == "mean" else 1.0  # the batch mean's 1/N
        # the kernel's scalar arguments are fp32: a float64 gradient gets its 1/N in backward, in double
        left = 1.0
        if logits.dtype == torch.float64:
            inv_batch, left = 1.0, inv_batch
        inplace = inplace and logits.is_contiguous() and logits.dtype in (torch.float32, torch.float16,
                                                                         torch.bfloat16)
        loss_rows, grad = self(logits.detach() if inplace else logits, target, constants, grad_scale=inv_batch,
                               inplace=inplace, ignore_index=ignore_index)
        if inplace:
            # the logits' storage now holds the gradient: a version bump makes any other autograd node
            # that saved the logits (another term of the objective) raise rather than read it
            torch.autograd.graph.increment_version(logits)
        if reduction == "none":
            return loss_rows, grad, 1.0
        if reduction == "mean" and target.dim() == 1:
            count = (target != ignore_index).sum()
            if target.device.type == "cpu":  # (the interpreter) counted for free: a float factor
                k = int(count)
                return loss_rows.sum() / k if k else loss_rows.sum() * float("nan"), grad, n * left / max(k, 1)
            count = count.to(loss_rows.dtype)  # 0 rows: 0/0 = nan, as torch
            # no row counted: every gradient row is 0 and stays 0 (as torch's), not 0 * inf
            return loss_rows.sum() / count, grad, (n * left) / count.clamp_min(1)
        if reduction == "mean":
            return (loss_rows.mean() if n else loss_rows.sum() * float("nan")), grad, left
        return loss_rows.sum(), grad, left

    def scale_grad_(self, grad: torch.Tensor, scale: torch.Tensor, record: torch.Tensor | None = None) -> None:
        """``grad *= scale`` in place, skipped on the device when ``scale == 1`` (no host sync);
        ``record`` receives the value of ``scale``."""
        _grad_scale_module().scale_grad_(grad, scale, record)

    def __call__(self, logits: torch.Tensor, target: torch.Tensor, constants: torch.Tensor | None = None,
                 *, inplace: bool = False, out: tuple[torch.Tensor, torch.Tensor] | None = None,
                 grad_scale: float = 1.0, ignore_index: int = -100):
        if logits.dim() != 2:
            raise ValueError(f"logits must be 2-D (N, C), got shape {tuple(logits.shape)}")
        if not logits.is_floating_point():
            raise TypeError(f"logits must be floating point, got {logits.dtype}")
        interp = interpreting()
        if logits.device.type != "cuda" and not interp:
            raise ValueError(f"the triton backend needs CUDA tensors (got {logits.device}); set "
                             "TRITON_INTERPRET=1 before importing triton to run on CPU")
        n, c = logits.shape
        device = logits.device
        if inplace and not logits.is_contiguous():
            raise ValueError("inplace=True needs contiguous logits")
        if logits.stride(1) != 1 and c > 1:
            logits = logits.contiguous()
        y_index = target.dim() == 1
        if y_index:
            if target.is_floating_point():
                raise TypeError(f"class-index targets must be integers, got {target.dtype}")
            if target.dtype not in (torch.int32, torch.int64):
                target = target.long()
            if target.stride(0) != 1:
                target = target.contiguous()
            stride_t = 0
        else:
            if tuple(target.shape) != (n, c):
                raise ValueError(f"probability targets must have shape {(n, c)}, got {tuple(target.shape)}")
            if target.stride(1) != 1 and c > 1:
                target = target.contiguous()
            stride_t = target.stride(0)
        ldt = loss_dtype(logits.dtype)
        if out is not None:
            loss, grad = out
            if (loss.shape != (n,) or loss.dtype != ldt or grad.shape != (n, c)
                    or grad.dtype != logits.dtype or not grad.is_contiguous() or not loss.is_contiguous()):
                raise ValueError(f"out must be ({ldt} [N], contiguous [N, C] in the logits' dtype)")
        else:
            loss = torch.empty(n, dtype=ldt, device=device)
            grad = logits if inplace else torch.empty((n, c), dtype=logits.dtype, device=device)
        if n == 0 or c == 0:
            return loss, grad
        consts = self._device_constants(constants, device, ldt)
        cfg = launch_config(n, c, "interp" if interp else "gpu", self.elems_per_thread, whole_rows=self.whole_rows)
        fn = getattr(self.module, cfg.kernel)
        ept = ELEMS_PER_THREAD if self.elems_per_thread is None else self.elems_per_thread
        spec = y_index and self.specialised(cfg.kernel, ept, cfg.blocks["BLOCK_C"])
        meta = dict(Y_INDEX=y_index, SPECIALISED=spec, MEAN=self._mean, **cfg.blocks)
        grid, num_warps = cfg.grid, cfg.num_warps
        args = (logits, target, consts, loss, grad, n, c, float(c), float(grad_scale), int(ignore_index),
                logits.stride(0), stride_t, grad.stride(0))
        key = (cfg.kernel, logits.dtype, target.dtype, tuple(sorted(meta.items())), num_warps, str(device))
        # Triton launches on the current CUDA device: make it the logits' one
        guard = (torch.cuda.device(device) if device.type == "cuda" and device.index != torch.cuda.current_device()
                 else contextlib.nullcontext())
        with guard:
            if key in self.stats.jit_s:
                fn[grid](*args, num_warps=num_warps, **meta)
            else:  # first launch of this specialisation: time the JIT (off the hot path)
                t0 = time.perf_counter()
                fn[grid](*args, num_warps=num_warps, **meta)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                self.stats.jit_s[key] = time.perf_counter() - t0
        return loss, grad


@functools.cache
def _grad_scale_module():
    kernels_package()
    return importlib.import_module("nlfs.kernels.grad_scale")


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class LaunchConfig:
    """Which template runs an (n, c) problem, with its block sizes, grid and warps."""

    kernel: str  # "nlfs_tile_kernel" or "nlfs_loop_kernel"
    blocks: dict  # BLOCK_R/BLOCK_C constexprs
    grid: tuple
    num_warps: int


# Triton's largest block (triton.language.TRITON_MAX_TENSOR_NUMEL): a whole-row tile holds at most this
# many classes.
_MAX_TILE_ELEMS = 1 << 20


def launch_config(n: int, c: int, mode: str = "gpu", elems_per_thread: int | None = None,
                  whole_rows: bool = False) -> LaunchConfig:
    """The launch shape for ``n`` rows of ``c`` classes (``mode`` "gpu" or "interp"). ``whole_rows``
    (a program over classes): the tile kernel at every ``c``, each row in one tile."""
    ept = ELEMS_PER_THREAD if elems_per_thread is None else int(elems_per_thread)
    if ept < 1 or ept & (ept - 1):
        raise ValueError(f"elements per thread must be a power of two, got {ept}")
    block_c = _next_pow2(c)
    if whole_rows and block_c > _MAX_TILE_ELEMS:
        raise ValueError(f"the triton backend sums over classes within one tile of at most {_MAX_TILE_ELEMS} "
                         f"classes; these logits have {c}: use backend='cpp' or 'torch'")
    if block_c <= _TILE_MAX_C[mode] or whole_rows:
        block_r = max(1, _TILE_ELEMS[mode] // block_c)
        if mode == "interp":  # the interpreter pays for masked rows; a GPU would compile per size
            block_r = min(block_r, _next_pow2(n))
        blocks = {"BLOCK_R": block_r, "BLOCK_C": block_c}
        kernel, grid, elems = "nlfs_tile_kernel", (triton_cdiv(n, block_r),), block_r * block_c
    else:
        block = min(block_c, _LOOP_BLOCK[mode])
        blocks, kernel, grid, elems = {"BLOCK_C": block}, "nlfs_loop_kernel", (n,), block
    return LaunchConfig(kernel, blocks, grid, min(16, max(1, elems // (32 * ept))))


# ---------------------------------------------------------------------------------------------
# compile + cache
# ---------------------------------------------------------------------------------------------

_MODULES: dict[str, object] = {}
_LOCK = threading.Lock()
_ALL_STATS: list[CompileStats] = []


def _import_file(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # triton.jit reads the source through inspect/linecache
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return mod


def compile_program(program: Program) -> TritonKernel:
    kernels_package()  # nlfs.kernels importable for the generated module
    key = cache_key(program)
    with _LOCK:
        mod = _MODULES.get(key)
        if mod is not None:
            stats = CompileStats("memory", path=mod.__file__)
            _ALL_STATS.append(stats)
            return TritonKernel(program, mod, stats)
        directory = cache_dir()
        path = directory / f"nlfs_k_{key[:40]}.py"
        t0 = time.perf_counter()
        if path.exists():
            source = "disk"
        else:
            source = "generated"
            text = generate_source(program)
            directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp_", suffix=".py")
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            os.replace(tmp, path)  # atomic: concurrent processes never see half a file
        t1 = time.perf_counter()
        mod = _import_file(f"nlfs_triton_cache.k_{key[:40]}", path)
        t2 = time.perf_counter()
        _MODULES[key] = mod
        stats = CompileStats(source, codegen_s=t1 - t0 if source == "generated" else 0.0,
                             import_s=t2 - t1, path=str(path))
        _ALL_STATS.append(stats)
        return TritonKernel(program, mod, stats)


def compile_report(kernels=None) -> str:
    """A table of compile latencies (codegen, import, first launches) for ``kernels`` (default: all
    kernels compiled in this process)."""
    stats = [k.stats for k in kernels] if kernels is not None else list(_ALL_STATS)
    lines = ["source     codegen_ms  import_ms  first_launch_ms  path"]
    for s in stats:
        jit = sum(s.jit_s.values()) * 1e3
        lines.append(f"{s.source:<10} {s.codegen_s * 1e3:10.2f} {s.import_s * 1e3:10.2f} "
                     f"{jit:16.1f}  {s.path}")
    return "\n".join(lines)


class TritonBackend(Backend):
    name = "triton"
    fused = True
    lowers_class_ops = True  # in the tile kernel, whole rows (launch_config)

    def available(self) -> tuple[bool, str]:
        try:
            import triton  # noqa: F401
        except Exception as err:  # ImportError, or a broken install
            return False, f"triton cannot be imported ({err})"
        if torch.cuda.is_available() or interpreting():
            return True, ""
        return False, "no CUDA device; set TRITON_INTERPRET=1 to run on CPU"

    def compile(self, program: Program) -> TritonKernel:
        self.check(program)
        return compile_program(program)
