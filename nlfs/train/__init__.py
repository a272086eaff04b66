"""The surrogate and transfer trainer: ``train(loss, TrainConfig(...)) -> TrainResult``."""

from ..data import DatasetError, load_dataset
from ._config import DATASET_DEFAULTS, TrainConfig, TrainResult
from ._loop import evaluate, lr_factor, make_loss, resolve_amp, resolve_device, train

__all__ = ["DATASET_DEFAULTS", "DatasetError", "TrainConfig", "TrainResult", "evaluate", "load_dataset",
           "lr_factor", "make_loss", "resolve_amp", "resolve_device", "train"]
