"""GPU microbenchmark of the loss kernels: fused forward+backward time per (batch, classes).

Providers: ``triton`` (generated fused kernel, the backend's launch: 4 elements per thread),
``triton-ept8`` (the same kernel at 8 elements per thread, to settle that default side by side),
``triton-kernel`` (the generated kernel's launch alone, without autograd or the loss reduction:
the device time the fwd+bwd rows add their overhead to), ``triton-general`` (never the
target-specialised bodies, to check the backend's choice of them; only
where the backend chose them), ``compile_s`` is the first call (it includes Triton's compile for the
first launch of a configuration: the triton variants share one generated module),
``eager`` (torch backend, autograd), ``compile`` (torch.compile of the eager loss, one graph per shape,
recompile limit raised so it never falls back to eager; compile time in ``compile_s``; only at
``--compile-shapes``, where the target applies), ``plain`` (the formula written by hand in plain
PyTorch, ``bench/_plain.py``), ``plain-compile`` (that under torch.compile, at ``--compile-shapes``),
``native`` (F.cross_entropy, CE only). The target report also gives triton against plain PyTorch.

On CUDA, time is ``triton.testing.do_bench`` of ``loss(z, t).backward()``: L2 flushed before each
run (at (8192, 1000) the logits would otherwise sit in the 50 MB L2), runs enqueued back to back so
host overhead overlaps the device; median / p20 / p80. GB/s counts the minimum traffic (read logits
and targets, write the gradient and the loss rows) and is also given as % of the device-to-device
copy bandwidth measured the same way. The Markdown ends with the issue's targets, PASS/FAIL.
CSV + Markdown into ``bench/results/`` via ``bench/_schema.py``.

    python -m bench.kernels_gpu                      # on a GPU (fp32)
    python -m bench.kernels_gpu --dtype bfloat16
    TRITON_INTERPRET=1 python -m bench.kernels_gpu --smoke   # CPU: proves the script runs
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

SHAPES = [(128, 10), (2048, 10), (1024, 100), (8192, 1000), (4096, 32768)]
SMOKE_SHAPES = [(4, 10), (3, 5000)]
LOSSES = ["CE", "Focal", "NGL", "SCE"]
TARGET_SHAPES = [(8192, 1000), (4096, 32768)]  # "(8192,1000) and larger"


def measure(fn, device, iters, rep_ms=100) -> tuple[float, float, float]:
    """(median, p20, p80) milliseconds of ``fn()``: ``iters`` runs on the CPU, ``rep_ms`` of runs on CUDA."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return tuple(do_bench(fn, warmup=25, rep=rep_ms, quantiles=[0.5, 0.2, 0.8]))
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    s = sorted(times)
    q = lambda f: s[min(len(s) - 1, int(f * len(s)))]
    return statistics.median(s), q(0.2), q(0.8)


def copy_bandwidth_gbps(device, iters=20) -> float:
    import torch

    nbytes = (256 << 20) if device.type == "cuda" else (16 << 20)
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return 2 * nbytes / (measure(lambda: dst.copy_(src), device, iters, rep_ms=200)[0] * 1e-3) / 1e9


