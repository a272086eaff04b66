"""The surrogate and transfer trainer.

    from nlfs.train import TrainConfig, train
    r = train("NGL", TrainConfig(dataset="fashion-mnist", train_size=10000, evaluate_test=False))
    r.best_val_acc, r.diverged, r.reason, r.to_dict()

``train`` never raises for a bad loss (NaN/Inf, explosion, collapse, or an exception from the loss are
a failed result with ``diverged=True`` and a ``reason``); a missing dataset raises
:class:`DatasetError` naming the path tried. CLI: ``python -m nlfs.train --help``.
"""

from ..data import DatasetError, load_dataset
from ._config import DATASET_DEFAULTS, GRAD_SCALES, TrainConfig, TrainResult
from ._loop import (
    evaluate,
    gradient_magnitude,
    lr_factor,
    make_loss,
    rescale_to_ce,
    resolve_amp,
    resolve_device,
    train,
)

__all__ = ["DATASET_DEFAULTS", "GRAD_SCALES", "DatasetError", "TrainConfig", "TrainResult", "evaluate",
           "gradient_magnitude", "load_dataset", "lr_factor", "make_loss", "rescale_to_ce", "resolve_amp",
           "resolve_device", "train"]
