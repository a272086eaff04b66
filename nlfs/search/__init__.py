"""Loss-function search: algorithms, cheap filters, multi-fidelity rungs, the resumable run database,
executors, and ``discover`` (a search on a user's data, model or training loop, from Python)."""

from ._algorithms import ALGORITHMS, GeneticProgramming, RegularizedEvolution, warm_start
from ._config import PRESETS, SearchConfig
from ._db import RunDB, RunDirError, read_run, read_target_baselines
from ._discover import (
    FITNESS_RUNGS,
    Discovery,
    FoundLoss,
    default_dataset,
    default_seed_losses,
    default_space,
    discover,
    open_search,
    preset_config,
    resume_config,
    run_and_report,
)
from ._executors import (
    InlineExecutor,
    PackingExecutor,
    ProcessExecutor,
    RayExecutor,
    default_threads,
    default_workers,
    make_executor,
    run_jobs,
)
from ._filters import (
    STAGES,
    WARM_START,
    FilterOutcome,
    cheap_filters,
    family_record,
    family_text,
    known_family,
    known_twin,
)
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
from ._ranking import best_candidates, best_new_candidates
from ._report import (
    FINALISTS,
    TUNED,
    changed_tunings,
    data_words,
    entry_spec,
    export_losses,
    format_summary,
    is_paired_run,
    row_name,
    run_losses,
    training_regime,
    write_report,
)
from ._rows import CE_EXPRESSION, summary_counts
from ._rungs import DEFAULT_RUNGS, Rung, make_rungs, parse_rungs, promoted
from ._runner import HOW_IT_RUNS, Search
from ._target import (
    DEFAULT_TARGETS,
    REGIME_BASELINES,
    Target,
    default_target,
    make_target,
    parse_target,
    regime_baselines,
    regime_warm_starts,
)
from ._taylor import TaylorSearch, is_taylor_run
from ._worker import (
    SCORES,
    evaluate_payload,
    grad_scale_factor_of,
    rejection_sample,
    trained_scale,
    training_payload,
)

__all__ = [
    "ALGORITHMS", "CE_EXPRESSION", "DEFAULT_RUNGS", "DEFAULT_TARGETS", "Discovery",
    "FINALISTS", "FITNESS_RUNGS", "FilterOutcome", "FoundLoss", "GeneticProgramming", "HOW_IT_RUNS", "InlineExecutor",
    "OPTUNA_SAMPLERS", "PRESETS", "PackingExecutor", "ProcessExecutor", "REGIME_BASELINES", "RayExecutor",
    "RegularizedEvolution",
    "RunDB", "RunDirError", "Rung", "SCORES", "STAGES", "Search", "SearchConfig", "TUNED", "Target", "TaylorSearch",
    "WARM_START", "best_candidates", "best_new_candidates", "changed_tunings", "cheap_filters", "data_words",
    "default_dataset", "default_range", "default_seed_losses", "default_space", "default_target", "default_threads",
    "default_workers",
    "discover", "entry_spec", "evaluate_payload", "export_losses", "family_record", "family_text", "finished_trials",
    "fitness_of", "format_summary", "grad_scale_factor_of", "is_paired_run", "is_taylor_run", "known_family",
    "known_twin", "make_executor", "make_rungs", "make_sampler", "make_search_space", "make_storage", "make_target",
    "open_search", "parse_rungs", "parse_target", "preset_config", "promoted", "quiet_optuna", "read_run",
    "read_target_baselines", "regime_baselines", "regime_warm_starts",
    "rejection_sample", "resume_config", "resume_stale_trials", "row_name", "run_and_report", "run_jobs",
    "run_losses", "summary_counts", "trained_scale", "training_payload", "training_regime", "warm_start",
    "write_report",
]