def target_report(rows) -> list[str]:
    """The issue's targets, checked on the rows of one run (PASS/FAIL per loss and shape)."""
    lines = []
    by = {(r["loss"], r["provider"], r["batch"], r["classes"]): r for r in rows if "median_ms" in r}
    for (loss, prov, b, c), r in sorted(by.items()):
        if prov != "triton" or (b, c) not in TARGET_SHAPES:
            continue
        checks = [f"{r['pct_copy_bw']:.0f}% of copy bandwidth (>= 70%)", r["pct_copy_bw"] >= 70]
        eager = by.get((loss, "eager", b, c))
        if eager:
            sp = eager["median_ms"] / r["median_ms"]
            checks += [f"{sp:.2f}x eager (>= 3x)", sp >= 3]
        for base in ("plain", "plain-compile"):  # information, not a target: the user's alternative
            other = by.get((loss, base, b, c))
            if other:
                checks += [f"{other['median_ms'] / r['median_ms']:.2f}x {base} PyTorch (info)", True]
        comp = by.get((loss, "compile", b, c))
        if comp:
            ratio = r["median_ms"] / comp["median_ms"]
            checks += [f"{ratio:.2f}x torch.compile's time (<= 1)", ratio <= 1.0]
        native = by.get((loss, "native", b, c))
        if native:
            ratio = r["median_ms"] / native["median_ms"]
            checks += [f"{ratio:.2f}x native cross_entropy's time (<= 1.2)", ratio <= 1.2]
        parts = [f"{checks[i]} {'PASS' if checks[i + 1] else 'FAIL'}" for i in range(0, len(checks), 2)]
        lines.append(f"- {loss} ({b}, {c}): " + "; ".join(parts))
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, few iterations (CPU interpreter ok)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--losses", default=",".join(LOSSES))
    ap.add_argument("--iters", type=int, default=50, help="timed runs on the CPU (smoke)")
    ap.add_argument("--rep-ms", type=int, default=100, help="milliseconds of timed runs per point on CUDA")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--compile-shapes", default=",".join(f"{b}x{c}" for b, c in TARGET_SHAPES),
                    help="shapes at which torch.compile is measured (each is a compile)")
    ap.add_argument("--shapes", default="", help="BxC list instead of the default shapes")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)

    import torch
    import torch.nn.functional as F

    import nlfs
    from bench._plain import PLAIN
    from bench._schema import KERNEL_COLUMNS, machine_name, today, write_csv, write_markdown
    from nlfs.backends import _triton as triton_backend
    from nlfs.backends._triton import launch_config

    cuda = torch.cuda.is_available()
    if not cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("no CUDA device: run with TRITON_INTERPRET=1 ... --smoke on CPU")
    device = torch.device("cuda" if cuda else "cpu")
    dtype = getattr(torch, args.dtype)
    parse_shapes = lambda text: [tuple(int(v) for v in s.lower().split("x")) for s in text.split(",") if s]
    shapes = SMOKE_SHAPES if args.smoke else (parse_shapes(args.shapes) or SHAPES)
    compile_shapes = set(parse_shapes(args.compile_shapes))
    iters = 3 if args.smoke else args.iters
    warmup = 1 if args.smoke else 3
    copy_bw = copy_bandwidth_gbps(device)
    for knob in ("recompile_limit", "cache_size_limit"):  # one graph per shape and loss; the name varies
        if hasattr(torch._dynamo.config, knob):
            setattr(torch._dynamo.config, knob, 256)
    rows = []
    out = Path(args.out)
    stem = f"kernels_gpu{'_smoke' if args.smoke else ''}_{args.dtype}"
    timing = ("triton.testing.do_bench (L2 flushed, runs back to back)" if cuda
              else f"perf_counter over {iters} runs")

    def flush():  # after every shape: a run stopped by a time limit keeps what it measured
        write_csv(out / f"{stem}.csv", rows)
        pre = (f"{machine_name()}; {args.dtype} logits; median fwd+bwd ({timing}); device copy bandwidth "
               f"{copy_bw:.1f} GB/s; GB/s counts the minimum traffic (logits in, gradient out).")
        report = target_report(rows)
        if report:
            pre += "\n\nTargets (issue #3), this run:\n\n" + "\n".join(report)
        write_markdown(out / f"{stem}.md", rows, KERNEL_COLUMNS, "Loss kernel microbenchmark", pre)
        return report

    for loss_name in args.losses.split(","):
        mods = {"triton": nlfs.Loss(loss_name, backend="triton"),
                "triton-ept8": nlfs.Loss(loss_name, backend="triton"),
                "triton-general": nlfs.Loss(loss_name, backend="triton"),
                "eager": nlfs.Loss(loss_name, backend="torch")}
        mods["triton-ept8"].kernel_for(device)[1].elems_per_thread = 8
        mods["triton-general"].kernel_for(device)[1].specialise = False
        for b, c in shapes:
            g = torch.Generator().manual_seed(0)
            logits = (torch.randn(b, c, generator=g) * 3).to(device=device, dtype=dtype)
            target = torch.randint(0, c, (b,), generator=g).to(device)
            el = logits.element_size()
            min_bytes = b * c * el * 2 + b * 8 + b * 4  # read logits, write grad, targets, loss rows
            providers = dict(mods)
            if not args.no_compile and cuda and (b, c) in compile_shapes:
                providers["compile"] = torch.compile(mods["eager"], dynamic=False)
            if loss_name in PLAIN:
                providers["plain"] = PLAIN[loss_name]
                if not args.no_compile and cuda and (b, c) in compile_shapes:
                    providers["plain-compile"] = torch.compile(PLAIN[loss_name], dynamic=False)
            if loss_name == "CE":
                providers["native"] = lambda z, t: F.cross_entropy(z, t)
            base_ms = None
            default = mods["triton"].kernel_for(device)[1]
            cfg = launch_config(b, c, "gpu" if cuda else "interp")
            ept = default.elems_per_thread or triton_backend.ELEMS_PER_THREAD
            same_as_default = not default.specialised(cfg.kernel, ept, cfg.blocks.get("BLOCK_C", 0))
            consts = mods["triton"].constants.to(device)
            providers["triton-kernel"] = lambda z, t: default(z.detach(), t, consts)
            for prov, fn in providers.items():
                if prov == "triton-general" and same_as_default:  # the very kernel "triton" ran: no row
                    continue
                z = logits.clone().requires_grad_(True)

                def step(fn=fn, z=z, target=target, prov=prov):
                    z.grad = None
                    if prov == "triton-kernel":  # the launch alone: no autograd, no loss reduction
                        fn(z, target)
                    else:
                        fn(z, target).backward()

                row = dict(date=today(), machine=machine_name(), device=str(device), dtype=args.dtype,
                           loss=loss_name, provider=prov, batch=b, classes=c,
                           notes=("smoke, TRITON_INTERPRET=1" if not cuda else
                                  {"triton-ept8": "8 elements/thread", "triton-general": "general bodies",
                                   "triton-kernel": "kernel launch only"}.get(prov, "")))
                try:
                    t0 = time.perf_counter()
                    step()  # first call: JIT / torch.compile
                    if cuda:
                        torch.cuda.synchronize()
                    first = time.perf_counter() - t0
                    for _ in range(warmup):
                        step()
                    med, p20, p80 = measure(step, device, iters, args.rep_ms)
                except Exception as err:  # one provider failing (out of memory, say) is a row, not a crash
                    row["notes"] = f"failed: {type(err).__name__}: {str(err)[:120]}"
                    rows.append(row)
                    print(f"{loss_name:6s} {prov:14s} {b:6d}x{c:<6d} {row['notes']}", flush=True)
                    continue
                finally:
                    z.grad = None
                if prov == "eager":
                    base_ms = med
                gbps = min_bytes / (med * 1e-3) / 1e9
                row.update(median_ms=med, p20_ms=p20, p80_ms=p80, gbps=gbps, pct_copy_bw=100 * gbps / copy_bw,
                           compile_s=first if prov == "compile" or prov.startswith("triton") else "")
                rows.append(row)
                print(f"{loss_name:6s} {prov:14s} {b:6d}x{c:<6d} {med:9.3f} ms {gbps:8.2f} GB/s", flush=True)
            for r in rows:
                if (r["loss"] == loss_name and r["batch"] == b and r["classes"] == c and base_ms
                        and "median_ms" in r):
                    r["speedup_vs_eager"] = base_ms / r["median_ms"]
            del logits, target, providers
            if cuda:
                torch.cuda.empty_cache()
            flush()
    report = flush()
    if report:
        print("\n".join(report))
    print(f"wrote {out / stem}.csv/.md")
    return rows

if __name__ == "__main__":
    main()
