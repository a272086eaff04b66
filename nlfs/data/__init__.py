"""Datasets (the named ones and a user's own: ``as_dataset``), seeded splits and batched on-device
augmentations for the nlfs trainer."""

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
from ._dataset import UnlearnableClassWarning
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
from ._splits import (
    ASYMMETRIC_PAIRS,
    LABEL_NOISE_KINDS,
    USER_TEST_FRACTION,
    USER_VAL_FRACTION,
    Splits,
    check_label_noise,
    check_split_sizes,
    make_splits,
    split_indices,
    with_label_noise,
)
from ._user import as_dataset, image_size, resize_images, save_dataset

__all__ = ["ASYMMETRIC_PAIRS", "AUGMENTS", "DATASETS", "LABEL_NOISE_KINDS", "PROB_TARGETS", "USER_TEST_FRACTION",
           "USER_VAL_FRACTION", "Augment", "Dataset", "DatasetError", "Splits", "UnlearnableClassWarning",
           "as_dataset", "canonical_name", "check_label_noise", "check_split_sizes", "clear_cache", "cutmix",
           "cutout", "load_cifar", "load_dataset", "load_digits", "load_fashion_mnist", "make_augment",
           "make_splits", "mixup", "normalize", "on_device", "random_crop", "random_flip", "read_idx",
           "image_size", "resize_images", "save_dataset", "split_indices", "with_label_noise"]
