"""Optuna helpers shared by constant tuning (``nlfs.tune``) and the TaylorGLO search: the search
space around a loss's constants, the sampler (CMA-ES with fallbacks), the study's storage (a journal
file in the run directory, or an RDB URL), and the resume of trials a killed process left running."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

OPTUNA_SAMPLERS = ("cmaes", "gp", "tpe", "random")


def default_range(value: float, scale: float | None = None) -> tuple[float, float]:
    """``value ± scale``; the default scale is ``max(2 |value|, 2)``."""
    s = scale if scale is not None else max(2.0 * abs(value), 2.0)
    return (value - s, value + s)


def make_search_space(constants: dict[str, float], search_space: dict | None = None,
                      scale: float | None = None) -> dict:
    import optuna

    space = {}
    for name, value in constants.items():
        lo, hi = (search_space or {}).get(name) or default_range(value, scale)
        lo, hi = float(lo), float(hi)
        lo, hi = min(lo, value), max(hi, value)  # the enqueued current value must be inside
        if not hi > lo:
            hi = lo + 1.0
        space[name] = optuna.distributions.FloatDistribution(lo, hi)
    return space


def make_sampler(kind: str, n_dims: int, seed: int, x0: dict | None = None, sigma0: float | None = None,
                 popsize: int | None = None, log=None):
    """-> (sampler, name actually used). CMA-ES needs >= 2 dimensions: a single constant falls back
    to the GP sampler (TPE when SciPy is missing)."""
    import optuna

    kind = kind.lower()
    if kind not in OPTUNA_SAMPLERS:
        raise ValueError(f"sampler must be one of {OPTUNA_SAMPLERS}, got {kind!r}")
    if kind == "cmaes" and n_dims < 2:
        kind = "gp" if _has("scipy") else "tpe"
        if log:
            log(f"CMA-ES needs two or more constants; using the {kind.upper()} sampler for one")
    if kind == "cmaes" and not _has("cmaes"):
        kind = "gp" if _has("scipy") else "tpe"
        if log:
            log(f"Optuna's CMA-ES needs the cmaes package (pip install cmaes); "
                f"using {kind.upper()}")
    if kind == "gp" and not _has("scipy"):
        kind = "tpe"
        if log:
            log("the GP sampler needs SciPy; using TPE")
    if kind == "cmaes":
        kw = {}
        if x0 is not None:
            kw["x0"] = x0
        if sigma0 is not None:
            kw["sigma0"] = sigma0
        if popsize is not None:
            kw["popsize"] = popsize
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # x0/sigma0 are deprecated in Optuna 4.9+ but still honoured
            return optuna.samplers.CmaEsSampler(seed=seed, **kw), "cmaes"
    if kind == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=3), "gp"
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=3), "tpe"
    return optuna.samplers.RandomSampler(seed=seed), "random"


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def make_storage(storage_dir: str | Path | None = None, storage: str | None = None,
                 filename: str = "tune.journal"):
    """An RDB URL (``sqlite:///...``) as given, else an Optuna journal file ``DIR/filename``;
    ``None`` (no directory, no URL) keeps the study in memory."""
    import optuna

    if storage:
        return storage
    if storage_dir is None:
        return None
    path = Path(storage_dir)
    path.mkdir(parents=True, exist_ok=True)
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    file = str(path / filename)
    return optuna.storages.JournalStorage(JournalFileBackend(file, lock_obj=JournalFileOpenLock(file)))


def quiet_optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def resume_stale_trials(study, on_stale=None) -> int:
    """Trials left RUNNING by a killed process: ``on_stale(trial)`` may return a fitness to tell (the
    result was recorded elsewhere); otherwise the trial is marked FAIL and its values enqueued again
    so they are evaluated once more. Returns how many were re-enqueued."""
    import optuna

    n = 0
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        value = on_stale(t) if on_stale else None
        if value is not None:
            study.tell(t.number, value)
            continue
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        attrs = {k: v for k, v in t.user_attrs.items() if k in ("initial",)}
        study.enqueue_trial(dict(t.params), user_attrs={**attrs, "retry_of": t.number},
                            skip_if_exists=False)
        n += 1
    return n


def finished_trials(study) -> list:
    import optuna

    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))


def fitness_of(out: dict) -> float:
    """Fitness told to the sampler: best validation accuracy, 0 for a diverged, rejected or failed
    evaluation (so the sampler learns those values are bad and the study never crashes)."""
    f = out.get("fitness")
    if out.get("status") != "ok" or f is None or not math.isfinite(f):
        return 0.0
    return float(f)
