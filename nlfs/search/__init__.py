"""Loss-function search: algorithms, cheap filters, multi-fidelity rungs, the resumable run database,
executors."""

from ._algorithms import ALGORITHMS, GeneticProgramming, RegularizedEvolution, warm_start
from ._config import PRESETS, SearchConfig
from ._db import RunDB, RunDirError, read_run
from ._executors import InlineExecutor, ProcessExecutor, RayExecutor, make_executor
from ._filters import STAGES, FilterOutcome, cheap_filters
from ._report import best_candidates, catalogue_twin, entry_spec, run_losses, training_regime
from ._rungs import DEFAULT_RUNGS, Rung, make_rungs, parse_rungs, promoted
from ._runner import Search, evaluate_payload, rejection_sample, summary_counts

__all__ = ["ALGORITHMS", "DEFAULT_RUNGS", "PRESETS", "STAGES", "FilterOutcome", "GeneticProgramming",
           "InlineExecutor", "ProcessExecutor", "RayExecutor", "RegularizedEvolution", "Rung", "RunDB",
           "RunDirError", "Search", "SearchConfig", "best_candidates", "catalogue_twin", "cheap_filters", "entry_spec",
           "evaluate_payload", "make_executor", "make_rungs", "parse_rungs", "promoted", "read_run",
           "rejection_sample", "run_losses", "summary_counts", "training_regime", "warm_start"]
