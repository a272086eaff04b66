"""The surrogate and transfer trainer.

    from nlfs.train import TrainConfig, train
    r = train("NGL", TrainConfig(dataset="fashion-mnist", train_size=10000, evaluate_test=False))
    r.best_val_acc, r.diverged, r.reason, r.to_dict()

``train`` never raises for a loss's numerical failure (NaN/Inf, explosion, collapse are a failed result
with ``diverged=True`` and a ``reason``); a loss that cannot be built raises :class:`ConfigError`, an
exception from the loss while training :class:`TrainingError`, a missing dataset :class:`DatasetError`
naming the path tried. ``dataset`` may be a user's data (an ImageFolder directory, a ``.npz``/``.pt``
file, ``module:function``) and ``model`` a ``module:factory``. ``check_config`` checks a configuration
before any work. ``train_packed(losses, cfg, seeds=..., lrs=...)`` trains K members of one
configuration as one packed network (a GPU feature: one set of kernel launches for K trainings);
``train_grid(losses, cfg, seeds, pack=K)`` trains a losses x seeds grid, packed or one at a time.
CLI: ``python -m nlfs.train --help``.
"""

from ..data import DatasetError, load_dataset
from ._check import check_config
from ._config import (
    AMPS,
    DATASET_DEFAULTS,
    GRAD_SCALES,
    OPTIMIZERS,
    SCHEDULES,
    USER_DATA_DEFAULTS,
    TrainConfig,
    TrainResult,
    dataset_defaults,
)
from ._errors import ConfigError, TrainingError
from ._key import training_key
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
from ._packed import train_grid, train_packed

__all__ = ["AMPS", "DATASET_DEFAULTS", "GRAD_SCALES", "OPTIMIZERS", "SCHEDULES", "USER_DATA_DEFAULTS",
           "ConfigError", "DatasetError", "TrainConfig", "TrainResult", "TrainingError", "check_config",
           "dataset_defaults", "evaluate", "gradient_magnitude", "load_dataset", "lr_factor",
           "make_loss", "rescale_to_ce", "resolve_amp", "resolve_device", "train", "train_grid", "train_packed",
           "training_key"]
