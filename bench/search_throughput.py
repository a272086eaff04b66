"""Search throughput on the CPU: evaluations (trainings) per hour with 1 and N local workers, measured
side by side in one run, and the share of wall time spent outside training (filters, bookkeeping,
process start-up).

    .venv/bin/python bench/search_throughput.py --workers 1,2 --budget 12

Writes bench/results/search_workers_cpu.csv and .md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._schema import machine_name, today, write_csv, write_markdown  # noqa: E402
from nlfs.search import Search, SearchConfig  # noqa: E402

COLUMNS = ["date", "machine", "dataset", "algorithm", "backend", "workers", "budget", "trained",
           "candidates", "wall_s", "evals_per_hour", "train_s_per_eval", "share_outside_training"]


def run_once(workers: int, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SearchConfig(run_dir=str(Path(tmp) / "run"), algorithm=args.algorithm,
                           space="gp" if args.algorithm == "gp" else "nlfs", dataset=args.dataset,
                           backend=args.backend, seed=args.seed, budget=args.budget, population=4, sample=3,
                           initial=4, gp_population=max(4, args.budget // 2), steps=args.steps,
                           train_size=args.train_size, workers=workers, progress=False, baseline=False)
        t0 = time.perf_counter()
        s = Search(cfg)
        rows = s.run()
        s.close()
        wall = time.perf_counter() - t0
    trained = [r for r in rows if r["status"] in ("ok", "diverged", "error")
               and not (r.get("reason") or "").startswith("fitness reused")]
    errors = [r for r in trained if r["status"] == "error"]
    if errors:
        raise SystemExit(f"{len(errors)} evaluations failed, e.g.: {errors[0]['reason']}")
    train_s = sum((r.get("result") or {}).get("wall_time", 0.0) for r in trained)
    # With N workers, N trainings overlap: time outside training is wall*N - training time.
    outside = max(0.0, wall * workers - train_s) / (wall * workers)
    return {"date": today(), "machine": machine_name(), "dataset": args.dataset, "algorithm": args.algorithm,
            "backend": args.backend, "workers": workers, "budget": args.budget, "trained": len(trained),
            "candidates": len(rows), "wall_s": wall, "evals_per_hour": len(trained) / wall * 3600,
            "train_s_per_eval": train_s / max(1, len(trained)), "share_outside_training": outside}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--budget", type=int, default=12)
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--algorithm", default="gp", choices=["gp", "regularized"])
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--train-size", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/results/search_workers_cpu")
    args = ap.parse_args(argv)
    rows = []
    for w in [int(x) for x in args.workers.split(",")]:
        row = run_once(w, args)
        print(json.dumps(row), flush=True)
        rows.append(row)
    write_csv(f"{args.out}.csv", rows, COLUMNS)
    base = rows[0]["evals_per_hour"]
    md_rows = [{**r, "speedup": r["evals_per_hour"] / base} for r in rows]
    write_markdown(f"{args.out}.md", md_rows, COLUMNS + ["speedup"],
                   "Search throughput by number of local workers (CPU)",
                   f"Machine: {rows[0]['machine']}; date {rows[0]['date']}. Command: "
                   f"`python bench/search_throughput.py --workers {args.workers} --budget {args.budget} "
                   f"--algorithm {args.algorithm} --steps {args.steps} --train-size {args.train_size}`. "
                   "Each worker gets cores/N torch threads. evals = candidates trained.")


if __name__ == "__main__":
    main()
