"""Loss-function search: algorithms, cheap filters, the resumable run database, executors."""

from ._algorithms import ALGORITHMS, GeneticProgramming, RegularizedEvolution
from ._db import RunDB
from ._executors import InlineExecutor, ProcessExecutor, RayExecutor, make_executor
from ._filters import STAGES, FilterOutcome, cheap_filters
from ._rungs import DEFAULT_RUNGS, Rung, make_rungs, parse_rungs, promoted
from ._runner import PRESETS, Search, SearchConfig, evaluate_payload, rejection_sample, summary_counts

__all__ = ["DEFAULT_RUNGS", "Rung", "make_rungs", "parse_rungs", "promoted", "ALGORITHMS", "GeneticProgramming", "InlineExecutor", "PRESETS", "ProcessExecutor",
           "RayExecutor", "RegularizedEvolution", "RunDB", "STAGES", "FilterOutcome", "cheap_filters", "Search", "SearchConfig",
           "evaluate_payload", "make_executor", "rejection_sample", "summary_counts"]
