"""Fidelity study: how well does a cheap training rank losses the way a long one does?

For a fixed set of losses (the catalogue, random candidates from the NLFS and GP spaces that pass
the cheap filters, and near-CE small edits), every loss is trained at each candidate screening
level and at a final evaluation 5x the top level's steps with 3 seeds; the rank correlation
(Spearman, Kendall, with bootstrap 95% intervals over losses) between each level and the final
says which levels can screen. Everything is done twice: as is, and with each loss rescaled to
cross-entropy's gradient scale on the first batch (``TrainConfig.grad_scale="ce"``); the final
evaluation of a rescaled loss is rescaled too, since that is the loss a user would get.

    python -m bench.fidelity --losses 40 --workers 2          # resumable: rerun to continue

Writes bench/results/fidelity_<dataset>_trainings.csv (one row per training, appended as they
finish, so a killed run loses nothing), fidelity_<dataset>.csv (one row per loss and variant) and
fidelity_<dataset>.md (the correlations, costs, machine, date and command).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._schema import append_row, dataset_stem, machine_name, read_rows, today, write_csv  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
# Screening levels at batch 128 (steps = train_size / 128 * epochs); "x3" levels are 3 seeds.
LEVELS = {
    "s16": dict(train_size=2048, epochs=1, val_size=1000, seeds=1),
    "s32": dict(train_size=4096, epochs=1, val_size=1000, seeds=1),
    "s64": dict(train_size=4096, epochs=2, val_size=2000, seeds=1),
    "s64x3": dict(train_size=4096, epochs=2, val_size=2000, seeds=3),
    "final": dict(train_size=10240, epochs=4, val_size=5000, seeds=3),  # 320 steps = 5 x 64
}
VARIANTS = ("none", "ce")  # TrainConfig.grad_scale
STUDY_FORMAT = False  # contiguous tensors, as the study's first trainings had (before channels_last default)
TRAIN_COLUMNS = ["loss_id", "variant", "level", "seed", "acc", "diverged", "grad_scale", "wall_s", "reason"]


# ------------------------------------------------------------------------------------------------ losses
def loss_set(n: int, seed: int, dataset: str) -> list[dict]:
    """[{id, group, name, expression}] with ``n`` losses: catalogue, near-CE edits, random NLFS and GP
    candidates that pass validity, integrity and the rejection test (as a search's would)."""
    import nlfs
    from nlfs.expr import parse
    from nlfs.search import cheap_filters, rejection_sample
    from nlfs.spaces import get_space, small_edit
    from nlfs.train import TrainConfig

    x, y = rejection_sample(TrainConfig(dataset=dataset))
    rng = random.Random(seed)
    out = [dict(group="catalogue", name=name, expression=name) for name in nlfs.losses.BUILTIN]
    gp, nl = get_space("gp"), get_space("nlfs")
    parents = [parse("-y * log(p)"), parse("-y * log(p) + 2 * y * (1 - p)"),
               parse("-(0.9 * y + 0.01) * log(p)")]
    groups = [("near-ce", lambda: small_edit(small_edit(rng.choice(parents), gp, rng), gp, rng)),
              ("random-nlfs", lambda: nl.express(nl.random_genotype(rng))),
              ("random-gp", lambda: gp.random_genotype(rng))]
    rest = max(0, n - len(out))
    quotas = [rest - 2 * (rest // 3), rest // 3, rest // 3]
    seen = {str(nlfs.losses.get(name).expr.canonical()) for name in nlfs.losses.BUILTIN}
    for (group, draw), quota in zip(groups, quotas):
        got = 0
        for _ in range(20_000):
            if got >= quota:
                break
            expr = draw()
            key = str(expr.canonical())
            if key in seen:
                continue
            seen.add(key)
            outcome, oriented = cheap_filters(expr, "class_sum", x, y)
            if outcome.passed:
                out.append(dict(group=group, name=f"{group}-{got}", expression=str(oriented)))
                got += 1
    for i, d in enumerate(out[:n]):
        d["id"] = i
    return out[:n]


# ------------------------------------------------------------------------------------------------ training
def _payload(job) -> dict:
    """What a worker trains for ``job = (loss, variant, level, seed, dataset)``."""
    from nlfs.train import TrainConfig

    loss, variant, level, seed, dataset = job
    spec = dict(LEVELS[level])
    spec.pop("seeds")
    cfg = TrainConfig(dataset=dataset, seed=seed, evaluate_test=False, grad_scale=variant,
                      channels_last=STUDY_FORMAT, **spec)
    return {"loss": loss["expression"], "train": cfg.to_dict(), "rejection": False}


def _row(job, out) -> dict:
    """The trainings CSV's row for a finished job (a training that raised stops the study)."""
    loss, variant, level, seed, _ = job
    if out["status"] == "error":
        raise RuntimeError(f"loss {loss['id']} {variant} {level} seed {seed}: {out['reason']}")
    r = out["result"]
    return dict(loss_id=loss["id"], variant=variant, level=level, seed=seed,
                acc=0.0 if r["diverged"] else r["best_val_acc"], diverged=int(r["diverged"]),
                grad_scale=r["grad_scale_factor"], wall_s=out["wall_time"], reason=r["reason"][:120])


def _key(row) -> tuple:
    return int(row["loss_id"]), row["variant"], row["level"], int(row["seed"])


def interleaved(losses: list[dict]) -> list[dict]:
    """Round-robin over the groups, so that any prefix of the finals is a fair sample of the set."""
    groups: dict = {}
    for d in losses:
        groups.setdefault(d["group"], []).append(d)
    out, queues = [], list(groups.values())
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out


def jobs(losses, dataset) -> list[tuple]:
    """Cheap levels first (all losses), then the finals loss by loss, groups interleaved; s64x3
    reuses s64's seed 0."""
    out = []
    for level in ("s16", "s32", "s64", "s64x3", "final"):
        for loss in (interleaved(losses) if level == "final" else losses):
            for variant in VARIANTS:
                first = 1 if level == "s64x3" else 0
                for seed in range(first, LEVELS[level]["seeds"]):
                    out.append((loss, variant, level, seed, dataset))
    return out


def run_trainings(todo, path: Path, workers: int) -> None:
    """Train ``todo`` with ``workers`` at once (one thread each), appending each row as it finishes."""
    from nlfs.search import make_executor, run_jobs

    executor = make_executor("local", workers, threads=1)
    try:
        done = run_jobs(executor, ((job, _payload(job)) for job in todo))
        for i, (job, out) in enumerate(done, 1):
            row = _row(job, out)
            append_row(path, row, TRAIN_COLUMNS)
            print(f"[{i}/{len(todo)}] loss {row['loss_id']} {row['variant']} {row['level']} "
                  f"seed {row['seed']}: {row['acc']:.4f} ({row['wall_s']:.1f} s)", flush=True)
    finally:
        executor.close()


# ------------------------------------------------------------------------------------------------ analysis
def level_scores(rows: list[dict]) -> dict:
    """{(loss_id, variant): {level: mean accuracy}}; s64x3 is the mean of s64 seed 0 and its seeds."""
    acc: dict = {}
    for r in rows:
        level = "s64x3" if r["level"] == "s64" else None
        for lv in filter(None, (r["level"], level)):
            acc.setdefault((int(r["loss_id"]), r["variant"]), {}).setdefault(lv, []).append(float(r["acc"]))
    # a level counts only once all its seeds are in (a partial final would be a noisier one)
    return {k: {lv: statistics.fmean(v) for lv, v in d.items() if len(v) >= LEVELS[lv]["seeds"]}
            for k, d in acc.items()}


def correlations(scores: dict, variant: str, level: str, ids=None, boot: int = 1000) -> dict:
    import numpy as np
    from scipy.stats import kendalltau, spearmanr

    pairs = [(d[level], d["final"]) for (i, v), d in scores.items()
             if v == variant and level in d and "final" in d and (ids is None or i in ids)]
    if len(pairs) < 5:
        return {"n": len(pairs)}
    a, b = np.array(pairs).T
    rng = np.random.default_rng(0)
    out = {"n": len(pairs), "spearman": spearmanr(a, b).statistic, "kendall": kendalltau(a, b).statistic}
    for name, fn in (("spearman", lambda u, v: spearmanr(u, v).statistic),
                     ("kendall", lambda u, v: kendalltau(u, v).statistic)):
        if not boot:
            continue
        vals = []
        for _ in range(boot):
            idx = rng.integers(0, len(a), len(a))
            if np.ptp(a[idx]) > 0 and np.ptp(b[idx]) > 0:
                vals.append(fn(a[idx], b[idx]))
        out[name + "_lo"], out[name + "_hi"] = np.nanpercentile(vals, [2.5, 97.5])
    return out


def time_levels(dataset: str, path: Path, repeats: int = 2) -> dict:
    """Seconds per CE training at each level (1 thread, min of ``repeats``), measured on their own:
    the study's per-training times are taken while the machine is shared and say little."""
    import torch

    from nlfs.train import TrainConfig, train

    torch.set_num_threads(1)
    costs = {}
    for level, spec in LEVELS.items():
        spec = {k: v for k, v in spec.items() if k != "seeds"}
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            train("CE", TrainConfig(dataset=dataset, evaluate_test=False, channels_last=STUDY_FORMAT, **spec))
            times.append(time.perf_counter() - t0)
        costs[level] = min(times)
    path.write_text(json.dumps(costs, indent=1))
    return costs


def report(losses, rows, dataset: str, command: str, out: Path = RESULTS) -> None:
    scores = level_scores(rows)
    name = dataset_stem(dataset)
    by_id = {d["id"]: d for d in losses}
    table = []
    for (i, variant), d in sorted(scores.items()):
        table.append(dict(loss_id=i, group=by_id[i]["group"], expression=by_id[i]["expression"],
                          variant=variant, **{lv: d.get(lv, "") for lv in LEVELS}))
    write_csv(out / f"fidelity_{name}.csv", table,
              ["loss_id", "group", "variant", *LEVELS, "expression"])
    cost = {}
    for r in rows:
        cost.setdefault(r["level"], []).append(float(r["wall_s"]))
    timed = out / f"fidelity_{name}_costs.json"
    if timed.exists():  # measured alone (time_levels): these replace the shared-machine medians
        cost = {lv: [v] for lv, v in json.loads(timed.read_text()).items()}
    scales = {int(r["loss_id"]): float(r["grad_scale"]) for r in rows if r["variant"] == "ce"}
    groups = sorted({d["group"] for d in losses})
    group_counts = ", ".join(f"{g}: {sum(d['group'] == g for d in losses)}" for g in groups)
    lines = [f"# Fidelity study on {dataset}", "",
             f"{today()}, {machine_name()}, 1 thread per training. Command: `{command}`", "",
             f"{len(losses)} losses ({group_counts});"
             " final evaluation: 320 steps (5x the top level), 3 seeds, best validation accuracy on 5,000 images.",
             "A diverged training scores 0. Paired differences to CE rank exactly as accuracies do here (one CE",
             "baseline per seed is subtracted from every loss alike), so these correlations hold for both.", "",
             "Seconds per candidate: " + ("one CE training per level measured alone (1 thread, "
                                          "`--time-levels`), times the level's seeds." if timed.exists() else
                                          "median of the study's own trainings (a shared machine).") , "",
             "| level | steps x seeds | s per candidate | variant | n | Spearman [95% CI] | Kendall [95% CI] |",
             "|---|---|---|---|---|---|---|"]
    for level in ("s16", "s32", "s64", "s64x3"):
        spec = LEVELS[level]
        steps = spec["train_size"] // 128 * spec["epochs"]
        med = statistics.median(cost.get(level if level != "s64x3" else "s64", [float("nan")]))
        for variant in VARIANTS:
            c = correlations(scores, variant, level)
            if "spearman" not in c:
                lines.append(f"| {level} | {steps} x {spec['seeds']} | {med * spec['seeds']:.2f} | {variant} | "
                             f"{c['n']} | - | - |")
                continue
            lines.append(f"| {level} | {steps} x {spec['seeds']} | {med * spec['seeds']:.2f} | {variant} | {c['n']} | "
                         f"{c['spearman']:.3f} [{c['spearman_lo']:.2f}, {c['spearman_hi']:.2f}] | "
                         f"{c['kendall']:.3f} [{c['kendall_lo']:.2f}, {c['kendall_hi']:.2f}] |")
    near = {d["id"] for d in losses if d["group"] in ("near-ce", "catalogue")}
    lines += ["", "Within the catalogue and near-CE edits only (the hard case: losses that all train):", "",
              "| level | variant | n | Spearman | Kendall |", "|---|---|---|---|---|"]
    for level in ("s16", "s32", "s64", "s64x3"):
        for variant in VARIANTS:
            c = correlations(scores, variant, level, near, boot=0)
            if "spearman" in c:
                lines.append(f"| {level} | {variant} | {c['n']} | {c['spearman']:.3f} | {c['kendall']:.3f} |")
    finals = {v: [d["final"] for (i, vv), d in scores.items() if vv == v and "final" in d] for v in VARIANTS}
    lines += ["", "Final accuracy over all losses (mean of 3 seeds each): " + "; ".join(
        f"{v}: median {statistics.median(f):.4f}, best {max(f):.4f}" for v, f in finals.items() if f)]
    if scales:
        s = sorted(scales.values())
        lines.append(f"Gradient-scale factors (ce variant): median {statistics.median(s):.3g}, "
                     f"range {s[0]:.3g}-{s[-1]:.3g}.")
    (out / f"fidelity_{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--losses", type=int, default=int(os.environ.get("NLFS_FIDELITY_LOSSES", 40)))
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--report-only", action="store_true", help="recompute the tables from the CSV")
    ap.add_argument("--time-levels", action="store_true",
                    help="time one CE training per level on its own (run on a quiet machine), then report")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = dataset_stem(args.dataset)
    chosen = out / f"fidelity_{name}_losses.json"  # fixed once, so a resumed study trains the same set
    if chosen.exists():
        losses = json.loads(chosen.read_text())
    else:
        losses = loss_set(args.losses, args.seed, args.dataset)
        chosen.write_text(json.dumps(losses, indent=1))
    path = out / f"fidelity_{name}_trainings.csv"
    rows = read_rows(path)
    done = {_key(r) for r in rows}
    if args.time_levels:
        print(time_levels(args.dataset, out / f"fidelity_{name}_costs.json"))
    elif not args.report_only:
        todo = [j for j in jobs(losses, args.dataset) if (j[0]["id"], j[1], j[2], j[3]) not in done]
        print(f"{len(losses)} losses, {len(todo)} trainings to run", flush=True)
        run_trainings(todo, path, args.workers)
        rows = read_rows(path)
    report(losses, rows, args.dataset, "python -m bench.fidelity " + " ".join(argv or sys.argv[1:]), out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
