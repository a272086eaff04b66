"""Fidelity against the target regime: does screening rank losses the way the training a user runs does?

The fidelity study (``bench/fidelity.py``) judged its screening levels against a "final" of 320 steps,
itself far from a real training. Here every loss of that study, and losses whose standing is known to
depend on training length (the found losses FoundFM1-3, label smoothing with a >= 0.3, MAE, GCE), is
trained in the target regime: the whole training split for CE's plateau length (``--epochs``, from
``bench/target_curve.py``), 3 seeds, each loss on CE's gradient scale (``grad_scale="ce"``, the search's
default). The added losses are also trained at the study's screening levels, so every proxy is
compared with the target over the same losses.

    python -m bench.target_fidelity --epochs 8                 # resumable: rerun to continue
    python -m bench.target_fidelity --epochs 8 --shard 1/2     # a second process takes every other job
    python -m bench.target_fidelity --report-only

Per proxy (each screening level, and the old 320-step final): Spearman and Kendall with bootstrap
intervals, seconds per candidate, and how often "beats CE at the proxy" agrees with "beats CE in the
target" (paired over seeds). Writes bench/results/target_fidelity_<dataset>_trainings.csv (a row per
training, appended as it finishes) and target_fidelity_<dataset>.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._schema import machine_name, today  # noqa: E402
from bench.fidelity import LEVELS, STUDY_FORMAT, TRAIN_COLUMNS, correlations, interleaved  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
VARIANT = "ce"
TARGET_SEEDS = 3
# Losses added to the study's 40: the shipped found losses and their sibling, and published losses whose
# standing changes with training length (strong smoothing, the robust losses of noisy-label training).
EXTRAS = [
    dict(group="found", name="FoundFM1", expression="FoundFM1"),
    dict(group="found", name="FoundFM2",
         expression="p - 0.4116 * (tanh(-y * log(p) + 1 * (min(p, 0.308) * log(min(0.308, 0.4116)))) * log(p))"),
    dict(group="found", name="FoundFM3", expression="FoundFM3"),
    dict(group="length-dependent", name="LS a=0.3", expression="LabelSmoothingCE", constants={"a": 0.3}),
    dict(group="length-dependent", name="LS a=0.5", expression="LabelSmoothingCE", constants={"a": 0.5}),
    dict(group="length-dependent", name="MAE", expression="abs(y - p)"),
    dict(group="length-dependent", name="GCE q=0.7", expression="y * (1 - p ** 0.7) / 0.7"),
]
PROXIES = ("s16", "s32", "s64", "s64x3", "final")


def _stem(dataset: str) -> str:
    return dataset.replace("-", "_")


def losses_for(dataset: str) -> list[dict]:
    base = json.loads((RESULTS / f"fidelity_{_stem(dataset)}_losses.json").read_text())
    start = max(d["id"] for d in base) + 1
    return base + [dict(d, id=start + i) for i, d in enumerate(EXTRAS)]


def target_spec(epochs: int) -> dict:
    return dict(train_size=None, epochs=epochs, val_size=5000)


def jobs(losses: list[dict], epochs: int, base_ids: set) -> list[tuple]:
    """The added losses' screening levels first (cheap), then the target, loss by loss (CE first, groups
    interleaved, so any prefix is a fair sample and each loss's seeds finish together)."""
    out = []
    for d in losses:
        if d["id"] in base_ids:
            continue
        for level in ("s16", "s32", "s64", "s64x3", "final"):
            first = 1 if level == "s64x3" else 0
            for seed in range(first, LEVELS[level]["seeds"]):
                out.append((d, level, seed))
    order = interleaved(losses)
    ce = [d for d in order if d["expression"] == "CE"]
    for d in ce + [d for d in order if d["expression"] != "CE"]:
        for seed in range(TARGET_SEEDS):
            out.append((d, f"target{epochs}", seed))
    return out


def train_one(loss: dict, level: str, seed: int, dataset: str, epochs: int) -> dict:
    import torch

    from nlfs.train import TrainConfig, train

    torch.set_num_threads(1)
    if level.startswith("target"):
        spec, layout = target_spec(epochs), None  # the target trains as a user would (channels_last)
    else:
        spec, layout = {k: v for k, v in LEVELS[level].items() if k != "seeds"}, STUDY_FORMAT
    t0 = time.perf_counter()
    r = train(loss["expression"], TrainConfig(dataset=dataset, seed=seed, evaluate_test=False,
                                              grad_scale=VARIANT, channels_last=layout, **spec),
              constants=loss.get("constants"))
    return dict(loss_id=loss["id"], variant=VARIANT, level=level, seed=seed,
                acc=0.0 if r.diverged else r.best_val_acc, diverged=int(r.diverged),
                grad_scale=r.grad_scale_factor, wall_s=time.perf_counter() - t0, reason=r.reason[:120],
                history=[[int(s), float(a)] for s, a in r.history])


def _read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as fh:
        return list(csv.DictReader(fh))


