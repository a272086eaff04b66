"""The search loop: ask the algorithm, filter cheaply, screen what survives on the rungs, record
everything.

Cheap filters (validity, duplicate, integrity, fingerprint) run in the driver process, which holds
the run's memory of what was seen; the rejection test and training run in a worker (inline, a local
process pool, or Ray). A candidate that passes is trained at rung 0 and promoted rung by rung
(``_rungs``); its fitness is its paired difference to cross-entropy trained with the same seeds at
the same rung (common random numbers), and the algorithm hears its fitness at rung 0. Every result
is written to ``DIR/run.db`` together with the search state, in one transaction.

A search with ``cfg.fitness`` trains nothing of its own: each score is the user's fitness function
``f(loss, seed, budget)`` (``nlfs.discover``), given to :class:`Search` and shipped to the workers
once (``make_executor``'s ``shared``); rungs and target name only its budget.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

from ..expr import Expr
from . import _filters as F
from ._config import SearchConfig, check_search, make_algorithm
from ._db import HELD_STATUSES, RunDB, RunDirError, with_its_losses
from ._executors import make_executor, run_jobs
from ._rows import AFTER_SCREENING, CE_EXPRESSION, seed_stats
from ._rows import reused as _reused
from ._rungs import promoted
from ._worker import grad_scale_factor_of, merge_by_seed, split_by_seed, training_payload


def fitness_identity(fn) -> dict | None:
    """What a fitness function is, for telling a resumed run's from another: its name and a digest of its
    code (bytecode, names, constants, nested functions'), which a comment, a docstring or a moved line
    leave as they are; values it reads from outside (a global, a closure's) are not in it. Bytecode is Python's own,
    so the digest is compared under the same Python only. None for a callable without code."""
    code = getattr(fn, "__code__", None) or getattr(type(fn).__call__, "__code__", None)  # an object's __call__
    if code is None:
        return None
    h = hashlib.sha256()

    def add(c):
        h.update(c.co_code)
        h.update(repr(c.co_names).encode())
        for i, const in enumerate(c.co_consts):
            if i == 0 and (const is None or isinstance(const, str)):
                continue  # a function's docstring: its first constant, None without one
            add(const) if isinstance(const, types.CodeType) else h.update(repr(const).encode())

    add(code)
    return {"name": getattr(fn, "__qualname__", type(fn).__qualname__), "digest": h.hexdigest()[:32],
            "python": f"{sys.version_info[0]}.{sys.version_info[1]}"}


def ce_baseline_row(cfg: SearchConfig, seed: int, out: dict, **columns) -> dict:
    """The run-database row of cross-entropy trained as a baseline on ``seed`` (``out``: the worker's
    result); ``columns`` add columns or replace these."""
    row = {"canonical": "baseline:CE", "expression": CE_EXPRESSION, "constants": {}, "sign": 1.0,
           "fitness": out.get("fitness"), "accuracy": out.get("fitness"), "status": "baseline",
           "reason": out.get("reason", ""), "seed": seed, "dataset": cfg.dataset, "backend": cfg.backend,
           "model": cfg.model, "wall_time": out["wall_time"], "cpu_time": out.get("cpu_time"), "size": 4,
           "result": out.get("result")}
    return {**row, **columns}


# What a resumed run may change besides its budget and time limit: how it runs, not what it is. (It may
# also add target baselines, known losses trained in the target beside its leaders: see open_run.)
HOW_IT_RUNS = ("workers", "threads", "executor", "ray_address", "progress", "pack")


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
        if not isinstance(saved, dict):
            db.close()
            raise RunDirError(f"{db_path} has no saved search configuration: it was not written by "
                              "nlfs.evolve, or its first write was cut off; start a new --run-dir")
        try:  # before the settings: a clash of names is not a version mismatch
            with_its_losses(saved, db_path, resuming=True)
        except RunDirError:
            db.close()
            raise
        overrides = {k: getattr(cfg, k) for k in HOW_IT_RUNS}
        overrides["budget"] = cfg.budget or saved["budget"]
        # more known losses to train in the target may join a finished run (they change no ranking)
        saved_baselines = list(saved.get("target_baselines") or [])
        overrides["target_baselines"] = tuple(saved_baselines + [b for b in cfg.target_baselines
                                                                 if b not in saved_baselines])
        # the run's own time limit holds for every session unless this one sets another
        overrides["time_limit"] = saved.get("time_limit") if cfg.time_limit is None else cfg.time_limit
        try:
            cfg = SearchConfig.from_dict(saved, **overrides)
        except (TypeError, ValueError) as err:
            db.close()
            raise RunDirError(f"the configuration saved in {db_path} does not fit this nlfs ({err}); "
                              "resume it with the nlfs version that started it, or start a new --run-dir") from None
    else:
        db.set_meta("created", time.time())
    try:
        cfg = cfg.resolve()
    except ValueError:
        db.close()
        raise
    db.set_meta("config", cfg.to_dict())
    return db, cfg


class Search:
    """A resumable search in ``cfg.run_dir``. ``run()`` goes on until the budget (candidates trained
    at rung 0) or the time limit is spent and every promoted candidate has finished its rungs."""

    def __init__(self, cfg: SearchConfig, resume: bool = False, log=None, fitness=None):
        from ..spaces import get_space

        self.fitness = fitness
        if not resume and cfg.fitness != (fitness is not None):
            raise ValueError("cfg.fitness is set exactly when a fitness function is given")
        self.run_dir = Path(cfg.run_dir)
        if not resume:
            check_search(cfg)  # before the run directory exists: a bad setting leaves nothing behind
        self.db, cfg = open_run(cfg, resume)
        if resume:
            try:
                check_search(cfg)
            except ValueError:
                self.db.close()
                raise
        if cfg.fitness != (fitness is not None):
            self.db.close()
            raise ValueError(f"the run in {self.run_dir} is scored by a fitness function: pass it (fitness=f) "
                             "to resume it" if cfg.fitness else
                             f"the run in {self.run_dir} trains its own candidates; it takes no fitness function")
        if fitness is not None:
            self._check_fitness(fitness, resume)
        self.cfg = cfg
        self._warned: set[str] = set()  # places where CE stayed near chance, said once
        self.rungs = cfg.rung_list()
        self.target = cfg.target_regime()
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.space = get_space(cfg.space)
        try:
            state = self.db.load_state() if resume else None
        except RunDirError:
            self.db.close()
            raise
        if state is None:
            self.algo = make_algorithm(cfg, self.space)
            self.pending: list = []  # [{"genotype", "rung", "candidate", "told"}]: asked, not at its last rung
        else:
            self.algo, self.pending = state["algorithm"], [_entry(p) for p in state["pending"]]
        self._rebuild_memory()

    def _check_fitness(self, fitness, resume: bool) -> None:
        """A run's rows are its fitness function's scores: a resumed run refuses another function (other
        code), which would mix two functions' scores in one ranking. A run with no score yet (its
        function failed on CE, say) takes the fixed function."""
        mine, saved = fitness_identity(fitness), self.db.get_meta("fitness_code")
        if not resume or not self.db.count(""):
            self.db.set_meta("fitness_code", mine)
        elif saved and mine and saved["python"] == mine["python"] and saved["digest"] != mine["digest"]:
            self.db.close()
            raise ValueError(f"the run in {self.run_dir} was scored by another fitness function than this "
                             f"{mine['name']} (its code differs from {saved['name']}'s): its rows would mix two "
                             "functions' scores; pass the function it was started with, or start a new run_dir")

    # -- what the run has seen, rebuilt from the database on resume --------------------------------------
    def _rebuild_memory(self):
        self.by_canonical: dict[str, dict] = {}
        self.by_fingerprint: dict[str, dict] = {}
        self.phenotypes: list[tuple[np.ndarray, int]] = []
        self.counts = {s: 0 for s in F.STAGES}
        self.counts.update(trained=0, diverged=0, error=0)
        self.finished: dict[int, list[float]] = {}  # rung -> fitness of every ok row there
        self.latest: dict[int, dict] = {}  # candidate id -> its row at the highest rung so far
        self.baselines: dict[tuple[str, int], float] = {}  # (fidelity, seed) -> CE accuracy
        for row in self.db.rows():
            self._remember(row)

    def _remember(self, row: dict):
        status = row["status"]
        if status == "baseline":
            if row.get("fitness") is not None:
                self.baselines[(row.get("fidelity") or "", row["seed"])] = row["fitness"]
            return
        rung = row.get("rung") or 0
        cand = row.get("candidate") or row["id"]
        if row.get("stage") in AFTER_SCREENING:  # a race chunk or a target training: no screening result
            if row.get("stage") == "race" and status in ("ok", "diverged", "error"):
                self.latest[cand] = row
            return
        if status == "ok" and row.get("fitness") is not None and not _reused(row):
            self.finished.setdefault(rung, []).append(row["fitness"])
        if status in ("ok", "diverged", "error") and not _reused(row):
            self.latest[cand] = row
        if rung:
            return  # the filters' memory and the counts are the candidate's first row's
        if status.startswith("rejected:"):
            self.counts[row["stage"]] = self.counts.get(row["stage"], 0) + 1
        elif status in ("ok", "diverged", "error"):
            if _reused(row):
                self.counts["fingerprint"] += 1
            else:
                self.counts["trained" if status == "ok" else status] += 1
        if status == "error":
            return  # an error (not the loss's fault) is forgotten: the candidate may be tried again
        self.by_canonical.setdefault(row["canonical"], row)
        if row.get("fingerprint") and status == "ok":
            self.by_fingerprint.setdefault(row["fingerprint"], row)
        if row.get("phenotype") is not None and status in ("ok", "diverged"):
            self.phenotypes.append((row["phenotype"], row["id"]))

    def known_fitness(self, row: dict):
        """The fitness a candidate seen before stands for: that of the highest rung it reached."""
        latest = self.latest.get(row.get("candidate") or row["id"], row)
        return latest.get("fitness") if latest.get("status") == "ok" else None

    @property
    def trainings(self) -> int:
        """Candidates trained at rung 0 (what ``budget`` counts)."""
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
            out = F.validity(expr, cfg.class_reduction, consts)
            if not out.passed:
                return reject("validity", out.reason)
        if "duplicate" in stages and canonical in self.by_canonical:
            prev = self.by_canonical[canonical]
            return reject("duplicate", f"same canonical form as #{prev['id']}", self.known_fitness(prev))
        oriented = expr
        if "integrity" in stages:
            out = F.integrity(expr, cfg.class_reduction, consts)
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
                                  self.known_fitness(prev))
        if "fingerprint" in stages:
            # with grad_scale, losses that differ only by a factor train alike: the print ignores it
            fp = F.fingerprint(oriented, cfg.class_reduction, consts, normalise=cfg.grad_scale != "none")
            row["fingerprint"] = fp
            if fp in self.by_fingerprint:
                prev = self.by_fingerprint[fp]
                row.update(status="ok", stage="fingerprint", fitness=self.known_fitness(prev),
                           rung=(self.latest.get(prev["id"]) or prev).get("rung") or 0,
                           reason=f"fitness reused from #{prev['id']} (same gradient fingerprint)",
                           wall_time=time.perf_counter() - t0)
                return row
        row["payload"] = self.payload(row, self.rungs[0], rejection="rejection" in stages)
        row["screen_time"] = time.perf_counter() - t0
        return row

    def _payload_at(self, row: dict, index: int, seeds: list) -> dict:
        """The payload training ``row`` at screening rung ``index`` or, at ``len(rungs)``, in the target."""
        if self.cfg.fitness:
            budget = (self.target.train if index == len(self.rungs) else self.rungs[index].train)["budget"]
            return {**self._fitness_payload(row, budget, seeds), "rejection": False}
        if index == len(self.rungs):
            return training_payload(row["expression"], row.get("constants"), self.cfg.class_reduction,
                                    self.cfg.target_train_config().to_dict(), seeds=seeds, score=self.cfg.score)
        return self.payload(row, self.rungs[index], seeds=seeds)

    def payload(self, row: dict, rung, rejection: bool = False, seeds=None) -> dict:
        if self.cfg.fitness:
            seeds = self.cfg.seeds(rung) if seeds is None else seeds
            return {**self._fitness_payload(row, rung.train["budget"], seeds), "rejection": rejection}
        return training_payload(row["expression"], row.get("constants"), self.cfg.class_reduction,
                                self.cfg.train_config(rung).to_dict(),
                                seeds=self.cfg.seeds(rung) if seeds is None else seeds, rejection=rejection,
                                score=self.cfg.score)

    def _fitness_payload(self, row: dict, budget: float, seeds: list) -> dict:
        """A fitness function's job: the loss, the seeds and the budget (the function is the worker's)."""
        return {"fitness": True, "expression": row["expression"], "constants": row.get("constants") or {},
                "class_reduction": self.cfg.class_reduction, "budget": budget, "seeds": seeds,
                "backend": self.cfg.backend}

    # -- recording ----------------------------------------------------------------------------------------
    def _state(self):
        return {"algorithm": self.algo, "pending": [dict(p) for p in self.pending]}

    def _promotes(self, row: dict) -> bool:
        rung = row.get("rung") or 0
        if row["status"] != "ok" or row.get("fitness") is None or _reused(row) or rung + 1 >= len(self.rungs):
            return False
        return promoted(row["fitness"], self.finished.get(rung, []) + [row["fitness"]], self.cfg.eta)

    def record(self, entry, row: dict) -> dict:
        """Write one row. The algorithm hears each candidate once, at its first result (rung 0 for a
        new one; a duplicate or gradient twin, its original's fitness as recorded), before the row is
        saved, so the saved state includes it (one transaction): a generation never waits while its
        promoted members climb the rungs. A candidate promoted to the next rung stays pending until
        its last rung."""
        if not isinstance(entry, dict):  # a bare genotype
            entry = next((p for p in self.pending if p["genotype"] == entry), None) or _entry(entry)
        row = {k: v for k, v in row.items() if k not in ("payload", "screen_time")}
        status, fitness = row["status"], row.get("fitness")
        promote = self._promotes(row)
        if not entry.get("told"):  # (a run saved before this rule told its climbers at their last rung)
            self.algo.tell(entry["genotype"], fitness if fitness is None or math.isfinite(fitness) else None,
                           "ok" if status == "ok" else status, None)
            entry["told"] = True
        if not promote and entry in self.pending:
            self.pending.remove(entry)

        def state(rowid):
            if promote:
                entry["rung"] = (row.get("rung") or 0) + 1
                entry["candidate"] = row.get("candidate") or rowid
            return self._state()

        row["id"] = self.db.record(row, state)
        self._remember(row)
        if promote:
            self.ready.append(entry)
        return row

    def finish(self, job: dict, out: dict) -> dict:
        """Turn a worker's result into the rung's row: mean accuracy over seeds, and the fitness,
        the mean paired difference to CE with the same seeds at the same fidelity."""
        row, (index, fidelity) = job["row"], self._where(job["rung"])
        per_seed = job["reused"] + out.get("per_seed", [])
        row.update(status=out["status"], stage=job.get("stage") or out.get("stage"), reason=out.get("reason", ""),
                   fitness=None, rung=index, fidelity=fidelity,
                   wall_time=out["wall_time"] + row.get("screen_time", 0.0), cpu_time=out.get("cpu_time"))
        if out.get("per_seed") is not None:
            row["result"] = {"seeds": per_seed, "train": out.get("result")}
            row["scale"] = grad_scale_factor_of(per_seed)
        if out["status"] == "ok":
            row["accuracy"] = float(np.mean([s["acc"] for s in per_seed])) if per_seed else out.get("fitness")
            if self.cfg.is_paired and per_seed:
                for s in per_seed:
                    s["paired"] = s["acc"] - self.baselines[(fidelity, s["seed"])]
                row["fitness"] = float(np.mean([s["paired"] for s in per_seed]))
            else:
                row["fitness"] = row["accuracy"]
        if job.get("stage") in AFTER_SCREENING:  # the algorithm has heard this candidate already
            row["id"] = self.db.record(row)
            self._remember(row)
            return row
        return self.record(job["entry"], row)

    def _where(self, rung: int) -> tuple[int, str]:
        """(rung index, fidelity) of a job's rung: a screening rung, or ``len(rungs)``, the target."""
        if rung == len(self.rungs):
            return rung, self.target.fidelity
        return rung, self.rungs[rung].fidelity

    # -- cross-entropy baselines: one per (fidelity, seed), trained first ------------------------------------
    def ensure_baselines(self, executor, wanted=None) -> None:
        """Train CE for every (fidelity, seed) not yet in the run: ``wanted`` lists ``(rung index,
        seeds)`` (default: every screening rung's seeds). A baseline that fails stops the search (a
        backend, dataset or model that cannot train CE cannot score anything)."""
        self.train_beside_baselines(executor, wanted, [])

    def train_beside_baselines(self, executor, wanted, work: list, others=()) -> list[dict]:
        """The CE baselines ``wanted`` needs and the candidate jobs ``work`` (``(job, payload)``), in
        flight together, CE's first and each candidate seed a job of its own (a leader's seeds train on
        every worker at once); each candidate's row is written once all its seeds are in and CE has
        every seed it is paired with. A finished candidate seed is held in the run database until then,
        so a killed run does not train it again. ``others``: target baseline jobs (``((kind, name,
        seed), payload)``), trained beside them and recorded as each finishes."""
        if wanted is None:
            wanted = [(rung.index, self.cfg.seeds(rung)) for rung in self.rungs]
        jobs, seen = [], set()
        for index, seeds in wanted:
            for seed in seeds:
                key = (self._where(index)[1], seed)
                if key not in self.baselines and key not in seen:
                    seen.add(key)
                    row = {"expression": CE_EXPRESSION, "constants": {}}
                    jobs.append((("CE", index, seed), {**self._payload_at(row, index, [seed]),
                                                       "class_reduction": "class_sum", "name": "CE"}))
        parts = [split_by_seed(payload) for _, payload in work]
        results = [[self.db.held(part) for part in split] for split in parts]  # a killed run's, kept
        jobs += [(("part", i, k), part) for i, split in enumerate(parts) for k, part in enumerate(split)
                 if results[i][k] is None]
        jobs += list(others)
        rows, written = [], set()

        def write_ready():
            for i, (job, _) in enumerate(work):
                if i in written or any(r is None for r in results[i]):
                    continue
                res, fid = merge_by_seed(results[i]), self._where(job["rung"])[1]
                if all((fid, s["seed"]) in self.baselines for s in res.get("per_seed") or []):
                    written.add(i)
                    rows.append(self.finish(job, res))
                    if res["status"] in HELD_STATUSES:  # after an error the seeds that trained stay held for a retry
                        self.db.release(parts[i])

        for key, out in run_jobs(executor, jobs):
            if key[0] == "CE":
                self._record_baseline(key[1], key[2], out)
            elif key[0] == "target baseline":
                self._record_target_baseline(key[1], key[2], out, dict(others)[key])
            else:
                _, i, k = key
                self.db.hold(parts[i][k], out)
                results[i][k] = out
            write_ready()
        write_ready()  # every part held from before, nothing trained now
        return rows

    def _record_baseline(self, index: int, seed: int, out: dict) -> None:
        where = (self.target.describe(dataset=None if self.cfg.fitness else self.cfg.dataset,
                                      base=self.cfg.train_config())
                 if index == len(self.rungs) else self.rungs[index].describe(self.cfg.base_length()))
        if out["status"] != "ok":
            fix = ("fix your fitness function (CE scored by it failed), then call again with this run_dir"
                   if self.cfg.fitness else "fix the training settings before searching")
            raise RuntimeError(f"the cross-entropy baseline failed at {where}, seed {seed}: {out.get('reason')}; {fix}")
        row = ce_baseline_row(self.cfg, seed, out, reason="", rung=index, fidelity=self._where(index)[1],
                              scale=1.0, result={"seeds": out["per_seed"], "train": out.get("result")})
        row["id"] = self.db.record(row)
        self._remember(row)
        self._warn_near_chance(where, out["fitness"])

    def _record_target_baseline(self, name: str, seed: int, out: dict, payload: dict) -> None:
        """One training of a target baseline; one that fails is recorded as failed (the regime's other
        baselines and CE still stand), never stops the run."""
        ok = out["status"] == "ok"
        self.db.record_target_baseline({
            "name": name, "expression": payload["expression"], "constants": payload.get("constants") or {},
            "class_reduction": payload["class_reduction"], "fidelity": self.target.fidelity, "seed": seed,
            "status": out["status"], "accuracy": out.get("fitness") if ok else None,
            "reason": out.get("reason") or "", "wall_time": out.get("wall_time"), "cpu_time": out.get("cpu_time")})
        if not ok:
            self.log(f"target baseline {name} (seed {seed}) {out['status']}: {(out.get('reason') or '')[:120]}")

    def _warn_near_chance(self, where: str, accuracy: float) -> None:
        """Say so when CE itself stays near chance at a rung, or reaches the ceiling: there every loss
        ties or is noise, the rung ranks nothing. Once per place; a fitness function's score is not an
        accuracy."""
        from ..data import load_dataset

        if self.cfg.fitness or where in self._warned:
            return
        r = self.cfg.train_config().resolved()  # the data as the trainings load it (resized, say)
        chance = 1.0 / load_dataset(r.dataset, r.data_root, r.download, r.resize).num_classes
        if accuracy < chance + NEAR_CHANCE * (1.0 - chance):
            self._warned.add(where)
            self.log(f"warning: CE reaches only {accuracy:.1%} at {where} (chance {chance:.1%}): too short a "
                     "training to rank losses; give the rung more epochs or training images (--rungs, --epochs)")
        elif accuracy >= NEAR_CEILING:
            self._warned.add(where)
            room = ("no loss can beat it there" if accuracy >= 1 else
                    f"no loss can beat it by more than {1 - accuracy:.1%}")
            self.log(f"warning: CE reaches {accuracy:.1%} at {where}: {room}, so it ranks little; a harder task, "
                     "less training data or a larger validation split separates losses")

    # -- the loop -----------------------------------------------------------------------------------------
    def run(self, executor=None) -> list[dict]:
        cfg = self.cfg
        own = executor is None
        shared = {} if self.fitness is None else {"shared": {"fitness": self.fitness}}  # once per worker
        executor = executor or make_executor(cfg.executor, cfg.workers, cfg.ray_address, cfg.threads, pack=cfg.pack,
                                             **shared)
        bar = None
        try:
            if cfg.baseline:
                self.ensure_baselines(executor)
            bar = _progress(cfg.progress, cfg.budget, self.trainings)
            self._loop(executor, bar)
            if bar is not None:
                bar.close()
                bar = None
            if cfg.has_target_stage:
                self.race(executor)
                self.target_stage(executor)
        finally:
            if bar is not None:
                bar.close()
            if own:
                executor.close()
        return self.db.rows()

    def promotion_job(self, entry: dict, seeds=None, stage=None) -> dict:
        """The job that trains a promoted candidate at its new rung: only seeds not already trained
        at the same fidelity (a rung that adds seeds reuses the rung below). ``seeds`` (default: the
        rung's) and ``stage`` serve racing and the target stage, whose rows are written the same way."""
        index, fidelity = self._where(entry["rung"])
        seeds = self.cfg.seeds(self.rungs[index]) if seeds is None else seeds
        cand = entry["candidate"]
        trained = self._trained_seeds(cand, fidelity)
        reused = [trained[s] for s in seeds if s in trained]
        first = self.db.rows("WHERE id = ?", (cand,))[0]
        row = {k: first.get(k) for k in ("canonical", "expression", "genotype", "constants", "sign", "seed",
                                          "dataset", "backend", "model", "size", "fingerprint")}
        row.update(rung=index, candidate=cand)
        todo = [s for s in seeds if s not in {r["seed"] for r in reused}]
        return {"entry": entry, "row": row, "rung": index, "reused": reused, "stage": stage,
                "payload": self._payload_at(row, index, todo) if todo else None}

    # -- after screening: racing the leaders to an interval, then the target regime ----------------------
    def leaders(self) -> list[int]:
        """The candidates raced and trained in the target: the top ``finalists`` by their screening
        fitness at the last rung (their first row there, so a resumed run picks the same ones), a
        known loss in disguise left out: CE or another catalogue loss always, a warm start itself at the
        constants it was given unless ``warm_starts_compete`` (a known loss is a baseline to compare
        with, not a find to check)."""
        last = len(self.rungs) - 1
        screened = {}
        for r in self.db.rows("WHERE status = 'ok' AND COALESCE(rung, 0) = ?", (last,)):
            cand = r.get("candidate") or r["id"]
            if r.get("stage") in AFTER_SCREENING or _reused(r) or cand in screened or r.get("fitness") is None:
                continue
            screened[cand] = r
        ranked = sorted(screened.values(), key=lambda r: (-r["fitness"], r["id"]))
        normalise = self.cfg.grad_scale != "none"
        out = [r.get("candidate") or r["id"] for r in ranked
               if F.known_twin(r, normalise, self.cfg.known_losses) is None]
        return out[: self.cfg.finalists]

    def _trained_seeds(self, cand: int, fidelity: str) -> dict[int, dict]:
        rows = [r for r in self.db.rows("WHERE (id = ? OR candidate = ?) AND status = 'ok'", (cand, cand))
                if r.get("fidelity") == fidelity and not _reused(r)]
        return {s["seed"]: s for r in rows for s in (r.get("result") or {}).get("seeds", [])}

    def race(self, executor) -> None:
        """Give each leader more paired seeds at the last rung, ``RACE_CHUNK`` at a time (CE's first,
        once per seed), until the 95% interval of its mean paired difference to CE excludes 0 or it has
        ``race_seeds``. Each chunk is a row at the last rung listing all its seeds; a killed race
        resumes from them and trains no seed twice."""
        if not self.cfg.racing:
            return
        last = self.rungs[-1]
        failed: set = set()
        while True:
            jobs = []
            for cand in self.leaders():
                if cand in failed:
                    continue
                have = self._trained_seeds(cand, last.fidelity)
                latest = self.latest.get(cand)
                if latest is None or latest.get("status") != "ok" or len(have) >= self.cfg.race_seeds:
                    continue
                ci = seed_stats(latest)["paired_ci"]
                if ci is not None and (ci[0] > 0 or ci[1] < 0):
                    continue
                seeds = [self.cfg.seed + i for i in range(self.cfg.race_seeds)]
                new = [s for s in seeds if s not in have][:RACE_CHUNK]
                jobs.append((cand, sorted(have) + new, new))
            if not jobs:
                return
            self.log(f"racing at the last rung: {', '.join(f'#{c} to {len(s)} seeds' for c, s, _ in jobs)}")
            work = []
            for cand, seeds, _ in jobs:
                job = self.promotion_job({"genotype": None, "rung": last.index, "candidate": cand}, seeds, "race")
                work.append((job, job["payload"]))
            for row in self.train_beside_baselines(executor, [(last.index, new) for _, _, new in jobs], work):
                if row["status"] != "ok":
                    failed.add(row["candidate"])

    def target_stage(self, executor) -> None:
        """Train each leader in the target regime with the target's seeds, paired with CE trained
        there on the same seeds, and the run's target baselines (the regime's strongest known losses)
        beside them on the same seeds; leaders' rows at rung ``len(rungs)`` with the target's fidelity,
        the baselines' in their own table. A leader or a baseline seed with a recorded result is not
        trained again (a killed stage resumes)."""
        index, seeds = len(self.rungs), [self.cfg.seed + i for i in range(self.target.seeds)]
        done = {r.get("candidate") for r in self.db.rows("WHERE COALESCE(rung, 0) = ? AND status IN "
                                                         "('ok', 'diverged')", (index,))}
        leaders = self.leaders()
        todo = [c for c in leaders if c not in done]
        fidelity = self.target.fidelity
        trained = {(r["name"], r["seed"]) for r in self.db.target_baseline_rows()
                   if r["fidelity"] == fidelity and r["status"] in ("ok", "diverged")}
        known = [(text, spec, seed) for text, spec in zip(self.cfg.target_baselines, self.cfg.target_baseline_specs())
                 for seed in seeds if (text, seed) not in trained] if leaders else []
        if not todo and not known:
            return
        from ._report import data_words

        unit = "training images" if self.cfg.fitness else data_words(self.cfg.dataset, self.cfg.model,
                                                                     self.cfg.data_root)[0]
        dataset = None if self.cfg.fitness else self.cfg.dataset
        regime = self.target.describe(unit, dataset, self.cfg.train_config())
        beside = sorted({text for text, _, _ in known})
        self.log(f"training {len(todo)} leader(s) in the {regime}, {len(seeds)} seed(s) each"
                 + (f", beside the known losses {', '.join(beside)}" if beside else ""))
        work = []
        for cand in todo:
            job = self.promotion_job({"genotype": None, "rung": index, "candidate": cand}, seeds, "target")
            if job["payload"] is None:
                self.finish(job, {"status": "ok", "per_seed": [], "wall_time": 0.0})
                continue
            work.append((job, job["payload"]))
        others = [(("target baseline", text, seed), {**self._payload_at(
            {"expression": str(spec.expr), "constants": dict(spec.constants)}, index, [seed]),
            "class_reduction": spec.class_reduction, "name": text}) for text, spec, seed in known]
        self.train_beside_baselines(executor, [(index, seeds)], work, others)  # all of them at once

    def _loop(self, executor, bar) -> None:
        cfg = self.cfg
        cap = cfg.max_attempts or 50 * cfg.budget
        attempts = self.db.count("WHERE status != 'baseline' AND COALESCE(rung, 0) = 0 "
                                 "AND COALESCE(stage, '') NOT IN ('race', 'target')")
        started, start_trainings = time.time(), self.trainings
        deadline = Deadline(cfg.time_limit)
        self.time_limit_reached = False
        in_flight: list = []  # jobs submitted, not yet finished
        self.ready = [p for p in self.pending if p["rung"] > 0]  # promoted, not yet trained there
        queue = [p for p in self.pending if p["rung"] == 0]  # asked but never recorded: screen again
        deferred: list = []  # equal to a candidate in flight: screened again once that one is recorded

        def next_job():
            """The next job to train, or None for nothing now (finished promotions and rejected
            candidates are recorded on the way)."""
            nonlocal attempts
            while True:
                if self.ready:
                    self.ready.sort(key=lambda p: -p["rung"])  # finish candidates before starting new ones
                    job = self.promotion_job(self.ready.pop(0))
                    if job["payload"] is None:
                        self.finish(job, {"status": "ok", "per_seed": [], "wall_time": 0.0})
                        continue
                    in_flight.append(job)
                    return job, job["payload"]
                fresh = sum(1 for j in in_flight if j["rung"] == 0)
                if cfg.budget - self.trainings - fresh <= 0 or attempts >= cap:
                    return None
                if deadline.passed():
                    self.time_limit_reached = True
                    return None  # no new candidate; those already screened still climb their rungs
                entry = queue.pop(0) if queue else None
                if entry is None:
                    if self.algo.done():
                        return None
                    genotype = self.algo.ask()
                    if genotype is None:
                        return None  # the algorithm waits for results
                    entry = _entry(genotype)
                    self.pending.append(entry)
                row = self.screen(entry["genotype"])
                attempts += 1
                if "payload" in row and _same_as_in_flight(row, in_flight):
                    deferred.append(entry)  # never train one candidate twice at once
                    continue
                if "payload" not in row:
                    self.record(entry, row)
                    self._tick(bar, started, start_trainings)
                    continue
                job = {"entry": entry, "row": row, "rung": 0, "reused": [], "payload": row["payload"]}
                in_flight.append(job)
                return job, job["payload"]

        for job, out in run_jobs(executor, next_job):
            in_flight[:] = [j for j in in_flight if j is not job]
            queue[:0], deferred = deferred, []
            self.finish(job, out)
            self._tick(bar, started, start_trainings)

    def _tick(self, bar, started, start_trainings):
        if bar is None:
            return
        rate = (self.trainings - start_trainings) / max(time.time() - started, 1e-9) * 3600
        best = self.best_fitness()
        c = self.counts
        top = len(self.rungs) - 1
        bar.n = min(self.trainings, self.cfg.budget)
        bar.set_postfix_str(f"{rate:.0f} screened/h | rung {top}: {len(self.finished.get(top, []))} | best "
                            f"{best if best is None else round(best, 4)} | rejected: validity {c['validity']} "
                            f"dup {c['duplicate']} integrity {c['integrity']} fingerprint {c['fingerprint']} "
                            f"rejection {c['rejection']}", refresh=True)

    def best_fitness(self):
        """Best fitness at the highest rung any candidate has reached."""
        row = self.db.conn.execute(
            "SELECT MAX(fitness) FROM evaluations WHERE status = 'ok' AND COALESCE(rung, 0) = "
            "(SELECT MAX(COALESCE(rung, 0)) FROM evaluations WHERE status = 'ok' AND COALESCE(stage, '') != "
            "'target') AND COALESCE(stage, '') != 'target'").fetchone()
        return row[0]

    def close(self):
        self.db.close()


RACE_CHUNK = 2  # seeds a leader gets per racing step
NEAR_CHANCE = 0.1  # CE within this share of the way from chance to perfect accuracy: a rung that ranks nothing
NEAR_CEILING = 0.995  # CE at or above this accuracy: too little room above it for a loss to show a lead


class Deadline:
    """A session's time limit (``SearchConfig.time_limit``, seconds; None: none), counted from when
    it is made: each session, a resumed one too, gets the whole limit. A search asks ``passed()``
    before it starts a new candidate and starts none once it has; what is in flight finishes and is
    recorded."""

    def __init__(self, seconds: float | None):
        self.at = None if seconds is None else time.time() + seconds

    def passed(self) -> bool:
        return self.at is not None and time.time() >= self.at


def _entry(item) -> dict:
    """A pending candidate (older runs saved bare genotypes)."""
    if isinstance(item, dict) and "genotype" in item:
        return {"genotype": item["genotype"], "rung": item.get("rung", 0), "candidate": item.get("candidate"),
                "told": item.get("told", False)}
    return {"genotype": item, "rung": 0, "candidate": None, "told": False}


def _same_as_in_flight(row: dict, in_flight: list) -> bool:
    for job in in_flight:
        other = job["row"]
        if other["canonical"] == row["canonical"]:
            return True
        if row.get("fingerprint") and other.get("fingerprint") == row["fingerprint"]:
            return True
    return False


def _progress(enabled: bool, total: int, initial: int):
    """A tqdm bar on a terminal; redirected (a log file, a pipe), a plain line every minute instead
    of one ever-growing line of carriage returns."""
    if not enabled:
        return None
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(total=total, initial=min(initial, total), desc="search", unit="eval", file=sys.stderr,
                    dynamic_ncols=True, mininterval=0.5)
    return PlainProgress(total, initial)


class PlainProgress:
    """The part of tqdm's interface the search loops use (``n``, ``set_postfix_str``, ``close``),
    writing one line per ``interval`` seconds."""

    def __init__(self, total: int, initial: int = 0, desc: str = "search", interval: float = 60.0):
        self.total, self.n, self.desc, self.interval = total, min(initial, total), desc, interval
        self.started = self.last = time.time()
        self.postfix = ""

    def set_postfix_str(self, text: str = "", refresh: bool = True):
        self.postfix = text
        if time.time() - self.last >= self.interval:
            self._write()

    def _write(self):
        self.last = time.time()
        minutes = (self.last - self.started) / 60
        print(f"{self.desc}: {self.n}/{self.total} after {minutes:.1f} min" + (f" | {self.postfix}" if self.postfix
              else ""), file=sys.stderr, flush=True)

    def close(self):
        if self.n or self.postfix:
            self._write()


def dumps(obj) -> str:
    return json.dumps(obj, indent=2, default=str)
