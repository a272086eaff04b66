"""CPU kernel microbenchmark: forward + backward of every catalogue loss.

Providers: ``cpp`` (the fused C++ backend), ``eager`` (the torch autograd backend,
``nlfs.Loss(expr, backend="torch")``: the protected interpreter), ``compile`` (``torch.compile`` of the
torch backend's forward and backward; compile time reported separately in ``compile_s``), ``plain``
(the formula written by hand in plain PyTorch, ``bench/_plain.py``: what a user without nlfs would
run), ``plain-compile`` (that under ``torch.compile``) and ``native`` (``F.cross_entropy``, for CE
only). Median of repeated forward+backward calls, speedup vs eager (and, in the summary and the
notes, cpp against plain), GB/s against the minimum bytes (read logits and target, write the
gradient).

    python -m bench.kernels_cpu                       # writes bench/results/kernels_cpu.{csv,md}
    python -m bench.kernels_cpu --compile-losses all  # torch.compile every loss (slow on 2 cores)
    python -m bench.kernels_cpu --random 40           # also 40 random candidates per search space

With ``--random N``, N random expressions from each search space (NLFS and GP, fixed seeds; named
constants 0.5) are timed at (1024, 100), cpp against eager: what a search actually evaluates, most
of them on the kernel's general path rather than the target-specialised one the catalogue mostly
takes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
import torch._dynamo
import torch.nn.functional as F

import nlfs
from bench._plain import PLAIN
from bench._schema import KERNEL_COLUMNS, machine_name, today, write_csv, write_markdown

SHAPES = [(128, 10), (2048, 10), (1024, 100), (8192, 1000)]
RESULTS = Path(__file__).parent / "results"
ROUNDS = 3


def _samples(fn, min_reps, max_reps, budget_s):
    times = []
    start = time.perf_counter()
    while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def _stats(times):
    times = sorted(times)
    q = lambda f: times[min(len(times) - 1, int(f * len(times)))] * 1e3
    return statistics.median(times) * 1e3, q(0.2), q(0.8)


def _step(loss_fn, logits, target):
    def run():
        z = logits.detach().requires_grad_(True)
        loss_fn(z, target).backward()
    return run


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--losses", default="all", help="comma-separated catalogue names, or all")
    ap.add_argument("--compile-losses", default="CE,NGL",
                    help="losses to torch.compile (all = every loss; none = skip)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--random", type=int, default=0, metavar="N",
                    help="also time N random candidates per search space at (1024, 100)")
    ap.add_argument("--out", type=Path, default=RESULTS / "kernels_cpu")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    from nlfs.backends import cpp_threads

    cpp_threads(args.threads, load=True)
    cfg = torch._dynamo.config
    for key in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit",
                "accumulated_cache_size_limit"):
        if hasattr(cfg, key):
            setattr(cfg, key, 10_000)

    names = nlfs.losses.elementwise() if args.losses == "all" else args.losses.split(",")  # cpp: elementwise
    compile_names = (set(names) if args.compile_losses == "all" else
                     set() if args.compile_losses == "none" else set(args.compile_losses.split(",")))
    machine, date = machine_name(), today()
    load_start = os.getloadavg()
    rows = []
    for b, c in SHAPES:
        g = torch.Generator().manual_seed(0)
        logits = torch.randn(b, c, generator=g) * 3
        target = torch.randint(0, c, (b,), generator=g)
        min_bytes = b * c * 4 * 2 + b * 8
        for name in names:
            providers = {"eager": nlfs.Loss(name, backend="torch"), "cpp": nlfs.Loss(name, backend="cpp")}
            if name in PLAIN:
                providers["plain"] = PLAIN[name]
            if name == "CE":
                providers["native"] = F.cross_entropy
            # Interleaved: ROUNDS rounds, each timing every provider in turn, so load from other jobs
            # on a shared machine hits all providers alike; statistics over all samples.
            steps = {prov: _step(fn, logits, target) for prov, fn in providers.items()}
            for fn in steps.values():
                fn()
                fn()
            samples = {prov: [] for prov in steps}
            for _ in range(ROUNDS):
                for prov, fn in steps.items():
                    samples[prov] += _samples(fn, 2, 100, 0.4 / ROUNDS)
            res = {prov: (*_stats(t), "", "") for prov, t in samples.items()}
            if name in compile_names:
                torch._dynamo.reset()
                # the torch backend's kernel itself (nlfs.Loss's input checks would graph-break)
                module = nlfs.Loss(name, backend="torch")
                kernel = module.kernel_for(logits.device)[1]

                def fwd_bwd(z, t, kernel=kernel, consts=module.constants):
                    z = z.detach().requires_grad_(True)
                    out = kernel(z, t, consts).mean()
                    (grad,) = torch.autograd.grad(out, z)
                    return out, grad

                compiled = torch.compile(fwd_bwd, fullgraph=False, dynamic=False)
                t0 = time.perf_counter()
                compiled(logits, target)
                compile_s = time.perf_counter() - t0
                cfn = lambda compiled=compiled: compiled(logits, target)  # noqa: E731
                cfn()
                res["compile"] = (*_stats(_samples(cfn, 5, 300, 0.4)), compile_s,
                                  "torch.compile of forward+autograd.grad")
                if name in PLAIN:
                    res["plain-compile"] = _compiled_plain(PLAIN[name], logits, target)
            eager_ms = res["eager"][0]
            if "plain" in res:  # the figure a user cares about: against the formula written by hand
                res["cpp"] = (*res["cpp"][:4], f"{res['plain'][0] / res['cpp'][0]:.2f}x plain")
            for prov, (med, p20, p80, compile_s, notes) in res.items():
                rows.append({
                    "date": date, "machine": machine, "device": "cpu", "dtype": "float32", "loss": name,
                    "provider": prov, "batch": b, "classes": c, "median_ms": med, "p20_ms": p20,
                    "p80_ms": p80, "speedup_vs_eager": eager_ms / med,
                    "gbps": min_bytes / (med * 1e-3) / 1e9, "pct_copy_bw": "", "compile_s": compile_s,
                    "notes": (notes + "; " if notes else "") + (f"threads={args.threads}" if prov == "cpp" else ""),
                })
            print(f"{b}x{c} {name}: " + ", ".join(f"{p} {r[0]:.3f}ms" for p, r in res.items()), flush=True)

    if args.random:
        rows += _random_candidates(args.random, machine, date, args.threads)

    # ---- summary against the targets
    def med_speedup(b, c):
        sp = [r["speedup_vs_eager"] for r in rows
              if r["provider"] == "cpp" and (r["batch"], r["classes"]) == (b, c)
              and not r["loss"].startswith("random")]
        return statistics.median(sp) if sp else float("nan")

    load_end = os.getloadavg()
    fmt_load = lambda la: "/".join(f"{x:.2f}" for x in la)  # noqa: E731
    lines = [f"Machine: {machine}; date: {date}; float32; forward+backward; torch {torch.__version__}; "
             f"threads={args.threads}; compiled losses: {', '.join(sorted(compile_names)) or 'none'}.",
             "",
             f"Load average (1/5/15 min) at start {fmt_load(load_start)}, at end {fmt_load(load_end)} on "
             f"{os.cpu_count()} cores: other jobs may share the machine, so absolute times are noisy; "
             f"providers are timed interleaved ({ROUNDS} rounds) so ratios are fairer than absolutes.",
             ""]
    for b, c in SHAPES:
        lines.append(f"- ({b}, {c}): median cpp speedup vs eager over the catalogue: "
                     f"{med_speedup(b, c):.2f}x")
    for b, c in SHAPES:
        for base in ("plain", "plain-compile"):
            sp = _vs(rows, b, c, base)
            if sp:
                lines.append(f"- ({b}, {c}): median cpp speedup vs {base} PyTorch over {len(sp)} losses: "
                             f"{statistics.median(sp):.2f}x (min {min(sp):.2f}x)")
    target = med_speedup(1024, 100)
    verdict = "met" if target >= 3 else "NOT met"
    lines.append(f"- Target >= 3x vs eager at (1024, 100): {verdict} ({target:.2f}x)")
    for b, c in SHAPES:
        ce = {r["provider"]: r["median_ms"] for r in rows
              if r["loss"] == "CE" and (r["batch"], r["classes"]) == (b, c)}
        if "native" in ce and "cpp" in ce:
            ratio = ce["cpp"] / ce["native"]
            lines.append(f"- CE at ({b}, {c}): cpp / native cross_entropy = {ratio:.2f} "
                         f"({'within' if ratio <= 1.5 else 'NOT within'} 1.5x)")
    for space in ("nlfs", "gp"):
        sp = sorted(r["speedup_vs_eager"] for r in rows
                    if r["provider"] == "cpp" and r["loss"].startswith(f"random-{space}"))
        if sp:
            lines.append(f"- {len(sp)} random {space} candidates at (1024, 100): cpp speedup vs eager median "
                         f"{statistics.median(sp):.2f}x, min {sp[0]:.2f}x, max {sp[-1]:.2f}x")
    preamble = "\n".join(lines)
    print(preamble)
    write_csv(args.out.with_suffix(".csv"), rows)
    write_markdown(args.out.with_suffix(".md"), rows,
                   ["loss", "provider", "batch", "classes", "median_ms", "p20_ms", "p80_ms",
                    "speedup_vs_eager", "gbps", "compile_s", "notes"],
                   "CPU kernel benchmark (forward + backward)", preamble)
    assert set(KERNEL_COLUMNS) >= {"median_ms", "speedup_vs_eager"}


def _vs(rows, b, c, base):
    """cpp's speedup over provider ``base`` for each catalogue loss timed with both at (b, c)."""
    by = {(r["loss"], r["provider"]): r["median_ms"] for r in rows if (r["batch"], r["classes"]) == (b, c)}
    return [by[(loss, base)] / by[(loss, "cpp")] for loss, prov in by if prov == base and (loss, "cpp") in by]