def scores(rows: list[dict], target: str) -> dict:
    """{loss_id: {level: mean acc}} for the ce variant; a level counts once all its seeds are in."""
    acc: dict = {}
    need = {lv: LEVELS[lv]["seeds"] for lv in LEVELS} | {target: TARGET_SEEDS}
    for r in rows:
        if r["variant"] != VARIANT:
            continue
        levels = [r["level"]] + (["s64x3"] if r["level"] == "s64" else [])
        for lv in levels:
            acc.setdefault(int(r["loss_id"]), {}).setdefault(lv, {})[int(r["seed"])] = float(r["acc"])
    return {i: {lv: statistics.fmean(v.values()) for lv, v in d.items() if lv in need and len(v) >= need[lv]}
            for i, d in acc.items()}


def report(losses, rows, dataset: str, target: str, command: str) -> str:
    sc = scores(rows, target)
    ce_id = next(d["id"] for d in losses if d["expression"] == "CE")
    as_final = {(i, VARIANT): {("final" if lv == target else lv + "_p"): v for lv, v in d.items()}
                for i, d in sc.items()}  # correlations() compares a level with "final"
    n_target = sum(1 for d in sc.values() if target in d)
    tgt_s = [float(r["wall_s"]) for r in rows if r["level"] == target]
    lines = [f"# Screening against the target regime on {dataset}", "",
             f"{today()}, {machine_name()}, 1 thread per training. Command: `{command}`", "",
             f"Target regime: all training images (the split less 5,000 validation images), "
             f"{target.removeprefix('target')} epochs (CE's plateau: bench/results/target_curve_*.md), SGD lr 0.1 "
             f"cosine, no augmentation, no label noise, every loss on CE's gradient scale, {TARGET_SEEDS} seeds, "
             f"best validation accuracy. {n_target} of {len(losses)} losses have all their target seeds"
             + (f"; one target training took {statistics.median(tgt_s):.0f} s (median)." if tgt_s else "."), "",
             "| proxy | n | Spearman [95% CI] | Kendall [95% CI] | agree on 'beats CE' |", "|---|---|---|---|---|"]
    for lv in PROXIES:
        c = correlations(as_final, VARIANT, lv + "_p")
        both = [d for i, d in sc.items() if lv in d and target in d and i != ce_id]  # CE against itself says nothing
        ce = sc.get(ce_id, {})
        if lv in ce and target in ce:
            agree = sum((d[lv] > ce[lv]) == (d[target] > ce[target]) for d in both)
            agree_s = f"{agree}/{len(both)}"
        else:
            agree_s = "-"
        if "spearman" not in c:
            lines.append(f"| {lv} | {c['n']} | - | - | {agree_s} |")
            continue
        lines.append(f"| {lv} | {c['n']} | {c['spearman']:.3f} [{c['spearman_lo']:.2f}, {c['spearman_hi']:.2f}] | "
                     f"{c['kendall']:.3f} [{c['kendall_lo']:.2f}, {c['kendall_hi']:.2f}] | {agree_s} |")
    by_id = {d["id"]: d for d in losses}
    lines += ["", "| loss | group | " + " | ".join(PROXIES) + " | target |", "|---|---|" + "---|" * (len(PROXIES) + 1)]
    for i, d in sorted(sc.items(), key=lambda kv: -kv[1].get(target, -1)):
        if target not in d:
            continue
        cells = [f"{100 * d[lv]:.2f}" if lv in d else "-" for lv in (*PROXIES, target)]
        lines.append(f"| {by_id[i]['name']} | {by_id[i]['group']} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    (RESULTS / f"target_fidelity_{_stem(dataset)}.md").write_text(text)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.target_fidelity", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--epochs", type=int, default=8, help="the target regime's length (CE's plateau)")
    ap.add_argument("--shard", default="0/1", help="I/N: run every N-th job starting at I (several processes)")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    losses = losses_for(args.dataset)
    target = f"target{args.epochs}"
    base = _read(RESULTS / f"fidelity_{_stem(args.dataset)}_trainings.csv")
    path = RESULTS / f"target_fidelity_{_stem(args.dataset)}_trainings.csv"
    curves = RESULTS / f"target_fidelity_{_stem(args.dataset)}_curves.jsonl"
    command = "python -m bench.target_fidelity " + " ".join(argv if argv is not None else sys.argv[1:])
    if not args.report_only:
        i, n = (int(x) for x in args.shard.split("/"))
        done = {(int(r["loss_id"]), r["level"], int(r["seed"])) for r in _read(path)}
        base_ids = {d["id"] for d in losses if "name" in d and d.get("group") not in ("found", "length-dependent")}
        todo = [j for k, j in enumerate(jobs(losses, args.epochs, base_ids)) if k % n == i
                and (j[0]["id"], j[1], j[2]) not in done]
        print(f"{len(todo)} trainings to run in this shard", flush=True)
        for loss, level, seed in todo:
            row = train_one(loss, level, seed, args.dataset, args.epochs)
            curve = dict(loss_id=row["loss_id"], level=level, seed=seed, history=row.pop("history"))
            with curves.open("a") as fh:  # validation accuracy per epoch: the learning-curve proxies
                fh.write(json.dumps(curve) + "\n")
            new = not path.exists()
            with path.open("a", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=TRAIN_COLUMNS)
                if new:
                    w.writeheader()
                w.writerow(row)
            print(f"{loss['name']} {level} seed {seed}: {row['acc']:.4f} ({row['wall_s']:.0f} s)", flush=True)
    print(report(losses, base + _read(path), args.dataset, target, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
