"""Search throughput on the CPU.

Two measurements:

- ``--workers 1,2``: evaluations (trainings) per hour with 1 and N local workers at one fidelity,
  side by side, and the share of wall time spent outside training. Writes
  bench/results/search_workers_cpu.csv and .md.
- ``--rungs``: the default multi-fidelity search (paired fitness, the dataset's default rungs):
  candidates screened at the cheapest rung per CPU-hour and candidates reaching the last rung per
  CPU-hour, CPU time counted for the driver and its workers (getrusage), CE baselines included.
  Writes bench/results/search_throughput_<dataset>.csv and .md.

    .venv/bin/python bench/search_throughput.py --workers 1,2 --budget 12
    .venv/bin/python bench/search_throughput.py --rungs --dataset fashion-mnist --budget 60 --workers 2
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


RUNG_COLUMNS = ["date", "machine", "dataset", "algorithm", "space", "workers", "budget", "rungs", "eta",
                "wall_s", "cpu_s", "filtered", "screened", "reached_last", "screened_per_cpu_hour",
                "last_rung_per_cpu_hour", "screened_per_hour_wall"]


def _cpu_seconds() -> float:
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_rungs(args) -> dict:
    """One default multi-fidelity search; the workers are joined before CPU time is read."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SearchConfig(run_dir=str(Path(tmp) / "run"), algorithm=args.algorithm,
                           space="gp" if args.algorithm == "gp" else "nlfs", dataset=args.dataset,
                           backend=args.backend, seed=args.seed, budget=args.budget,
                           gp_population=max(8, args.budget // 3), population=8, sample=3, initial=8,
                           workers=int(args.workers.split(",")[-1]), progress=False)
        cpu0, t0 = _cpu_seconds(), time.perf_counter()
        s = Search(cfg)
        rows = s.run()
        rungs = s.cfg.rungs
        s.close()
        wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    last = len(rungs) - 1
    cand = [r for r in rows if r["status"] != "baseline"]
    screened = sum(1 for r in cand if not r.get("rung") and r["status"] in ("ok", "diverged", "error")
                   and not (r.get("reason") or "").startswith("fitness reused"))
    reached = sum(1 for r in cand if (r.get("rung") or 0) == last and r["status"] in ("ok", "diverged"))
    return {"date": today(), "machine": machine_name(), "dataset": args.dataset, "algorithm": args.algorithm,
            "space": cfg.space, "workers": cfg.workers, "budget": args.budget, "rungs": json.dumps(rungs),
            "eta": cfg.eta, "wall_s": wall, "cpu_s": cpu, "filtered": len([r for r in cand if not r.get("rung")]),
            "screened": screened, "reached_last": reached, "screened_per_cpu_hour": screened / cpu * 3600,
            "last_rung_per_cpu_hour": reached / cpu * 3600, "screened_per_hour_wall": screened / wall * 3600}


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
    ap.add_argument("--out", default=None)
    ap.add_argument("--rungs", action="store_true", help="measure the default multi-fidelity search")
    args = ap.parse_args(argv)
    if args.rungs:
        row = run_rungs(args)
        print(json.dumps(row), flush=True)
        out = args.out or f"bench/results/search_throughput_{args.dataset.replace('-', '_')}"
        write_csv(f"{out}.csv", [row], RUNG_COLUMNS)
        write_markdown(f"{out}.md", [row], RUNG_COLUMNS, "Multi-fidelity search throughput (CPU)",
                       f"Machine: {row['machine']}; date {row['date']}. Command: `python bench/search_throughput.py "
                       f"--rungs --dataset {args.dataset} --budget {args.budget} --workers {args.workers} "
                       f"--algorithm {args.algorithm}`. screened = candidates trained at rung 0 (after the "
                       "cheap filters); CPU time is the driver's and its workers' (user + system), CE "
                       "baselines included. Target: >= 2,000 screened per CPU-hour on 2 cores.")
        return
    args.out = args.out or "bench/results/search_workers_cpu"
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
