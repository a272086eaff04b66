"""Ahead-of-time compilation of the generated Triton kernels for a GPU target, without a GPU.

Triton lowers a kernel to PTX and assembles it with its bundled ``ptxas`` without touching a CUDA
driver, so on a CPU-only machine this module can (1) check that a generated kernel compiles for real
hardware, which the interpreter cannot (it accepts code the compiler rejects, and has no bf16); (2)
measure the compile latency of a new candidate; (3) read its register and stack use from the cubin.

A process that imported Triton under ``TRITON_INTERPRET=1`` cannot compile (Triton's own library
functions were decorated for the interpreter), so there the work goes to one subprocess per batch:
``python -m nlfs.backends._triton_aot`` reads jobs as JSON on stdin and answers on stdout.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import _triton
from ._triton import TritonKernel, _import_file, kernels_package, launch_config

__all__ = ["GRAD_SCALE", "AotJob", "AotResult", "aot_available", "compile_for_target", "compile_jobs"]

_TRITON_TYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


@dataclass(frozen=True)
class AotJob:
    """One specialisation of a generated kernel file: what the JIT would compile for a launch on
    (``n``, ``c``) ``dtype`` logits on a GPU of compute capability ``arch`` (90: H100, 80: A100)."""

    path: str  # the generated source file (TritonKernel.source_path), or GRAD_SCALE
    mean: bool  # element_mean reduction
    n: int
    c: int
    dtype: str = "fp32"  # fp32 / fp16 / bf16
    index_targets: bool = True
    arch: int = 90
    elems_per_thread: int | None = None  # None: what the kernel would launch with
    # target-specialised bodies (index targets); None: in the column loop only, as the JIT does for a
    # program that reads y (for_kernel fills in the launch's own choice)
    specialised: bool | None = None
    whole_rows: bool = False  # a program over classes (sum_classes): the tile kernel at every c

    @classmethod
    def for_kernel(cls, kernel: TritonKernel, n: int, c: int, dtype: torch.dtype = torch.float32,
                   *, index_targets: bool = True, arch: int = 90) -> AotJob:
        if dtype not in _TRITON_TYPES:
            raise ValueError(f"logits dtype must be one of {list(_TRITON_TYPES)}, got {dtype}")
        ept = kernel.elems_per_thread if kernel.elems_per_thread is not None else _triton.ELEMS_PER_THREAD
        cfg = launch_config(n, c, "gpu", ept, whole_rows=kernel.whole_rows)
        spec = bool(index_targets) and kernel.specialised(cfg.kernel, ept, cfg.blocks["BLOCK_C"])
        return cls(kernel.source_path, kernel.program.class_reduction == "element_mean", int(n), int(c),
                   _TRITON_TYPES[dtype], bool(index_targets), int(arch), ept, spec, kernel.whole_rows)


@dataclass
class AotResult:
    """A compiled specialisation; ``error`` is set (and the figures 0) when compilation failed."""

    job: AotJob
    kernel: str = ""  # template: nlfs_tile_kernel / nlfs_loop_kernel
    blocks: dict | None = None
    num_warps: int = 0
    compile_s: float = 0.0  # triton.compile: AST -> TTIR -> TTGIR -> LLVM IR -> PTX -> cubin
    registers: int = 0  # per thread
    stack_bytes: int = 0  # local memory: register spills, or a slow path's local arrays
    ptx_lines: int = 0
    sass_instructions: int = 0  # static count; each thread runs a tile kernel's straight-line code once
    error: str = ""

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(d.pop("job"))
        return d


def _nvidia_tool(name: str) -> Path:
    import triton

    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name


def aot_available() -> tuple[bool, str]:
    """Whether this Triton can compile for NVIDIA targets here (its bundled ptxas is present)."""
    try:
        import triton  # noqa: F401
        from triton.backends.compiler import GPUTarget  # noqa: F401
    except Exception as err:
        return False, f"triton cannot be imported ({err})"
    for tool in ("ptxas", "cuobjdump"):
        if not os.access(_nvidia_tool(tool), os.X_OK):
            return False, f"triton's bundled {tool} is missing ({_nvidia_tool(tool)})"
    return True, ""


def _process_can_compile() -> bool:
    import triton.language.standard as standard
    from triton.runtime.jit import JITFunction

    return isinstance(standard.cdiv, JITFunction)


def _resource_usage(cubin: bytes) -> tuple[int, int, int]:
    """(registers, stack bytes, SASS instructions) of a one-kernel cubin."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as fh:
        fh.write(cubin)
        fh.flush()
        tool = str(_nvidia_tool("cuobjdump"))
        out = subprocess.run([tool, "-res-usage", fh.name], capture_output=True, text=True, check=True).stdout
        sass = subprocess.run([tool, "-sass", fh.name], capture_output=True, text=True, check=True).stdout
    reg = re.search(r"REG:(\d+)", out)
    stack = re.search(r"STACK:(\d+)", out)
    if reg is None or stack is None:
        raise RuntimeError(f"unexpected cuobjdump output: {out!r}")
    # instruction lines look like "/*0040*/   FFMA R1, R2, R3, R4 ;  /* 0x... */"
    count = sum(1 for m in re.finditer(r"^\s*/\*[0-9a-f]{4,}\*/\s+([^;]+);", sass, re.M)
                if not m.group(1).strip().startswith("NOP"))
    return int(reg.group(1)), int(stack.group(1)), count


_MODULES: dict[str, object] = {}


GRAD_SCALE = "<grad_scale>"  # AotJob.path of backward's scaling kernel (nlfs.kernels.grad_scale)


