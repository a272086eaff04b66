"""Loss-function search: algorithms, cheap filters, multi-fidelity rungs, the resumable run database,
executors."""

from ._algorithms import ALGORITHMS, GeneticProgramming, RegularizedEvolution, warm_start
from ._config import PRESETS, SearchConfig
from ._db import RunDB, RunDirError, read_run
from ._executors import InlineExecutor, ProcessExecutor, RayExecutor, default_threads, make_executor, run_jobs
from ._filters import STAGES, FilterOutcome, cheap_filters
from ._optuna import (
    OPTUNA_SAMPLERS,
    default_range,
    finished_trials,
    fitness_of,
    make_sampler,
    make_search_space,
    make_storage,
    quiet_optuna,
    resume_stale_trials,
)
from ._report import catalogue_twin
from ._report import top as best_candidates
from ._rungs import DEFAULT_RUNGS, Rung, make_rungs, parse_rungs, promoted
from ._runner import Search, evaluate_payload, rejection_sample, summary_counts

__all__ = ["ALGORITHMS", "DEFAULT_RUNGS", "OPTUNA_SAMPLERS", "PRESETS", "STAGES", "FilterOutcome",
           "GeneticProgramming", "InlineExecutor", "ProcessExecutor", "RayExecutor", "RegularizedEvolution",
           "Rung", "RunDB", "RunDirError", "Search", "SearchConfig", "best_candidates", "catalogue_twin",
           "cheap_filters", "default_range", "default_threads", "evaluate_payload", "finished_trials",
           "fitness_of", "make_executor", "make_rungs", "make_sampler", "make_search_space", "make_storage",
           "parse_rungs", "promoted", "quiet_optuna", "read_run", "rejection_sample", "resume_stale_trials",
           "run_jobs", "summary_counts", "warm_start"]
