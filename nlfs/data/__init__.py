"""Datasets, seeded splits and batched on-device augmentations for the nlfs trainer."""

from ._augment import (
    AUGMENTS,
    PROB_TARGETS,
    Augment,
    cutmix,
    cutout,
    make_augment,
    mixup,
    normalize,
    random_crop,
    random_flip,
)
from ._datasets import (
    DATASETS,
    Dataset,
    DatasetError,
    canonical_name,
    clear_cache,
    load_cifar,
    load_dataset,
    load_digits,
    load_fashion_mnist,
    on_device,
    read_idx,
)
from ._splits import Splits, make_splits, with_label_noise

__all__ = ["AUGMENTS", "DATASETS", "PROB_TARGETS", "Augment", "Dataset", "DatasetError", "Splits",
           "canonical_name", "clear_cache", "cutmix", "cutout", "load_cifar", "load_dataset", "load_digits",
           "load_fashion_mnist", "make_augment", "make_splits", "mixup", "normalize", "on_device",
           "random_crop", "random_flip", "read_idx", "with_label_noise"]