def _compiled_plain(fn, logits, target):
    """(median, p20, p80, compile_s, notes) of ``torch.compile`` of the hand-written forward+backward."""
    torch._dynamo.reset()

    def fwd_bwd(z, t):
        z = z.detach().requires_grad_(True)
        out = fn(z, t)
        (grad,) = torch.autograd.grad(out, z)
        return out, grad

    compiled = torch.compile(fwd_bwd, fullgraph=False, dynamic=False)
    t0 = time.perf_counter()
    compiled(logits, target)
    compile_s = time.perf_counter() - t0
    run = lambda: compiled(logits, target)  # noqa: E731
    run()
    return (*_stats(_samples(run, 5, 300, 0.4)), compile_s, "torch.compile of the hand-written formula")


def _random_candidates(n, machine, date, threads):
    import random

    from nlfs.spaces import GPSpace, NLFSSpace

    b, c = 1024, 100
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(b, c, generator=g) * 3
    target = torch.randint(0, c, (b,), generator=g)
    rows = []
    for space_name, space, seed in (("nlfs", NLFSSpace(), 7), ("gp", GPSpace(), 8)):
        rng = random.Random(seed)
        for i in range(n):
            expr = space.random_expr(rng)
            consts = {k: 0.5 for k in expr.constants}
            steps = {prov: _step(nlfs.Loss(expr, backend=prov, constants=consts), logits, target)
                     for prov in ("torch", "cpp")}
            samples = {prov: [] for prov in steps}
            for fn in steps.values():
                fn()
            for _ in range(ROUNDS):
                for prov, fn in steps.items():
                    samples[prov] += _samples(fn, 2, 50, 0.15 / ROUNDS)
            med = {prov: _stats(t)[0] for prov, t in samples.items()}
            for prov, label in (("torch", "eager"), ("cpp", "cpp")):
                m, p20, p80 = _stats(samples[prov])
                rows.append({
                    "date": date, "machine": machine, "device": "cpu", "dtype": "float32",
                    "loss": f"random-{space_name}#{i}", "provider": label, "batch": b, "classes": c,
                    "median_ms": m, "p20_ms": p20, "p80_ms": p80, "speedup_vs_eager": med["torch"] / m,
                    "gbps": (b * c * 4 * 2 + b * 8) / (m * 1e-3) / 1e9, "pct_copy_bw": "", "compile_s": "",
                    "notes": str(expr) if label == "eager" else f"threads={threads}",
                })
            print(f"random {space_name} #{i}: {med['torch'] / med['cpp']:.2f}x  {expr}", flush=True)
    return rows


if __name__ == "__main__":
    main()
