"""Surrogate-evaluation throughput: CPU evaluations per hour per loss backend, and the loss's share of
the training step. On CUDA also time-to-accuracy.

    python bench/surrogate.py [--evals 2] [--train-size 10000] [--epochs 3] [--threads 1]

Writes bench/results/surrogate_cpu.csv and .md (bench/results/surrogate_gpu.* on CUDA). Uses
Fashion-MNIST when installed; otherwise digits, with an explicit note (the result names the dataset).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._schema import machine_name, today, write_csv, write_markdown  # noqa: E402
from nlfs import Loss  # noqa: E402
from nlfs.backends import available_backends  # noqa: E402
from nlfs.data import DatasetError, load_dataset  # noqa: E402
from nlfs.models import build_model  # noqa: E402
from nlfs.train import TrainConfig, train  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CPU_COLUMNS = ["date", "machine", "device", "dataset", "model", "loss", "backend", "threads", "train_size",
               "epochs", "steps", "evals", "wall_s_median", "evals_per_hour", "val_acc_mean", "step_ms",
               "loss_ms", "loss_share_pct", "notes"]
GPU_COLUMNS = ["date", "machine", "device", "dataset", "model", "loss", "backend", "amp", "compile",
               "target_acc", "epochs", "val_acc", "wall_s", "compile_s", "notes"]


def pick_dataset(data_root):
    try:
        load_dataset("fashion-mnist", data_root)
        return "fashion-mnist", ""
    except DatasetError as err:
        return "digits", f"Fashion-MNIST absent ({str(err).split(';')[0]}): ran on digits instead"


def step_split(ds, loss_name: str, backend: str, batch: int, device, reps: int = 30) -> tuple[float, float]:
    """(full training step ms, loss forward+backward alone ms), medians over ``reps``."""
    torch.manual_seed(0)
    model = build_model("surrogate", ds.in_channels, ds.num_classes, ds.image_size).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    loss_fn = Loss(loss_name, backend=backend)
    x = torch.randn(batch, *ds.shape, device=device)
    y = torch.randint(0, ds.num_classes, (batch,), device=device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    full, alone = [], []
    for i in range(reps + 5):
        sync()
        t = time.perf_counter()
        logits = model(x)
        loss = loss_fn(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()
        if i >= 5:
            full.append(time.perf_counter() - t)
        z = logits.detach().requires_grad_()
        sync()
        t = time.perf_counter()
        loss_fn(z, y).backward()
        sync()
        if i >= 5:
            alone.append(time.perf_counter() - t)
    return statistics.median(full) * 1e3, statistics.median(alone) * 1e3


def cpu_bench(args) -> list[dict]:
    """Backends interleaved (cpp, torch, cpp, torch, ...) so drifting machine load hits both alike."""
    dataset, note = pick_dataset(args.data_root)
    ds = load_dataset(dataset, args.data_root)
    avail = available_backends()
    backends = [b for b in ("cpp", "torch") if not avail.get(b)]
    skipped = {b: avail[b] for b in ("cpp", "torch") if avail.get(b)}
    machine, date = machine_name(), today()
    torch.set_num_threads(args.threads)
    train_size = min(args.train_size, len(ds.train_y) - 1000) if dataset == "fashion-mnist" else None
    load0 = os.getloadavg()[0]
    rows = []
    for loss in args.losses:
        cfg = TrainConfig(dataset=dataset, model="surrogate", epochs=args.epochs, train_size=train_size,
                          device="cpu", evaluate_test=False, data_root=args.data_root, threads=args.threads)
        walls = {b: [] for b in backends}
        accs = {b: [] for b in backends}
        steps = {}
        for seed in range(args.evals):
            for backend in backends:
                t = time.perf_counter()
                r = train(loss, cfg, seed=seed, backend=backend)
                walls[backend].append(time.perf_counter() - t)
                accs[backend].append(r.best_val_acc)
                steps[backend] = r.steps
                print(f"{loss}/{backend} seed {seed}: best val {r.best_val_acc:.4f} "
                      f"in {walls[backend][-1]:.2f}s ({r.steps} steps)"
                      f"{' FAILED ' + r.reason if r.diverged else ''}", flush=True)
        split = {b: [] for b in backends}
        for _ in range(3):
            for backend in backends:
                split[backend].append(step_split(ds, loss, backend, cfg.resolved().batch_size,
                                                 torch.device("cpu")))
        for backend in backends:
            wall = statistics.median(walls[backend])
            step_ms = statistics.median(x[0] for x in split[backend])
            loss_ms = statistics.median(x[1] for x in split[backend])
            rows.append(dict(date=date, machine=machine, device="cpu", dataset=dataset, model="surrogate",
                             loss=loss, backend=backend, threads=args.threads, train_size=train_size or "",
                             epochs=args.epochs, steps=steps[backend], evals=len(walls[backend]),
                             wall_s_median=wall, evals_per_hour=3600.0 / wall,
                             val_acc_mean=statistics.mean(accs[backend]), step_ms=step_ms, loss_ms=loss_ms,
                             loss_share_pct=100.0 * loss_ms / step_ms, notes=note))
        for backend, why in skipped.items():
            rows.append(dict(date=date, machine=machine, device="cpu", dataset=dataset, model="surrogate",
                             loss=loss, backend=backend, notes=f"skipped: {why}"))
            print(f"{loss}/{backend}: skipped ({why})", flush=True)
    load1 = os.getloadavg()[0]
    for row in rows:
        extra = f"1-min load average {load0:.1f} -> {load1:.1f} on {os.cpu_count()} cores (shared machine)"
        row["notes"] = "; ".join(x for x in (row.get("notes", ""), extra) if x)
    return rows


def gpu_bench(args) -> list[dict]:
    """Time to a target validation accuracy on CUDA: the fewest epochs (1, 2, 4, ...) that reach it."""
    dataset, note = pick_dataset(args.data_root)
    target = 0.90 if dataset == "fashion-mnist" else 0.95
    rows, machine, date = [], machine_name(), today()
    for loss in args.losses:
        for compile_ in (False, True):
            epochs = 1
            while epochs <= 32:
                cfg = TrainConfig(dataset=dataset, epochs=epochs, device="cuda", backend="auto",
                                  compile=compile_, evaluate_test=False, data_root=args.data_root)
                r = train(loss, cfg)
                print(f"GPU {loss} compile={compile_} {epochs} epochs: {r.best_val_acc:.4f} "
                      f"in {r.wall_time:.2f}s", flush=True)
                if r.best_val_acc >= target or r.diverged or epochs == 32:
                    rows.append(dict(date=date, machine=machine, device="cuda", dataset=dataset,
                                     model="surrogate", loss=loss, backend=r.backend, amp=r.amp,
                                     compile=compile_, target_acc=target, epochs=epochs,
                                     val_acc=r.best_val_acc, wall_s=r.wall_time, compile_s=r.compile_time,
                                     notes=note + (" (target not reached)"
                                                   if r.best_val_acc < target else "")))
                    break
                epochs *= 2
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--evals", type=int, default=2, help="evaluations per (loss, backend)")
    p.add_argument("--train-size", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: one search worker per core)")
    p.add_argument("--losses", nargs="+", default=["CE", "NGL"])
    p.add_argument("--data-root", default=None)
    p.add_argument("--skip-cpu", action="store_true")
    args = p.parse_args(argv)
    if not args.skip_cpu:
        rows = cpu_bench(args)
        write_csv(RESULTS / "surrogate_cpu.csv", rows, CPU_COLUMNS)
        ds = rows[0]["dataset"] if rows else "?"
        write_markdown(RESULTS / "surrogate_cpu.md", rows, CPU_COLUMNS,
                       "Surrogate evaluations per hour on CPU",
                       f"Dataset: **{ds}**. One evaluation = `nlfs.train.train(loss, "
                       f"TrainConfig(dataset={ds!r}, model='surrogate', epochs={args.epochs}, "
                       "train_size=..., evaluate_test=False))`, wall time of the whole call (split, "
                       f"training, validation passes) with {args.threads} torch thread(s); "
                       "evals_per_hour = 3600 / wall_s_median for ONE worker. "
                       "step_ms / loss_ms: median full training step (model forward+loss+backward+SGD) vs "
                       "the loss's forward+backward alone on the same logits; loss_share_pct = their ratio. "
                       "Both backends measured side by side in one run, interleaved; step timings are "
                       "medians of 3 interleaved rounds of 30 steps.")
    if torch.cuda.is_available():
        rows = gpu_bench(args)
        write_csv(RESULTS / "surrogate_gpu.csv", rows, GPU_COLUMNS)
        write_markdown(RESULTS / "surrogate_gpu.md", rows, GPU_COLUMNS, "Surrogate time-to-accuracy on GPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
