"""The target fidelity study's other proxies: what else could rank losses the way the target does?

``bench/target_fidelity.py`` trains every loss of the study in the target regime (and at the old
screening levels); this trains the same losses, on CE's gradient scale as there, at the proxies of
``target_fidelity.trained_proxies`` (3 seeds each): longer rungs on the study's subset (128 and 256
steps), one epoch on the whole split, CE's plateau length on a subset, the target at 14x14 pixels, a
narrower network, and a late-phase proxy (CE's checkpoint at three quarters of the target's schedule,
one per seed and shared by every loss, continued with the candidate for the rest of that schedule).
The learning-curve proxies need no training: the report reads them off the target's own curves.

    python -m bench.target_proxies                      # resumable: rerun to continue
    python -m bench.target_proxies --shard 1/2          # a second process takes every other job
    python -m bench.target_proxies --proxies s128,late6 # only these
    python -m bench.target_proxies --report-only

Jobs: the losses whose target trainings are complete first, CE and the CE-like ones (the hard case the
default rungs are chosen on) before the others, every proxy's seed 0 for all of them before any further
seed (so each proxy's one-seed reading covers them soonest); then the other losses, loss by loss.
Shards split a fixed list, so processes started at different times never take the same job. Appends a
row per training to bench/results/target_proxies_<dataset>_trainings.csv; the report (every proxy,
bench/results/target_fidelity_<dataset>.md) is ``target_fidelity.report``.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import target_fidelity as tf  # noqa: E402
from bench._schema import append_row, dataset_stem, read_rows  # noqa: E402
from bench.fidelity import TRAIN_COLUMNS, interleaved  # noqa: E402

CHECKPOINTS = Path(__file__).resolve().parents[1] / "runs" / "target_proxies_checkpoints"  # git-ignored


class _Scaled:
    """A loss times a fixed factor: the late-phase candidate keeps the gradient scale it has at the
    initial model (the loss a user gets), not one measured at the trained checkpoint."""

    def __init__(self, loss, factor: float):
        self.loss, self.factor, self.name = loss, factor, loss.spec.name

    def __call__(self, logits, target):
        return self.factor * self.loss(logits, target)


def trainings_path(dataset: str, results: Path) -> Path:
    return results / f"target_proxies_{dataset_stem(dataset)}_trainings.csv"


def target_done(dataset: str, epochs: int, results: Path) -> dict[int, float]:
    """The losses whose target trainings have all their seeds: id -> mean target accuracy."""
    seeds: dict = {}
    for r in read_rows(results / f"target_fidelity_{dataset_stem(dataset)}_trainings.csv"):
        if r["level"] == f"target{epochs}" and r["variant"] == tf.VARIANT:
            seeds.setdefault(int(r["loss_id"]), {}).setdefault(int(r["seed"]), float(r["acc"]))
    return {i: sum(s.values()) / len(s) for i, s in seeds.items() if len(s) >= tf.TARGET_SEEDS}


def jobs(losses: list[dict], names: list[str], done_targets: dict[int, float]) -> list[tuple[dict, str, int]]:
    """(loss, proxy, seed): CE first, then the groups interleaved; every proxy's seed 0 ("x1") on every
    loss before any further seed, so the one-seed readings cover the study soonest: first the losses
    whose target is complete (the CE-like ones, ``tf.CE_LIKE_PP``, before the others), then those still
    without one, the named groups (``tf.NAMED_GROUPS``, the target shards' next) first; then the further
    seeds in the same order."""
    order = interleaved(losses)
    order = [d for d in order if d["expression"] == "CE"] + [d for d in order if d["expression"] != "CE"]
    ce = next((done_targets[d["id"]] for d in order if d["expression"] == "CE" and d["id"] in done_targets), None)
    ce_like = {i for i, v in done_targets.items() if ce is not None and abs(v - ce) <= tf.CE_LIKE_PP / 100}
    order.sort(key=lambda d: (d["id"] not in done_targets, d["id"] not in ce_like))  # stable
    done = [d for d in order if d["id"] in done_targets]
    waiting = sorted((d for d in order if d["id"] not in done_targets), key=lambda d: d.get("group") not in
                     tf.NAMED_GROUPS)  # stable
    losses_in_order = done + waiting
    return ([(d, name, 0) for d in losses_in_order for name in names]
            + [(d, name, seed) for d in losses_in_order for name in names for seed in range(1, tf.PROXY_SEEDS)])


def shard(todo: list[tuple], i: int, n: int) -> list[tuple]:
    """Shard ``i`` of ``n`` of ``todo``: every n-th job of the list in a fixed order (by loss, proxy, seed),
    kept in ``todo``'s order, so shards started at different times split the same way."""
    fixed = sorted((d["id"], name, seed) for d, name, seed in todo)
    mine = {key for k, key in enumerate(fixed) if k % n == i}
    return [j for j in todo if (j[0]["id"], j[1], j[2]) in mine]


def _config(dataset: str, seed: int, spec: dict):
    from nlfs.train import TrainConfig

    return TrainConfig(dataset=dataset, seed=seed, evaluate_test=False, grad_scale=tf.VARIANT, **spec)


def _first_step(loss: dict, cfg):
    """One step of ``cfg``: its gradient-scale factor (measured, as in every training, at the initial
    model and first batch) and its steps per epoch."""
    from nlfs.train import train

    r = train(loss["expression"], dataclasses.replace(cfg, stop_step=1), constants=loss.get("constants"))
    return r.grad_scale_factor, r.train_size // r.batch_size


def ce_checkpoint(losses: list[dict], name: str, seed: int, dataset: str, epochs: int,
                  folder: Path) -> tuple[Path, dict | None]:
    """The CE checkpoint of late-phase proxy ``name`` for ``seed``: CE trained in the target regime up to
    the proxy's start epoch (the schedule still the target's). Made once (a file lock keeps another shard
    waiting rather than training it twice); returns its path and, when made here, its trainings row."""
    from nlfs.train import train

    start = tf.trained_proxies(epochs)[name]["start_epoch"]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{dataset_stem(dataset)}_ce_target{epochs}_epoch{start}_seed{seed}.pt"
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            return path, None
        ce = next(d for d in losses if d["expression"] == "CE")
        cfg = _config(dataset, seed, tf.target_spec(epochs))
        t0 = time.perf_counter()
        _, spe = _first_step(ce, cfg)
        tmp = path.with_suffix(".tmp")
        r = train("CE", dataclasses.replace(cfg, stop_step=start * spe, save_checkpoint=str(tmp)))
        if r.diverged:
            raise RuntimeError(f"CE's checkpoint for {name} seed {seed} diverged: {r.reason}")
        os.replace(tmp, path)
        return path, dict(loss_id=ce["id"], variant=tf.VARIANT, level=tf.checkpoint_level(name), seed=seed,
                          acc=r.best_val_acc, diverged=0, grad_scale=r.grad_scale_factor,
                          wall_s=time.perf_counter() - t0, reason="")


def train_one(loss: dict, name: str, seed: int, dataset: str, epochs: int, checkpoint: Path | None = None) -> dict:
    """One training of ``loss`` at proxy ``name`` (a late-phase proxy continues ``checkpoint``)."""
    import nlfs
    from nlfs.train import train

    spec = dict(tf.trained_proxies(epochs)[name])
    start = spec.pop("start_epoch", None)
    cfg = _config(dataset, seed, spec)
    t0 = time.perf_counter()
    if start is None:
        r = train(loss["expression"], cfg, constants=loss.get("constants"))
        factor = r.grad_scale_factor
    else:
        factor, spe = _first_step(loss, cfg)
        scaled = _Scaled(nlfs.Loss(loss["expression"], constants=loss.get("constants")), factor)
        r = train(scaled, dataclasses.replace(cfg, grad_scale="none", start_step=start * spe,
                                              checkpoint=str(checkpoint)))
    return dict(loss_id=loss["id"], variant=tf.VARIANT, level=name, seed=seed,
                acc=0.0 if r.diverged else r.best_val_acc, diverged=int(r.diverged), grad_scale=factor,
                wall_s=time.perf_counter() - t0, reason=r.reason[:120])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.target_proxies", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--epochs", type=int, default=8, help="the target regime's length (CE's plateau)")
    ap.add_argument("--proxies", default="", help="comma-separated names (default: all of "
                    "target_fidelity.trained_proxies)")
    ap.add_argument("--shard", default="0/1", help="I/N: this process takes shard I of N")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--results", default=str(tf.RESULTS), help="where the study's files are read and written")
    ap.add_argument("--checkpoints", default=str(CHECKPOINTS), help="where the late-phase proxies' CE "
                    "checkpoints are kept (reproducible: a new place trains them again)")
    args = ap.parse_args(argv)
    known = tf.trained_proxies(args.epochs)
    names = [p.strip() for p in args.proxies.split(",") if p.strip()] or list(known)
    bad = [p for p in names if p not in known]
    if bad:
        ap.error(f"--proxies: unknown {', '.join(bad)}; choose from {', '.join(known)}")
    try:
        i, n = (int(x) for x in args.shard.split("/"))
        if not 0 <= i < n:
            raise ValueError
    except ValueError:
        ap.error(f"--shard must be I/N with 0 <= I < N, got {args.shard!r}")
    results = Path(args.results)
    losses = tf.losses_for(args.dataset, results)
    path = trainings_path(args.dataset, results)
    command = "python -m bench.target_proxies " + " ".join(argv if argv is not None else sys.argv[1:])
    if not args.report_only:
        import torch

        torch.set_num_threads(1)
        done = {(int(r["loss_id"]), r["level"], int(r["seed"])) for r in read_rows(path)}
        todo = [j for j in shard(jobs(losses, names, target_done(args.dataset, args.epochs, results)), i, n)
                if (j[0]["id"], j[1], j[2]) not in done]
        print(f"{len(todo)} trainings to run in this shard", flush=True)
        for loss, name, seed in todo:
            checkpoint = None
            if "start_epoch" in known[name]:
                checkpoint, made = ce_checkpoint(losses, name, seed, args.dataset, args.epochs,
                                                 Path(args.checkpoints))
                if made:
                    append_row(path, made, TRAIN_COLUMNS)
            row = train_one(loss, name, seed, args.dataset, args.epochs, checkpoint)
            append_row(path, row, TRAIN_COLUMNS)
            print(f"{loss['name']} {name} seed {seed}: {row['acc']:.4f} ({row['wall_s']:.0f} s)", flush=True)
    print(tf.report(losses, args.dataset, args.epochs, command, results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
