"""TaylorGLO: CMA-ES over the 8 parameters of the third-order Taylor loss (``python -m nlfs.evolve
--algorithm taylor``).

Gonzalez & Miikkulainen (arXiv 2002.00059) search the parameters ``t0..t7`` of the catalogue's
``TaylorGLO`` expression with CMA-ES (population 20, initial step size 1.2). Here Optuna's
``CmaEsSampler`` drives the search with ask-and-tell; each trial is one surrogate training (the
rejection test first, when that filter is on). Every trial is also a row of ``DIR/run.db``
``evaluations`` (the TaylorGLO expression, its 8 values in ``constants``, fitness, status, seed,
dataset, backend, wall time; ``genotype`` holds ``{"trial": n, "params": {...}}``), so the reports,
hall of fame and export work as for the other algorithms. The Optuna study is a journal file
``DIR/taylor.journal`` (``optuna-dashboard DIR/taylor.journal`` shows it); a killed run resumes:
a trial whose row was recorded is told from that row, one still in flight is evaluated again. A
time limit (``--time-limit``, ``SearchConfig.time_limit``) holds as for the other algorithms: no
trial is asked after it, those in flight finish and are recorded, and ``time_limit_reached`` says
so; a resumed run gets the whole limit again.

Step size: Optuna's CMA-ES works on parameters rescaled to [0, 1], so the paper's sigma0 = 1.2 (in
parameter units) is passed as ``1.2 / (high - low)``.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

from ._config import SearchConfig
from ._db import read_config
from ._executors import make_executor, run_jobs
from ._optuna import fitness_of, make_storage, quiet_optuna, resume_stale_trials
from ._rows import CE_EXPRESSION
from ._runner import Deadline, _progress, ce_baseline_row, open_run
from ._worker import grad_scale_factor_of, training_payload

TAYLOR_LOSS = "TaylorGLO"
JOURNAL = "taylor.journal"
STUDY = "taylor"
DEFAULTS = {"popsize": 20, "sigma0": 1.2, "low": -10.0, "high": 10.0}


def is_taylor_run(run_dir: str | Path) -> bool:
    return read_config(run_dir).get("algorithm") == "taylor"


class TaylorSearch:
    """A resumable TaylorGLO search in ``cfg.run_dir`` with the interface of :class:`Search`
    (``run() -> rows``, ``close()``, ``cfg``, ``trainings``, ``time_limit_reached``). ``cfg.budget``
    counts trials (each trial is trained unless the rejection test removes it)."""

    def __init__(self, cfg: SearchConfig, resume: bool = False, log=None, popsize: int | None = None,
                 sigma0: float | None = None, bounds: tuple[float, float] | None = None):
        import optuna

        from ..losses import get

        try:
            import cmaes  # noqa: F401 - Optuna's CmaEsSampler imports it lazily, at the first ask
        except ImportError as err:
            raise ImportError("the TaylorGLO search needs the cmaes package for Optuna's CMA-ES sampler: "
                              "pip install cmaes") from err
        self.run_dir = Path(cfg.run_dir)
        if not resume and cfg.target_baselines:
            raise ValueError("target_baselines (--target-baselines) train in a search's target stage beside its "
                             "leaders; the taylor algorithm has none")
        if not resume:
            from ..train import check_config

            check_config(cfg.train_config(), "CE")
        self.db, cfg = open_run(cfg, resume)
        if resume:
            opts = self.db.get_meta("taylor") or dict(DEFAULTS)
        else:
            cfg.algorithm, cfg.space = "taylor", "taylor"
            opts = dict(DEFAULTS)
            if popsize:
                opts["popsize"] = int(popsize)
            if sigma0:
                opts["sigma0"] = float(sigma0)
            if bounds:
                opts["low"], opts["high"] = float(bounds[0]), float(bounds[1])
        self.db.set_meta("config", cfg.to_dict())
        self.db.set_meta("taylor", opts)
        self.cfg, self.opts = cfg, opts
        # trials recorded: what budget counts here, as trainings at rung 0 do for Search
        self.trainings = self.db.count("WHERE status != 'baseline'")
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        spec = get(TAYLOR_LOSS)
        self.expr, self.class_reduction = spec.expr, spec.class_reduction
        self.names = list(self.expr.constants)  # t0..t7
        dist = optuna.distributions.FloatDistribution(opts["low"], opts["high"])
        self.space = {n: dist for n in self.names}
        quiet_optuna()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sigma0 is deprecated in Optuna 4.9+ but still honoured
            sampler = optuna.samplers.CmaEsSampler(sigma0=opts["sigma0"] / (opts["high"] - opts["low"]),
                                                   popsize=opts["popsize"], seed=cfg.seed)
        storage = make_storage(self.run_dir, filename=JOURNAL)
        self.study = optuna.create_study(study_name=STUDY, storage=storage, sampler=sampler,
                                         direction="maximize", load_if_exists=True)

    # -- rows ---------------------------------------------------------------------------------------
    def trials_recorded(self) -> dict[int, dict]:
        out = {}
        for row in self.db.rows("WHERE status != 'baseline'"):
            g = row.get("genotype")
            if isinstance(g, dict) and "trial" in g:
                out[int(g["trial"])] = row
        return out

    def make_row(self, trial) -> dict:
        cfg = self.cfg
        values = {n: float(trial.params[n]) for n in self.names}
        try:
            canonical = str(self.expr.substitute(values).canonical())
        except Exception:  # noqa: BLE001 - the canonical text is informative only
            canonical = json.dumps(values, sort_keys=True)
        return {"canonical": canonical, "expression": str(self.expr),
                "genotype": {"trial": trial.number, "params": values}, "constants": values, "sign": 1.0,
                "seed": cfg.seed, "dataset": cfg.dataset, "backend": cfg.backend, "model": cfg.model,
                "size": self.expr.size,
                "payload": training_payload(str(self.expr), values, self.class_reduction, cfg.train_config().to_dict(),
                                            rejection="rejection" in cfg.filters, score=cfg.score, name=TAYLOR_LOSS)}

    def baseline(self, executor):
        """Cross-entropy at the configuration's base budget, recorded once."""
        if not self.cfg.baseline or self.db.count("WHERE status = 'baseline'"):
            return
        payload = training_payload(CE_EXPRESSION, {}, "class_sum", self.cfg.train_config().to_dict(),
                                   score=self.cfg.score, name="CE")
        ((_, out),) = run_jobs(executor, [("CE", payload)])
        self.db.record(ce_baseline_row(self.cfg, self.cfg.seed, out))

    # -- the loop -----------------------------------------------------------------------------------
    def run(self, executor=None) -> list[dict]:
        cfg = self.cfg
        recorded = self.trials_recorded()

        def on_stale(t):
            row = recorded.get(t.number)
            return None if row is None else fitness_of(row)

        again = resume_stale_trials(self.study, on_stale)
        if again:
            self.log(f"taylor: {again} interrupted trial(s) will be evaluated again")
        own = executor is None
        executor = executor or make_executor(cfg.executor, cfg.workers, cfg.ray_address, cfg.threads, pack=cfg.pack)
        asked = 0
        bar = None
        self.time_limit_reached = False

        def next_trial():
            nonlocal asked
            if self.trainings + asked >= cfg.budget:
                return None
            if deadline.passed():
                self.time_limit_reached = True
                return None  # no new trial; those in flight finish and are recorded
            asked += 1
            trial = self.study.ask(self.space)
            row = self.make_row(trial)
            return (trial, row), row.pop("payload")

        try:
            self.baseline(executor)
            deadline = Deadline(cfg.time_limit)  # counted from here, as the other algorithms' (after CE)
            bar = _progress(cfg.progress, cfg.budget, self.trainings)
            for (trial, row), out in run_jobs(executor, next_trial):
                asked -= 1
                per_seed = out.get("per_seed") or []
                row.update(status=out["status"], stage=out.get("stage"), reason=out.get("reason", ""),
                           fitness=out.get("fitness"), result=out.get("result"), wall_time=out["wall_time"],
                           cpu_time=out.get("cpu_time"),
                           scale=grad_scale_factor_of(per_seed))
                # the row first: a run killed between the two tells the trial from the row on resume
                self.db.record(row)
                value = fitness_of(out)
                trial.set_user_attr("status", out["status"])
                self.study.tell(trial, value)
                self.trainings += 1
                if bar is not None:
                    bar.n = min(self.trainings, cfg.budget)
                    best = self.best_fitness()
                    bar.set_postfix_str(f"best {best if best is None else round(best, 4)}", refresh=True)
        finally:
            if bar is not None:
                bar.close()
            if own:
                executor.close()
        return self.db.rows()

    def best_fitness(self):
        row = self.db.conn.execute("SELECT MAX(fitness) FROM evaluations WHERE status = 'ok'").fetchone()
        return row[0]

    def close(self):
        self.db.close()

