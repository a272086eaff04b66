"""Packed training throughput: trainings per hour one at a time (``nlfs.train.train``) vs K members in
one packed network (``nlfs.train.train_packed``).

    python -m bench.packed_training [--quick] [--ks 1,4,16,64,256] [--amps off,bf16]
        [--compile eager,compile,cudagraphs] [--regimes rung0,target] [--steps 32] [--data-root DIR]
    python -m bench.packed_training --check      # exactness of a pack on this device

For each regime (the search's rung 0 and its target regime, ``nlfs.search.SearchConfig`` on
Fashion-MNIST), precision and compile mode it times ``--steps`` optimizer steps, one validation pass
included, after a short warm-up (compilation, cuDNN autotuning and the loss kernels' first launches
excluded), of a sequential training and of packs of K, and extrapolates to the regime's length:
trainings per hour = 3600 x K / (seconds per step x the regime's steps). A timed run shorter than an
epoch counts its validation pass more often than the regime does, so the figures are slightly low for
both modes. ``cudagraphs`` is ``torch.compile`` with inductor's CUDA graphs (CUDA only). A K that does
not fit in memory is recorded as such and larger ones are skipped. Without Fashion-MNIST (``--data-root``
or the default place) the timing runs on random images of its shape and size, said in the notes.

Writes bench/results/packed_training_{cpu,gpu}.csv and .md, with machine and date. ``--quick``
(for the GPU session, under about 3 minutes on an H100): eager packs at every K in bf16 and fp32 for
both regimes, compiled with CUDA graphs for the sequential run and K = 64 only (rung 0, bf16), most
telling first, within a time budget (``--budget-s``, 120 s).
``--check``: a pack of three (CE, NGL, Focal; three init seeds; fp32, then bf16; on digits, else
briefly on the bench data) against each member trained alone: exit 1 when a member's data order or
initialisation differs, or its history or loss beyond float tolerance (see ``check``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._schema import machine_name, today, write_csv, write_markdown  # noqa: E402
from nlfs.data import DatasetError, load_dataset  # noqa: E402
from nlfs.search import SearchConfig  # noqa: E402
from nlfs.train import TrainConfig, train, train_packed  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
COLUMNS = ["date", "machine", "device", "dataset", "regime", "regime_steps", "batch", "amp", "compile", "mode",
           "k", "steps_timed", "s_per_step", "trainings_per_hour", "speedup_vs_sequential", "peak_mem_gib",
           "notes"]
LOSSES = ["CE", "NGL", "Focal", "SCE", "Poly1", "Taylor"]  # members cycle through these


def bench_data(data_root: str | None) -> tuple[str, str]:
    """(dataset, note): Fashion-MNIST when present, else random 28x28 images of its size in a temporary
    .npz (throughput does not depend on the pixels)."""
    try:
        load_dataset("fashion-mnist", data_root)
        return "fashion-mnist", ""
    except DatasetError:
        pass
    path = Path(tempfile.gettempdir()) / "nlfs_bench_fmnist_shape.npz"
    if not path.exists():
        rng = np.random.default_rng(0)
        np.savez(path, x_train=rng.integers(0, 256, (60000, 28, 28), dtype=np.uint8),
                 y_train=rng.integers(0, 10, 60000), x_test=rng.integers(0, 256, (10000, 28, 28), dtype=np.uint8),
                 y_test=rng.integers(0, 10, 10000))
    return str(path), "Fashion-MNIST absent: random images of its shape and size"


def regimes(dataset: str, data_root: str | None, device: str) -> dict[str, TrainConfig]:
    """The search's rung 0 and target regime on Fashion-MNIST, moved to ``dataset`` (the same sizes)."""
    search = SearchConfig(dataset="fashion-mnist")
    search.resolve()
    out = {"rung0": search.train_config(search.rung_list()[0]), "target": search.target_train_config()}
    for name, cfg in out.items():
        cfg = dataclasses.replace(cfg, data_root=data_root, device=device, evaluate_test=False).resolved()
        out[name] = dataclasses.replace(cfg, dataset=dataset) if dataset != "fashion-mnist" else cfg
    return out


