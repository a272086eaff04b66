"""How long must CE train on the whole training split before its validation accuracy plateaus?

Each point is a separate training of E epochs (the cosine schedule spans the whole run, so the
accuracy after E epochs of a longer run is not the same thing). The smallest E whose mean validation
accuracy is within ``--tolerance`` pp of the best E's is the plateau: the default target regime's
length for that dataset and model.

    python -m bench.target_curve --dataset fashion-mnist --epochs 2,4,6,8,10,12,16 --seeds 0,1,2

Resumable: rows are appended to bench/results/target_curve_<dataset>_<model>.csv as they finish and
a rerun trains only what is missing. Writes the Markdown beside it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._schema import append_row, dataset_stem, machine_name, read_rows, today  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
COLUMNS = ["dataset", "model", "loss", "epochs", "seed", "train_size", "val_acc", "best_val_acc",
           "steps", "wall_s", "threads", "machine", "date"]


def _paths(dataset: str, model: str) -> tuple[Path, Path]:
    stem = f"target_curve_{dataset_stem(dataset)}_{model}"
    return RESULTS / f"{stem}.csv", RESULTS / f"{stem}.md"


def plateau(rows: list[dict], tolerance_pp: float) -> tuple[list[dict], int | None]:
    """Per E: mean and sd of validation accuracy (pp) over seeds; and the smallest E within
    ``tolerance_pp`` of the best mean (None without rows)."""
    by_e: dict[int, list[float]] = {}
    for r in rows:
        by_e.setdefault(int(r["epochs"]), []).append(100 * float(r["val_acc"]))
    table = []
    for e in sorted(by_e):
        v = by_e[e]
        table.append({"epochs": e, "n": len(v), "mean": statistics.fmean(v),
                      "sd": statistics.stdev(v) if len(v) > 1 else float("nan")})
    if not table:
        return table, None
    best = max(t["mean"] for t in table)
    return table, min(t["epochs"] for t in table if t["mean"] >= best - tolerance_pp)


def write_markdown(path: Path, rows: list[dict], tolerance_pp: float, command: str) -> None:
    table, e_star = plateau(rows, tolerance_pp)
    r0 = rows[0]
    lines = [f"# CE's plateau on {r0['dataset']} / {r0['model']}, whole training split", "",
             f"Machine: {r0['machine']}; date {today()}; command `{command}`.", "",
             f"Regime: all {r0['train_size']} training images, no augmentation, no label noise, SGD "
             "lr 0.1 with cosine schedule, one training per (E, seed), 1 thread each. Seconds are wall time "
             "as measured, on a machine shared with other jobs: a cost figure, not a benchmark.", "",
             "| epochs | seeds | validation accuracy % (mean ± sd) | mean seconds |", "|---|---|---|---|"]
    secs: dict[int, list[float]] = {}
    for r in rows:
        secs.setdefault(int(r["epochs"]), []).append(float(r["wall_s"]))
    for t in table:
        lines.append(f"| {t['epochs']} | {t['n']} | {t['mean']:.2f} ± {t['sd']:.2f} | "
                     f"{statistics.fmean(secs[t['epochs']]):.1f} |")
    lines += ["", f"Plateau (smallest E within {tolerance_pp} pp of the best mean): **E = {e_star}**."]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.target_curve", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--model", default="surrogate")
    ap.add_argument("--loss", default="CE")
    ap.add_argument("--epochs", default="2,4,6,8,10,12,16")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tolerance", type=float, default=0.2, help="pp below the best mean that counts as plateau")
    args = ap.parse_args(argv)
    from nlfs.train import TrainConfig, train

    epochs = [int(e) for e in args.epochs.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    csv_path, md_path = _paths(args.dataset, args.model)
    rows = read_rows(csv_path)
    done = {(r["loss"], int(r["epochs"]), int(r["seed"])) for r in rows}
    command = "python -m bench.target_curve " + " ".join(argv if argv is not None else sys.argv[1:])
    for seed in seeds:  # every E once before any E twice: a partial run already draws the curve
        for e in epochs:
            if (args.loss, e, seed) in done:
                continue
            cfg = TrainConfig(dataset=args.dataset, model=args.model, epochs=e, seed=seed,
                              evaluate_test=False, threads=args.threads)
            t0 = time.time()
            r = train(args.loss, cfg)
            row = {"dataset": r.dataset, "model": r.model, "loss": args.loss, "epochs": e, "seed": seed,
                   "train_size": r.train_size, "val_acc": f"{r.val_acc:.5f}",
                   "best_val_acc": f"{r.best_val_acc:.5f}", "steps": r.steps,
                   "wall_s": f"{time.time() - t0:.1f}", "threads": args.threads,
                   "machine": machine_name(), "date": today()}
            append_row(csv_path, row, COLUMNS)
            rows.append(row)
            print(f"E={e} seed={seed}: val {r.val_acc:.4f} in {row['wall_s']} s", flush=True)
            write_markdown(md_path, rows, args.tolerance, command)
    if rows:
        write_markdown(md_path, rows, args.tolerance, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
