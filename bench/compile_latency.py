"""Compile latency of a new candidate for the Triton backend, and what the compiled kernel uses.

For the catalogue and N random candidates per search space (fixed seeds), with empty nlfs and Triton
caches: ``codegen_s`` (write the kernel source), ``import_s`` (import it; ``triton.jit`` decoration)
and ``compile_s`` (``triton.compile`` of the specialisation a launch at ``--shape``/``--dtype``
needs: TTIR -> TTGIR -> LLVM IR -> PTX -> cubin with ptxas). ``total_s`` is their sum: the latency a
search pays the first time it meets a candidate. On a CUDA machine ``compile_s`` is the real first
launch (compile, cubin load, launcher); without one the kernel is compiled ahead of time for
``--arch`` (no driver needed), which is the same compiler work on the host CPU. Registers and stack
bytes per thread come from the cubin (``cuobjdump -res-usage``). One process-wide warm-up compile
(LLVM and the backend loading) is reported separately, not counted per candidate.

    python -m bench.compile_latency                  # CPU: AOT for sm_90, bf16 at (256, 10)
    python -m bench.compile_latency --random 100 --shape 8192x1000 --dtype fp32
    python -m bench.compile_latency --shape 8192x1000 --forms auto,general   # target specialisation

Writes bench/results/compile_latency_<cpu|gpu>_<B>x<C>_<dtype>[_<forms>].{csv,md}.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RESULTS = Path(__file__).parent / "results"
COLUMNS = ["date", "machine", "target", "dtype", "batch", "classes", "elems_per_thread", "form", "loss",
           "kernel", "specialised", "num_warps", "codegen_s",
           "import_s", "compile_s", "total_s", "registers", "stack_bytes", "ptx_lines", "sass_instructions", "error"]
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def _candidates(n_random: int):
    import nlfs
    from nlfs.spaces import GPSpace, NLFSSpace

    # the elementwise catalogue: a loss over classes (NCE) has no fused kernel to compile
    out = [(name, nlfs.Loss(name, backend="torch").program) for name in nlfs.losses.elementwise()]
    for space_name, space, seed in (("nlfs", NLFSSpace(), 11), ("gp", GPSpace(), 12)):
        rng = random.Random(seed)
        out += [(f"random-{space_name}#{i}", nlfs.lower(space.random_expr(rng))) for i in range(n_random)]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--random", type=int, default=40, metavar="N", help="random candidates per space")
    ap.add_argument("--shape", default="256x10", help="BxC of the launch whose specialisation is compiled")
    ap.add_argument("--dtype", default="bf16", choices=list(DTYPES))
    ap.add_argument("--arch", type=int, default=90, help="compute capability without a GPU (90 = H100)")
    ap.add_argument("--elems-per-thread", default="4,8",
                    help="launch variants compiled side by side (the backend's default is 4)")
    ap.add_argument("--forms", default="auto",
                    help="auto (the backend's choice of target-specialised or general bodies), general "
                         "(never specialised), specialised (always): e.g. auto,general side by side")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("run without TRITON_INTERPRET=1: this measures the real compiler")
    tmp = tempfile.TemporaryDirectory()
    os.environ["NLFS_CACHE_DIR"] = str(Path(tmp.name) / "nlfs")
    os.environ["TRITON_CACHE_DIR"] = str(Path(tmp.name) / "triton")  # every compile is a cold one

    import torch

    from bench._schema import machine_name, today, write_csv, write_markdown
    from nlfs.backends import _triton as nlfs_triton
    from nlfs.backends._triton import compile_program
    from nlfs.backends._triton_aot import AotJob, compile_jobs

    b, c = (int(v) for v in args.shape.lower().split("x"))
    dtype = getattr(torch, DTYPES[args.dtype])
    cuda = torch.cuda.is_available()
    if cuda:
        major, minor = torch.cuda.get_device_capability()
        target = f"{torch.cuda.get_device_name(0)} (sm_{major}{minor}, JIT first launch)"
    else:
        target = f"sm_{args.arch} (AOT, no GPU)"

    def compile_one(kernel):
        if not cuda:
            r = compile_jobs([AotJob.for_kernel(kernel, b, c, dtype, arch=args.arch)])[0]
            return r, r.compile_s
        g = torch.Generator().manual_seed(0)
        logits = torch.randn(b, c, generator=g).to("cuda", dtype)
        target_ = torch.randint(0, c, (b,), generator=g).cuda()
        consts = torch.full((max(1, len(kernel.program.constants)),), 0.5, device="cuda")
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        kernel(logits, target_, consts)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        # resources of the same specialisation, from the AOT compile for this device
        r = compile_jobs([AotJob.for_kernel(kernel, b, c, dtype, arch=major * 10 + minor)])[0]
        return r, seconds

    import nlfs

    warm = compile_program(nlfs.lower(nlfs.parse("-y*log(p) + 0.001*p")))
    t0 = time.perf_counter()
    compile_one(warm)
    warmup_s = time.perf_counter() - t0
    print(f"process warm-up compile: {warmup_s:.2f} s", flush=True)

    rows = []
    machine, date = machine_name(), today()
    out = Path(args.out)
    forms_tag = "" if args.forms == "auto" else "_" + args.forms.replace(",", "-")
    stem = f"compile_latency_{'gpu' if cuda else 'cpu'}_{b}x{c}_{args.dtype}{forms_tag}"

    def summary():
        lines = [f"{machine}; target {target}; {args.dtype} logits at ({b}, {c}), class-index targets; "
                 f"cold nlfs and Triton caches; process warm-up compile {warmup_s:.2f} s (not counted); "
                 f"variants by elements per thread (warps = block elements / 32 / that).", ""]
        for ept, form in variants:
            for group in ("catalogue", "random-nlfs", "random-gp"):
                rs = [r for r in rows if r["elems_per_thread"] == ept and r["form"] == form and (
                    r["loss"].startswith(group) if group != "catalogue" else not r["loss"].startswith("random"))]
                ok = [r for r in rs if not r["error"]]
                if not ok:
                    continue
                tot = sorted(r["total_s"] for r in ok)
                label = f"{ept} elements/thread" + ("" if args.forms == "auto" else f", {form} bodies")
                lines.append(f"- {label}, {group}: {len(ok)}/{len(rs)} compiled; total per new "
                             f"candidate median {statistics.median(tot):.3f} s, "
                             f"p80 {tot[int(0.8 * (len(tot) - 1))]:.3f} s, max {tot[-1]:.3f} s; "
                             f"{sum(t < 0.5 for t in tot)}/{len(tot)} under 0.5 s; registers "
                             f"median {statistics.median(r['registers'] for r in ok):.0f}, max "
                             f"{max(r['registers'] for r in ok)}; PTX lines median "
                             f"{statistics.median(r['ptx_lines'] for r in ok):.0f}; "
                             f"{sum(r['stack_bytes'] > 0 for r in ok)} use stack")
        for ept in sorted({e for e, _ in variants}):  # each form that specialised against the general one
            general = {r["loss"]: r for r in rows if r["elems_per_thread"] == ept and r["form"] == "general"}
            for form in [f for _, f in variants if f != "general"] if general else []:
                mine = {r["loss"]: r for r in rows if r["elems_per_thread"] == ept and r["form"] == form}
                pairs = [(name, mine[name]["sass_instructions"] / general[name]["sass_instructions"])
                         for name in mine if name in general and mine[name]["specialised"]
                         and not mine[name]["error"] and not general[name]["error"]
                         and general[name]["sass_instructions"]]
                if pairs:
                    ratios = sorted(r for _, r in pairs)
                    lines.append(f"- {ept} elements/thread, {form}: {len(pairs)} candidates launched "
                                 f"target-specialised; static SASS instructions specialised/general median "
                                 f"{statistics.median(ratios):.2f}, range {ratios[0]:.2f}-{ratios[-1]:.2f}; "
                                 "catalogue: " + ", ".join(f"{n} {r:.2f}" for n, r in pairs
                                                           if not n.startswith("random")))
        return lines

    def flush():  # after every candidate: a run stopped by a time limit keeps what it measured
        write_csv(out / f"{stem}.csv", rows, COLUMNS)
        write_markdown(out / f"{stem}.md", rows, COLUMNS, "Triton compile latency per new candidate",
                       "\n".join(summary()))

    variants = [(int(v), form) for v in args.elems_per_thread.split(",") for form in args.forms.split(",")]
    forced = {"auto": None, "general": False, "specialised": True}
    for name, program in _candidates(args.random):
        for ept, form in variants:  # side by side: each candidate compiled cold in every variant
            nlfs_triton._MODULES.clear()
            for f in Path(os.environ["NLFS_CACHE_DIR"]).rglob("*.py"):
                f.unlink()
            kernel = compile_program(program)
            kernel.elems_per_thread = ept
            kernel.specialise = forced[form]
            # a Triton cache per variant: two variants that compile the same thing both compile cold
            os.environ["TRITON_CACHE_DIR"] = str(Path(tmp.name) / f"triton-{ept}-{form}")
            st = kernel.stats
            r, compile_s = compile_one(kernel)
            total = st.codegen_s + st.import_s + compile_s
            rows.append(dict(date=date, machine=machine, target=target, dtype=args.dtype, batch=b, classes=c,
                             elems_per_thread=ept, form=form, loss=name, kernel=r.kernel,
                             specialised=r.job.specialised, num_warps=r.num_warps,
                             codegen_s=st.codegen_s, import_s=st.import_s, compile_s=compile_s, total_s=total,
                             registers=r.registers, stack_bytes=r.stack_bytes, ptx_lines=r.ptx_lines,
                             sass_instructions=r.sass_instructions,
                             error=r.error[:200]))
            print(f"{name:18s} ept {ept} {form:8s}: {total:6.3f} s  regs {r.registers:3d}  stack {r.stack_bytes:3d}  "
                  f"ptx {r.ptx_lines:5d}  {r.error[:80]}", flush=True)
        flush()

    flush()
    print("\n".join(summary()[2:]))
    print(f"wrote {out / stem}.csv/.md")
    tmp.cleanup()
    return rows


if __name__ == "__main__":
    main()