def regime_steps(cfg: TrainConfig) -> tuple[int, int]:
    """(the regime's optimizer steps, its batch size), from a one-step training's record."""
    r = train("CE", dataclasses.replace(cfg, steps=1, eval_every=1))
    return (cfg.steps if cfg.steps is not None else cfg.epochs * (r.train_size // r.batch_size)), r.batch_size


def set_compile_mode(mode: str) -> None:
    if mode == "cudagraphs":
        import torch._inductor.config as inductor

        inductor.triton.cudagraphs = True
    elif mode == "compile":
        import torch._inductor.config as inductor

        inductor.triton.cudagraphs = False


def timed(cfg: TrainConfig, steps: int, k: int | None, repeats: int = 1):
    """Seconds per step of ``steps`` steps after a 2-step warm-up (the fastest of ``repeats`` runs),
    and peak memory (GiB, CUDA)."""
    losses = [LOSSES[i % len(LOSSES)] for i in range(k or 1)]
    run = (lambda c: [train(losses[0], c)]) if k is None else (lambda c: train_packed(losses, c, seeds=range(k)))
    run(dataclasses.replace(cfg, steps=2, eval_every=2))
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    # a member's wall_time is its share of the pack's time
    wall = min(sum(r.wall_time for r in run(dataclasses.replace(cfg, steps=steps, eval_every=steps)))
               for _ in range(repeats))
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    return wall / steps, peak


def plan(args, device: str) -> list[tuple[str, str, str, list[int | None]]]:
    """(regime, amp, compile mode, Ks with None for the sequential run), most telling first: with
    ``--quick`` bf16 rung 0 at every K, then CUDA graphs (sequential and K = 64), the target regime,
    fp32; the time budget cuts the tail."""
    runs = []
    for amp in args.amps:
        for mode in args.compile:
            for regime in args.regimes:
                if mode == "cudagraphs" and not device.startswith("cuda"):
                    continue
                ks = [None, *args.ks]
                if args.quick and mode != "eager":
                    if regime != "rung0" or amp != "bf16" or mode == "compile":
                        continue
                    ks = [None, *[k for k in args.ks if k == 64]]
                runs.append((regime, amp, mode, ks))
    if args.quick:
        def rank(run):
            regime, amp, mode, _ = run
            return (amp != "bf16", regime != "rung0", mode != "eager")
        runs.sort(key=rank)
    return runs


def measure(args, device: str) -> list[dict]:
    dataset, note = bench_data(args.data_root)
    machine, date = machine_name(), today()
    rows: list[dict] = []
    t_start = time.perf_counter()
    configs = regimes(dataset, args.data_root, device)
    lengths = {name: regime_steps(cfg) for name, cfg in configs.items() if name in args.regimes}
    for regime, amp, mode, ks in plan(args, device):
        total, bs = lengths[regime]
        set_compile_mode(mode)
        cfg = dataclasses.replace(configs[regime], amp=amp, compile=mode != "eager")
        steps = min(args.steps, total)
        seq = None
        for k in ks:
            if time.perf_counter() - t_start > args.budget_s:
                print(f"time budget of {args.budget_s:.0f} s spent: stopping", flush=True)
                return rows
            load = "" if device.startswith("cuda") else f"CPU load average {os.getloadavg()[0]:.1f} at start"
            row = dict(date=date, machine=machine, device=device, dataset=Path(dataset).name, regime=regime,
                       regime_steps=total, batch=bs, amp=amp, compile=mode,
                       mode="sequential" if k is None else "packed", k=k or 1, steps_timed=steps,
                       notes="; ".join(v for v in (note, load) if v))
            try:
                s, peak = timed(cfg, steps, k, args.repeats)
            except torch.OutOfMemoryError:
                torch.cuda.empty_cache()
                rows.append(dict(row, notes="out of memory"))
                print(f"{regime} {amp} {mode} K={k}: out of memory", flush=True)
                break
            except Exception as err:  # noqa: BLE001 - one failing mode must not lose the session's other points
                rows.append(dict(row, notes=f"failed: {type(err).__name__}: {str(err)[:200]}"))
                print(f"{regime} {amp} {mode} K={k}: failed: {type(err).__name__}: {err}", flush=True)
                break
            per_hour = 3600 * (k or 1) / (s * total)
            seq = per_hour if k is None else seq
            row.update(s_per_step=s, trainings_per_hour=per_hour, peak_mem_gib="" if peak is None else peak,
                       speedup_vs_sequential=per_hour / seq if seq else None)
            rows.append(row)
            print(f"{regime} {amp} {mode} {row['mode']} K={k or 1}: {s * 1e3:.1f} ms/step, "
                  f"{per_hour:.0f} trainings/h ({row['speedup_vs_sequential'] or 0:.2f}x)", flush=True)
    return rows


def check(args, device: str) -> int:
    """Each member of a pack of three against its training alone, fp32 then bf16; prints the
    differences, returns 1 when one is beyond tolerance. Early training on Fashion-MNIST turns rounding
    differences into visible ones within 20 steps (on this project's CPU the single trainer differed
    from itself by 7 points of validation accuracy between channels_last and contiguous tensors), so
    the check trains on digits (scikit-learn's, where the CPU tests find packed and single trainings
    within 1e-5 after 30 steps), else on the bench data for 8 steps at lr 0.02; and a member may differ
    from its training alone by up to 4x what that training differs from itself with contiguous
    tensors."""
    try:
        load_dataset("digits")
        dataset, note = "digits", ""
        base = TrainConfig(dataset="digits", device=device, evaluate_test=False).resolved()
        steps = min(args.steps, 30)
    except Exception:  # noqa: BLE001 - scikit-learn absent: the bench data, fewer steps
        dataset, note = bench_data(args.data_root)
        base = dataclasses.replace(regimes(dataset, args.data_root, device)["rung0"], lr=0.02)
        steps = min(args.steps, 8)
    losses, seeds = ["CE", "NGL", "Focal"], [0, 1, 2]
    bad = 0
    tf32 = torch.backends.cudnn.allow_tf32
    for amp, loss_rel, acc_tol in (("off", 1e-3, 0.01), ("bf16", 3e-2, 0.05)):
        # fp32 means fp32 here: TF32 convolutions would round the packed and single kernels differently
        torch.backends.cudnn.allow_tf32 = tf32 if amp != "off" else False
        cfg = dataclasses.replace(base, amp=amp, steps=steps, eval_every=max(1, steps // 2))
        pack = train_packed(losses, cfg, seeds=seeds)
        for loss, seed, member in zip(losses, seeds, pack):
            alone = train(loss, dataclasses.replace(cfg, init_seed=seed))
            other = train(loss, dataclasses.replace(cfg, init_seed=seed, channels_last=False))

            def diffs(r):
                d_loss = abs(r.final_train_loss - alone.final_train_loss) / max(abs(alone.final_train_loss), 1e-12)
                return d_loss, max(abs(a - b) for (_, a), (_, b) in zip(alone.history, r.history))

            d_loss, d_acc = diffs(member)
            own_loss, own_acc = diffs(other)
            same = member.order_digest == alone.order_digest and len(member.history) == len(alone.history)
            ok = (same and member.diverged == alone.diverged and d_loss <= max(loss_rel, 4 * own_loss)
                  and d_acc <= max(acc_tol, 4 * own_acc))
            bad += not ok
            print(f"{device} amp={amp} {loss} seed {seed}: final loss {alone.final_train_loss:.6g} alone, "
                  f"{member.final_train_loss:.6g} packed (rel {d_loss:.2e}; alone vs itself, contiguous: "
                  f"{own_loss:.2e}); val acc max diff {d_acc:.4f} (itself {own_acc:.4f}); same init and data "
                  f"order: {same} -> {'ok' if ok else 'DIFFERS'}", flush=True)
    torch.backends.cudnn.allow_tf32 = tf32
    print(f"packed exactness on {device} ({Path(dataset).name}{'; ' + note if note else ''}): "
          f"{'ok' if not bad else f'{bad} member(s) differ'}")
    return 1 if bad else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="the GPU session's short run")
    p.add_argument("--check", action="store_true", help="exactness of a pack on this device, then exit")
    p.add_argument("--ks", default="1,4,16,64,256")
    p.add_argument("--amps", default="bf16,off")
    p.add_argument("--compile", default="eager,compile,cudagraphs")
    p.add_argument("--regimes", default="rung0,target")
    p.add_argument("--steps", type=int, default=32, help="optimizer steps timed per run")
    p.add_argument("--repeats", type=int, default=1, help="timed runs per point (the fastest counts)")
    p.add_argument("--budget-s", type=float, default=None, help="start no new run after this many seconds")
    p.add_argument("--threads", type=int, default=1, help="CPU: torch threads")
    p.add_argument("--device", default="auto")
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", default=str(RESULTS))
    args = p.parse_args(argv)
    try:
        args.ks = [int(v) for v in args.ks.split(",")]
    except ValueError:
        p.error(f"--ks: {args.ks!r} is not a comma-separated list of integers")
    args.amps, args.compile, args.regimes = (args.amps.split(","), args.compile.split(","), args.regimes.split(","))
    for name, values, known in (("--amps", args.amps, ("off", "bf16")),
                                ("--compile", args.compile, ("eager", "compile", "cudagraphs")),
                                ("--regimes", args.regimes, ("rung0", "target"))):
        wrong = [v for v in values if v not in known]
        if wrong:
            p.error(f"{name}: unknown {', '.join(wrong)} (choose from {', '.join(known)})")
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else (
        "cpu" if args.device == "auto" else args.device)
    if device == "cpu":
        torch.set_num_threads(args.threads)
    if args.check:
        return check(args, device)
    if args.budget_s is None:
        args.budget_s = 120.0 if args.quick else float("inf")
    os.makedirs(args.out, exist_ok=True)
    rows = measure(args, device)
    kind = "gpu" if device.startswith("cuda") else "cpu"
    stem = Path(args.out) / f"packed_training_{kind}{'_quick' if args.quick else ''}"
    write_csv(stem.with_suffix(".csv"), rows, COLUMNS)
    gpu = torch.cuda.get_device_name() if kind == "gpu" else ""
    write_markdown(stem.with_suffix(".md"), rows, COLUMNS, f"Packed training throughput ({kind})",
                   f"`python -m bench.packed_training {' '.join(argv if argv is not None else sys.argv[1:])}` on "
                   f"{rows[0]['machine'] if rows else machine_name()} {gpu}, {today()}, torch {torch.__version__}. "
                   "trainings_per_hour = 3600 x K / (s_per_step x regime_steps); s_per_step from `steps_timed` "
                   "steps with one validation pass, after a warm-up (the fastest of `--repeats` runs). Members "
                   f"cycle through {', '.join(LOSSES)}. speedup_vs_sequential: against `nlfs.train.train` one "
                   "at a time in the same regime, precision and compile mode.")
    print(f"wrote {stem}.csv and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
