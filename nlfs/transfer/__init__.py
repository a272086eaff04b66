"""Transfer evaluation: train every (loss, seed) pair under one configuration and compare each loss
with cross-entropy over the same seeds.

``python -m nlfs.transfer --preset fashion-mnist-cpu --out DIR`` or with explicit settings
(``--losses "CE;NGL;-y*log(p)+0.1*(1-p)**2" --model surrogate --dataset fashion-mnist --seeds 5``).

``--from DIR`` takes what a run directory hands on: the survivors of ``nlfs.eliminate``
(``DIR/finalists.json``) when it has them, else the search's ``--top`` best, tuned constants from
``DIR/tuned.json`` where it has them; each loss keeps its name (``<run>#<id>``), constants and gradient
scale. ``--losses-file`` reads nlfs/found_losses.json's format, a ``finalists.json``, an
``elimination.json`` or a ``tuned.json``.

Every pair gets the same ``TrainConfig`` except the loss: seed ``i`` (model init, data order,
augmentation) is shared by every loss, and the train/validation split (``split_seed``: the validation
images, the ``train_size`` subset and the label noise) is fixed, or with ``--split-seed per-seed``
drawn by each seed (``split_seed = seed``), every loss sharing it on that seed.

Outputs in ``--out`` (file stem ``--name``, default ``transfer``): ``NAME.csv`` (one row per run; also
the resume state, rewritten atomically after every run), ``NAME.md`` (mean ± std test accuracy per
loss, difference to CE in percentage points with its 95% interval, paired t-test and Wilcoxon p-values,
and the regime: data, budget, label noise, augmentation, gradient scale) and ``NAME.png``.

Resume: a (loss, seed) pair already in the CSV with status ``ok`` or ``diverged`` is never trained
again; ``error`` rows (the trainer raised) are retried only with ``--retry-errors``.

Failures: a diverged or errored run stays in the CSV and is counted in the table's "failed" column and
listed under it; it is excluded from the means and from the paired tests (which use the seeds where
both the loss and CE finished).

Learning rates (``--lr-grid``): every loss, CE and the baselines included, gets its own from one grid
by the same rule: the final model's mean validation accuracy on ``--lr-seeds`` (the model the test runs
test; ``--lr-by peak``, the best epoch's, is the rule older runs were chosen by), the grid widened past
an edge whenever the choice lands there (``--lr-widen`` points at most), so that no rate is chosen
at an edge of a grid someone picked. ``--tune-baselines`` tunes each baseline's constant the same way
(``CONSTANT_GRIDS``: label smoothing's a, Poly-1's epsilon, Focal's gamma, GCE's q), each value with its
own rate: a found loss's constants were searched, and its opponents deserve as much.

The package: ``_entries`` (which losses, baselines or contenders), ``_grid`` (a choice on a grid that
widens past its edges), ``_run`` (the trainings and their CSV), ``_report`` (the verdict), ``_presets``
and ``_main`` (the command line).
"""

from ._entries import LossEntry, entry_of, losses_from, losses_from_run, parse_losses
from ._grid import CONSTANT_GRIDS, grid_choice, on_edge
from ._main import baselines_of, build_parser, main
from ._presets import PRESETS
from ._report import summarise, versus_strongest, write_markdown, write_plot
from ._run import (
    COLUMNS,
    RateChoice,
    build_config,
    run_key,
    run_transfer,
    select_learning_rates,
    tune_baseline_constants,
)

__all__ = ["COLUMNS", "CONSTANT_GRIDS", "PRESETS", "LossEntry", "RateChoice", "baselines_of", "build_config",
           "build_parser", "entry_of", "grid_choice", "losses_from", "losses_from_run", "main", "on_edge",
           "parse_losses", "run_key", "run_transfer", "select_learning_rates", "summarise",
           "tune_baseline_constants", "versus_strongest", "write_markdown", "write_plot"]
