"""GPU microbenchmark of the loss kernels: fused forward+backward time per (batch, classes).

Providers: ``triton`` (generated fused kernel), ``eager`` (torch backend, autograd), ``compile``
(torch.compile of the eager loss; compile time reported separately), ``native`` (F.cross_entropy,
CE only). Median / p20 / p80 of fwd+bwd over CUDA events; GB/s against the minimum traffic
(read logits + targets, write the gradient and the loss rows) and as % of the measured
device-to-device copy bandwidth. CSV + Markdown into ``bench/results/`` via ``bench/_schema.py``.

    python -m bench.kernels_gpu                      # on a GPU
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


def _timer(device):
    import torch

    if device.type == "cuda":
        def run(fn, iters):
            times = []
            for _ in range(iters):
                a = torch.cuda.Event(enable_timing=True)
                b = torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b))
            return times
    else:
        def run(fn, iters):
            times = []
            for _ in range(iters):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
            return times
    return run


def copy_bandwidth_gbps(device, nbytes=256 << 20, iters=20) -> float:
    import torch

    if device.type != "cuda":
        nbytes = 16 << 20
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    times = _timer(device)(lambda: dst.copy_(src), iters)
    return 2 * nbytes / (statistics.median(times) * 1e-3) / 1e9


def _quantiles(times):
    s = sorted(times)
    q = lambda f: s[min(len(s) - 1, int(f * len(s)))]
    return statistics.median(s), q(0.2), q(0.8)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, few iterations (CPU interpreter ok)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--losses", default=",".join(LOSSES))
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)

    import torch
    import torch.nn.functional as F

    import nlfs
    from bench._schema import KERNEL_COLUMNS, machine_name, today, write_csv, write_markdown

    cuda = torch.cuda.is_available()
    if not cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("no CUDA device: run with TRITON_INTERPRET=1 ... --smoke on CPU")
    device = torch.device("cuda" if cuda else "cpu")
    dtype = getattr(torch, args.dtype)
    shapes = SMOKE_SHAPES if args.smoke else SHAPES
    iters = 3 if args.smoke else args.iters
    warmup = 1 if args.smoke else 10
    run = _timer(device)
    copy_bw = copy_bandwidth_gbps(device)
    torch._dynamo.config.recompile_limit = 256  # one graph per shape and loss
    torch._dynamo.config.cache_size_limit = 256
    rows = []
    for loss_name in args.losses.split(","):
        mods = {"triton": nlfs.Loss(loss_name, backend="triton"),
                "eager": nlfs.Loss(loss_name, backend="torch")}
        for b, c in shapes:
            g = torch.Generator().manual_seed(0)
            logits = (torch.randn(b, c, generator=g) * 3).to(device=device, dtype=dtype)
            target = torch.randint(0, c, (b,), generator=g).to(device)
            el = logits.element_size()
            min_bytes = b * c * el * 2 + b * 8 + b * 4  # read logits, write grad, targets, loss rows
            providers = {
                "triton": mods["triton"],
                "eager": mods["eager"],
            }
            if not args.no_compile and cuda:
                providers["compile"] = torch.compile(mods["eager"], dynamic=False)
            if loss_name == "CE":
                providers["native"] = lambda z, t: F.cross_entropy(z, t)
            base_ms = None
            for prov, fn in providers.items():
                z = logits.clone().requires_grad_(True)

                def step(fn=fn, z=z):
                    z.grad = None
                    fn(z, target).backward()

                compile_s = ""
                t0 = time.perf_counter()
                step()  # first call: JIT / torch.compile
                if cuda:
                    torch.cuda.synchronize()
                first = time.perf_counter() - t0
                if prov in ("compile", "triton"):
                    compile_s = first
                for _ in range(warmup):
                    step()
                med, p20, p80 = _quantiles(run(step, iters))
                if prov == "eager":
                    base_ms = med
                gbps = min_bytes / (med * 1e-3) / 1e9
                rows.append(dict(date=today(), machine=machine_name(), device=str(device), dtype=args.dtype,
                                 loss=loss_name, provider=prov, batch=b, classes=c, median_ms=med,
                                 p20_ms=p20, p80_ms=p80, gbps=gbps, pct_copy_bw=100 * gbps / copy_bw,
                                 compile_s=compile_s,
                                 notes=("smoke, TRITON_INTERPRET=1" if not cuda else "")))
                print(f"{loss_name:6s} {prov:8s} {b:6d}x{c:<6d} {med:9.3f} ms {gbps:8.2f} GB/s", flush=True)
            for r in rows:
                if r["loss"] == loss_name and r["batch"] == b and r["classes"] == c and base_ms:
                    r["speedup_vs_eager"] = base_ms / r["median_ms"]
    out = Path(args.out)
    stem = f"kernels_gpu{'_smoke' if args.smoke else ''}_{args.dtype}"
    write_csv(out / f"{stem}.csv", rows)
    pre = (f"{machine_name()}; median fwd+bwd of {iters} runs; device copy bandwidth "
           f"{copy_bw:.1f} GB/s; GB/s counts the minimum traffic (logits in, gradient out).")
    write_markdown(out / f"{stem}.md", rows, KERNEL_COLUMNS, "Loss kernel microbenchmark", pre)
    print(f"wrote {out / stem}.csv/.md")
    return rows


if __name__ == "__main__":
    main()
