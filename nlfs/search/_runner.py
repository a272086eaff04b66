"""The search loop: ask the algorithm, filter cheaply, train what survives, record everything.

Cheap filters (validity, duplicate, integrity, fingerprint) run in the driver process, which holds
the run's memory of what was seen; the rejection test and training run in a worker (inline, a local
process pool, or Ray). Every result is written to ``DIR/run.db`` together with the algorithm's
pickled state, in one transaction.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..expr import Expr, parse
from . import _filters as F
from ._algorithms import ALGORITHMS
from ._db import RunDB

PRESETS = {
    # a short search that finishes in a few minutes on two CPU cores
    "quick": dict(budget=16, population=6, sample=3, initial=8, children=10_000,
                  gp_population=8, generations=10_000),
    # the papers' values (NeuroLoss regularized evolution; EvoMAL GP)
    "paper": dict(budget=5000, population=100, sample=20, initial=1000, children=4000,
                  gp_population=25, generations=50),
}


@dataclass
class SearchConfig:
    run_dir: str = "runs/search"
    algorithm: str = "regularized"  # regularized | gp
    space: str = "nlfs"  # nlfs | gp | path to a .toml/.yaml tree space
    dataset: str = "digits"
    backend: str = "auto"
    seed: int = 0
    budget: int = 16  # trainings (candidates that pass every filter)
    max_attempts: int | None = None  # candidates generated in all; default 50 x budget
    population: int = 6
    sample: int = 3
    initial: int = 8
    children: int = 10_000
    gp_population: int = 8
    generations: int = 10_000
    crossover: float = 0.7
    mutation: float = 0.25
    elitism: float = 0.05
    tournament: int = 4
    reduction: str = "class_sum"
    filters: tuple[str, ...] = F.STAGES
    phenotype_tol: float = 0.01
    model: str = "surrogate"
    epochs: int | None = None
    steps: int | None = None
    train_size: int | None = None
    val_size: int | None = None
    data_root: str | None = None
    device: str = "auto"
    workers: int = 1
    executor: str = "local"  # local | ray
    ray_address: str | None = None
    baseline: bool = True  # also train cross-entropy under the same settings
    progress: bool = True
    train_overrides: dict = field(default_factory=dict)

    def train_config(self):
        from ..train import TrainConfig

        return TrainConfig(dataset=self.dataset, model=self.model, epochs=self.epochs, steps=self.steps,
                           train_size=self.train_size, val_size=self.val_size, seed=self.seed,
                           device=self.device, backend=self.backend, data_root=self.data_root,
                           evaluate_test=False, progress=False, **self.train_overrides)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["filters"] = list(self.filters)
        return d


def make_algorithm(cfg: SearchConfig, space):
    if cfg.algorithm == "regularized":
        return ALGORITHMS["regularized"](space, cfg.seed, population=cfg.population, sample=cfg.sample,
                                         initial=cfg.initial, children=cfg.children)
    if cfg.algorithm == "gp":
        return ALGORITHMS["gp"](space, cfg.seed, population=cfg.gp_population, generations=cfg.generations,
                                crossover=cfg.crossover, mutation=cfg.mutation, elitism=cfg.elitism,
                                tournament=cfg.tournament)
    raise ValueError(f"unknown algorithm {cfg.algorithm!r}; choose regularized or gp "
                     "(taylor runs through nlfs.search._taylor.TaylorSearch)")


# ---------------------------------------------------------------------------------------------------
# Worker side: the expensive part, a pure function of its payload (picklable for pools and Ray).

def evaluate_payload(payload: dict) -> dict:
    """Rejection test then training; never raises (a failure is a result with a reason)."""
    start = time.perf_counter()
    try:
        return _evaluate(payload, start)
    except Exception as err:  # noqa: BLE001 - a candidate must never crash the search
        return {"status": "error", "reason": f"{type(err).__name__}: {err}", "fitness": None,
                "wall_time": time.perf_counter() - start}


def _evaluate(payload: dict, start: float) -> dict:
    from ..losses import LossSpec
    from ..train import TrainConfig, train

    expr = parse(payload["expression"])
    constants = payload.get("constants") or {}
    consts = torch.tensor([constants[k] for k in expr.constants], dtype=torch.float64)
    cfg = TrainConfig(**payload["train"])
    if payload.get("rejection", True):
        x, y = rejection_sample(cfg)
        out = F.rejection_test(expr, payload["reduction"], consts, 1.0, x, y)
        if not out.passed:
            return {"status": "rejected:rejection", "stage": "rejection", "reason": out.reason,
                    "fitness": None, "wall_time": time.perf_counter() - start}
    import types

    spec = LossSpec(payload.get("name", str(expr)), expr, payload["reduction"],
                    types.MappingProxyType(dict(constants)))
    result = train(spec, cfg)
    record = result.to_dict()
    status = "diverged" if result.diverged else "ok"
    return {"status": status, "reason": result.reason, "fitness": None if result.diverged else result.best_val_acc,
            "result": record, "wall_time": time.perf_counter() - start}


_SAMPLES: dict = {}


def rejection_sample(cfg, n: int = 512):
    """A fixed sample of the training split (never validation or test) for the rejection test."""
    from ..data import load_dataset, make_splits

    r = cfg.resolved()
    key = (r.dataset, r.data_root, r.val_size, r.train_size, r.split_seed)
    hit = _SAMPLES.get(key)
    if hit is None:
        ds = load_dataset(r.dataset, r.data_root)
        sp = make_splits(ds, r.val_size, r.train_size, seed=r.split_seed, include_test=False)
        idx = sp.train[:n].cpu()
        hit = (sp.images.cpu()[idx].float() / 255.0, sp.labels.cpu()[idx])
        _SAMPLES[key] = hit
    return hit


# ---------------------------------------------------------------------------------------------------
# Driver side.

def open_run(cfg: SearchConfig, resume: bool) -> tuple[RunDB, SearchConfig]:
    """Open ``cfg.run_dir/run.db``: a new run refuses an existing one, a resumed run needs one and
    takes its saved configuration (only how it runs, and the budget, may change)."""
    run_dir = Path(cfg.run_dir)
    db_path = run_dir / "run.db"
    if db_path.exists() and not resume:
        raise FileExistsError(f"{run_dir} already holds a run; pass --resume {run_dir} to "
                              f"continue it, or choose another --run-dir")
    if resume and not db_path.exists():
        raise FileNotFoundError(f"no run to resume in {run_dir} (missing {db_path})")
    db = RunDB(db_path)
    db.lock()
    if resume:
        saved = db.get_meta("config")
        overrides = {k: getattr(cfg, k) for k in ("workers", "executor", "ray_address", "progress")}
        cfg = SearchConfig(**{**saved, "filters": tuple(saved["filters"]), **overrides,
                              "budget": cfg.budget or saved["budget"]})
    else:
        db.set_meta("created", time.time())
    db.set_meta("config", cfg.to_dict())
    return db, cfg


class Search:
    """A resumable search in ``cfg.run_dir``. ``run()`` goes on until the budget is spent."""

    def __init__(self, cfg: SearchConfig, resume: bool = False, log=None):
        from ..spaces import get_space

        self.run_dir = Path(cfg.run_dir)
        self.db, cfg = open_run(cfg, resume)
        self.cfg = cfg
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.space = get_space(cfg.space)
        state = self.db.load_state() if resume else None
        if state is None:
            self.algo = make_algorithm(cfg, self.space)
            self.pending: list = []
        else:
            self.algo, self.pending = state["algorithm"], state["pending"]
        self._rebuild_memory()

    # -- what the run has seen, rebuilt from the database on resume --------------------------------------
    def _rebuild_memory(self):
        self.by_canonical: dict[str, dict] = {}
        self.by_fingerprint: dict[str, dict] = {}
        self.phenotypes: list[tuple[np.ndarray, int]] = []
        self.counts = {s: 0 for s in F.STAGES}
        self.counts.update(trained=0, diverged=0, error=0)
        for row in self.db.rows():
            self._remember(row)

    def _remember(self, row: dict):
        status = row["status"]
        if status == "baseline":
            return
        if status.startswith("rejected:"):
            self.counts[row["stage"]] = self.counts.get(row["stage"], 0) + 1
        elif status in ("ok", "diverged", "error"):
            if (row.get("reason") or "").startswith("fitness reused"):
                self.counts["fingerprint"] += 1
            else:
                self.counts["trained" if status == "ok" else status] += 1
        self.by_canonical.setdefault(row["canonical"], row)
        if row.get("fingerprint") and status == "ok":
            self.by_fingerprint.setdefault(row["fingerprint"], row)
        if row.get("phenotype") is not None and status in ("ok", "diverged"):
            self.phenotypes.append((row["phenotype"], row["id"]))

    @property
    def trainings(self) -> int:
        return self.counts["trained"] + self.counts["diverged"] + self.counts["error"]

    # -- the cheap stages ---------------------------------------------------------------------------------
    def screen(self, genotype) -> dict:
        """Run the driver-side filters; returns a row (complete when rejected) or a payload to train."""
        cfg = self.cfg
        t0 = time.perf_counter()
        expr = self.space.express(genotype)
        canonical = str(expr.canonical())
        row = {"canonical": canonical, "expression": str(expr), "genotype": self.space.to_json(genotype),
               "constants": {}, "sign": 1.0, "seed": cfg.seed, "dataset": cfg.dataset,
               "backend": cfg.backend, "model": cfg.model, "size": expr.size}
        consts = torch.zeros(0, dtype=torch.float64)

        def reject(stage, reason, fitness=None):
            row.update(status=f"rejected:{stage}", stage=stage, reason=reason, fitness=fitness,
                       wall_time=time.perf_counter() - t0)
            return row

        stages = set(cfg.filters)
        if "validity" in stages:
            out = F.validity(expr, cfg.reduction, consts)
            if not out.passed:
                return reject("validity", out.reason)
        if "duplicate" in stages and canonical in self.by_canonical:
            prev = self.by_canonical[canonical]
            return reject("duplicate", f"same canonical form as #{prev['id']}", prev.get("fitness"))
        oriented = expr
        if "integrity" in stages:
            out = F.integrity(expr, cfg.reduction, consts)
            if not out.passed:
                return reject("integrity", out.reason)
            row["phenotype"] = out.phenotype
            if out.sign < 0:
                oriented = Expr("neg", (expr,))
                row.update(sign=-1.0, expression=str(oriented))
            for ph, pid in self.phenotypes:
                if F.phenotype_distance(out.phenotype, ph) < cfg.phenotype_tol:
                    prev = self.db.rows("WHERE id = ?", (pid,))[0]
                    return reject("integrity", f"phenotype within {cfg.phenotype_tol} of #{pid}",
                                  prev.get("fitness"))
        if "fingerprint" in stages:
            fp = F.fingerprint(oriented, cfg.reduction, consts)
            row["fingerprint"] = fp
            if fp in self.by_fingerprint:
                prev = self.by_fingerprint[fp]
                row.update(status="ok", stage="fingerprint", fitness=prev["fitness"],
                           reason=f"fitness reused from #{prev['id']} (same gradient fingerprint)",
                           wall_time=time.perf_counter() - t0)
                return row
        row["payload"] = {"expression": str(oriented), "constants": {}, "reduction": cfg.reduction,
                          "train": cfg.train_config().to_dict(), "rejection": "rejection" in stages}
        row["screen_time"] = time.perf_counter() - t0
        return row

    # -- recording ----------------------------------------------------------------------------------------
    def _state(self):
        return {"algorithm": self.algo, "pending": list(self.pending)}

    def record(self, genotype, row: dict) -> dict:
        row = {k: v for k, v in row.items() if k not in ("payload", "screen_time")}
        status = row["status"]
        fitness = row.get("fitness")
        # Tell before writing, so the saved state includes this result; both land in one transaction.
        self.algo.tell(genotype, fitness if fitness is None or math.isfinite(fitness) else None,
                       "ok" if status == "ok" else status, None)
        if genotype in self.pending:
            self.pending.remove(genotype)
        row["id"] = self.db.record(row, self._state())
        self._remember(row)
        return row

    def baseline(self):
        """Cross-entropy under the same settings, recorded once per run."""
        if not self.cfg.baseline or self.db.count("WHERE status = 'baseline'"):
            return
        payload = {"expression": "-y * log(p)", "constants": {}, "reduction": "class_sum",
                   "train": self.cfg.train_config().to_dict(), "rejection": False, "name": "CE"}
        out = evaluate_payload(payload)
        self.db.record({"canonical": "baseline:CE", "expression": "-y * log(p)", "constants": {},
                        "sign": 1.0, "fitness": out.get("fitness"), "status": "baseline",
                        "reason": out.get("reason", ""), "seed": self.cfg.seed, "dataset": self.cfg.dataset,
                        "backend": self.cfg.backend, "model": self.cfg.model, "wall_time": out["wall_time"],
                        "size": 4, "result": out.get("result")})

    # -- the loop -----------------------------------------------------------------------------------------
    def run(self, executor=None) -> list[dict]:
        from ._executors import make_executor

        cfg = self.cfg
        own = executor is None
        executor = executor or make_executor(cfg.executor, cfg.workers, cfg.ray_address)
        self.baseline()
        cap = cfg.max_attempts or 50 * cfg.budget
        attempts = self.db.count("WHERE status != 'baseline'")
        started, start_trainings = time.time(), self.trainings
        in_flight: dict = {}  # handle -> (genotype, row)
        queue = list(self.pending)  # asked but never recorded: evaluate them first
        deferred: list = []  # equal to a candidate in flight: screened again once that one is recorded
        bar = _progress(cfg.progress, cfg.budget, self.trainings)
        try:
            while True:
                budget_left = cfg.budget - self.trainings - len(in_flight)
                while len(in_flight) < executor.slots and budget_left > 0 and attempts < cap:
                    genotype = queue.pop(0) if queue else None
                    if genotype is None:
                        if self.algo.done():
                            break
                        genotype = self.algo.ask()
                        if genotype is None:
                            break  # the algorithm waits for results
                        self.pending.append(genotype)
                    row = self.screen(genotype)
                    attempts += 1
                    if "payload" in row and _same_as_in_flight(row, in_flight):
                        deferred.append(genotype)  # never train one candidate twice at once
                        continue
                    if "payload" in row:
                        in_flight[executor.submit(row["payload"])] = (genotype, row)
                        budget_left -= 1
                    else:
                        self.record(genotype, row)
                        self._tick(bar, started, start_trainings)
                if not in_flight:
                    break
                handle, out = executor.wait_one(list(in_flight))
                genotype, row = in_flight.pop(handle)
                queue[:0], deferred = deferred, []
                row.update(status=out["status"], stage=out.get("stage"), reason=out.get("reason", ""),
                           fitness=out.get("fitness"), result=out.get("result"),
                           wall_time=out["wall_time"] + row.get("screen_time", 0.0))
                self.record(genotype, row)
                self._tick(bar, started, start_trainings)
        finally:
            if bar is not None:
                bar.close()
            if own:
                executor.close()
        return self.db.rows()

    def _tick(self, bar, started, start_trainings):
        if bar is None:
            return
        rate = (self.trainings - start_trainings) / max(time.time() - started, 1e-9) * 3600
        best = self.best_fitness()
        c = self.counts
        bar.n = min(self.trainings, self.cfg.budget)
        bar.set_postfix_str(f"{rate:.0f} evals/h | best {best if best is None else round(best, 4)} | "
                            f"rejected: validity {c['validity']} dup {c['duplicate']} "
                            f"integrity {c['integrity']} fingerprint {c['fingerprint']} "
                            f"rejection {c['rejection']}", refresh=True)

    def best_fitness(self):
        row = self.db.conn.execute("SELECT MAX(fitness) FROM evaluations WHERE status = 'ok'").fetchone()
        return row[0]

    def close(self):
        self.db.close()


def _same_as_in_flight(row: dict, in_flight: dict) -> bool:
    for _, other in in_flight.values():
        if other["canonical"] == row["canonical"]:
            return True
        if row.get("fingerprint") and other.get("fingerprint") == row["fingerprint"]:
            return True
    return False


def _progress(enabled: bool, total: int, initial: int):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=min(initial, total), desc="search", unit="eval", file=sys.stderr,
                dynamic_ncols=True, mininterval=0.5)


def summary_counts(rows: list[dict]) -> dict:
    out = {"evaluated": 0, "trained": 0, "ok": 0, "diverged": 0, "error": 0}
    for s in F.STAGES:
        out[s] = 0
    for r in rows:
        if r["status"] == "baseline":
            continue
        out["evaluated"] += 1
        if r["status"].startswith("rejected:"):
            out[r["stage"]] += 1
        elif r["status"] == "ok" and (r.get("reason") or "").startswith("fitness reused"):
            out["fingerprint"] += 1
        else:
            out[r["status"]] += 1
            out["trained"] += 1
    return out


def dumps(obj) -> str:
    return json.dumps(obj, indent=2, default=str)