def _signature(fn, dtype: str, constexprs: dict, ints: dict) -> tuple[dict, dict]:
    """(signature, attributes) of a launch of ``fn``, read off its parameter names: ``*_ptr`` are
    pointers (logits-dtype ``z_ptr``/``g_ptr``, class-index ``t_ptr`` as i64 unless given in ``ints``
    as a dtype, the rest fp32), ``cf``/``grad_scale`` fp32 scalars, other names i32. Attributes are
    what the JIT knows at a launch on contiguous tensors: pointers 16-byte aligned (torch's
    allocations), and the ints in ``ints`` that are multiples of 16."""
    sig, aligned = {}, []
    for name in fn.arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            if name in ("z_ptr", "g_ptr"):
                sig[name] = f"*{dtype}"
            elif name == "t_ptr":
                sig[name] = "*" + ints.get("t_ptr", "i64")
            else:
                sig[name] = "*fp32"
            aligned.append(name)
        elif name in ("cf", "grad_scale"):
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
            if isinstance(ints.get(name), int) and ints[name] % 16 == 0:
                aligned.append(name)
    return sig, {(fn.arg_names.index(k),): [["tt.divisibility", 16]] for k in aligned}


def _compile_here(job: AotJob) -> AotResult:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if job.path == GRAD_SCALE:
        kernels_package()
        import nlfs.kernels.grad_scale as gs

        fn, num_warps = gs.nlfs_scale_grad_kernel, 4
        constexprs = {"BLOCK": gs.BLOCK, "RECORD": True}
        sig, attrs = _signature(fn, job.dtype, constexprs, {})
        res = AotResult(job, "nlfs_scale_grad_kernel", dict(constexprs), num_warps)
    else:
        cfg = launch_config(job.n, job.c, "gpu", job.elems_per_thread, whole_rows=job.whole_rows)
        res = AotResult(job, cfg.kernel, dict(cfg.blocks), cfg.num_warps)
        mod = _MODULES.get(job.path)
        if mod is None:
            kernels_package()
            mod = _MODULES[job.path] = _import_file(f"nlfs_aot.{Path(job.path).stem}", Path(job.path))
        fn, num_warps = getattr(mod, cfg.kernel), cfg.num_warps
        spec = job.index_targets and (job.specialised if job.specialised is not None
                                      else cfg.kernel == "nlfs_loop_kernel")
        constexprs = {"Y_INDEX": job.index_targets, "SPECIALISED": spec, "MEAN": job.mean, **cfg.blocks}
        # n_rows is never specialised on (do_not_specialize): no value for it
        ints = {"n_cols": job.c, "stride_z": job.c, "stride_g": job.c,
                "stride_t": 0 if job.index_targets else job.c,
                "t_ptr": "i64" if job.index_targets else job.dtype}
        sig, attrs = _signature(fn, job.dtype, constexprs, ints)
    try:
        t0 = time.perf_counter()
        compiled = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=constexprs, attrs=attrs),
                                  target=GPUTarget("cuda", job.arch, 32), options={"num_warps": num_warps})
        res.compile_s = time.perf_counter() - t0
        res.registers, res.stack_bytes, res.sass_instructions = _resource_usage(compiled.asm["cubin"])
        res.ptx_lines = compiled.asm["ptx"].count("\n")
    except Exception as err:  # reported per job: one bad candidate must not hide the others
        res.error = _describe(err)
    return res


def _describe(err: BaseException) -> str:
    """The error and its causes (Triton wraps the failing inner call in the caller's location)."""
    parts, seen = [], set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        parts.append(f"{type(err).__name__}: {err}")
        err = err.__cause__ or err.__context__
    return "\n-- caused by --\n".join(parts)


def compile_jobs(jobs: list[AotJob], *, timeout: float | None = None) -> list[AotResult]:
    """Compile every job; in this process when it can compile, else in one subprocess."""
    ok, why = aot_available()
    if not ok:
        raise RuntimeError(why)
    if _process_can_compile():
        return [_compile_here(job) for job in jobs]
    return _compile_in_subprocess(jobs, timeout)


def _compile_in_subprocess(jobs: list[AotJob], timeout: float | None) -> list[AotResult]:
    env = dict(os.environ, TRITON_INTERPRET="0")
    proc = subprocess.run([sys.executable, "-m", "nlfs.backends._triton_aot"], env=env,
                          input=json.dumps([asdict(j) for j in jobs]), capture_output=True, text=True,
                          timeout=timeout, cwd=Path(__file__).resolve().parents[2])
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        out = json.loads(lines[-1])
        return [AotResult(job, **{k: v for k, v in r.items() if k != "job"}) for job, r in zip(jobs, out, strict=True)]
    if len(jobs) > 1:  # the compiler process died (an LLVM abort, say): find the job, keep the others
        return [r for job in jobs for r in _compile_in_subprocess([job], timeout)]
    return [AotResult(jobs[0], error=f"compiler process failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")]


def compile_for_target(kernel: TritonKernel, n: int, c: int, dtype: torch.dtype = torch.float32,
                       *, index_targets: bool = True, arch: int = 90) -> AotResult:
    """Compile what ``kernel`` launches for (``n``, ``c``) ``dtype`` logits on ``sm_<arch>``."""
    return compile_jobs([AotJob.for_kernel(kernel, n, c, dtype, index_targets=index_targets, arch=arch)])[0]


def _main() -> None:
    jobs = [AotJob(**j) for j in json.loads(sys.stdin.read())]
    results = []
    for job in jobs:
        r = asdict(_compile_here(job))
        r.pop("job")
        results.append(r)
    print(json.dumps(results))


if __name__ == "__main__":
    _main()
