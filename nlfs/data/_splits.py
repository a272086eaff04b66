"""Explicit, seeded train/validation/test splits over a dataset that lives on the training device.

The samples stay on the device as stored (uint8 images; a user's float images or features:
``on_device``, one copy per device per process); a split is three index tensors into it, and a batch
is an index slice gathered in one op.

A user's data (``Dataset.split_by_fraction``) is split by stratified, seeded fractions: its given
validation and test parts are used as given; without a test part, ``USER_TEST_FRACTION`` of each class
is held out as the test part with a fixed seed (the same test part for every run, whatever the split
seed); without a validation part, ``USER_VAL_FRACTION`` of each class of the rest (or ``val_size``
samples, shared among classes by size) is the validation part, seeded by the split seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._datasets import Dataset, on_device
from ._user import stratified_take

DIGITS_TEST_SIZE = 360  # digits has no official test part: a fixed, seeded 20% is carved out
USER_VAL_FRACTION = 0.2  # 80/20 train/validation
USER_TEST_FRACTION = 0.2  # as digits: a fifth held out when a user's data has no test part
USER_TEST_SEED = 0


@dataclass
class Splits:
    """Index tensors (on the device) into ``images``/``labels``; ``test`` is None when not wanted."""

    dataset: Dataset
    images: torch.Tensor  # (M, C, H, W) uint8 images, a user's float32 images or (M, D) features
    labels: torch.Tensor  # int64 (M,)
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor | None
    seed: int

    @property
    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val),
                "test": 0 if self.test is None else len(self.test)}


def make_splits(ds: Dataset, val_size: int | None, train_size: int | None = None, seed: int = 0,
                device: str | torch.device = "cpu", include_test: bool = True) -> Splits:
    """Seeded split of the official training part into train and validation (``val_size`` images),
    optionally keeping only ``train_size`` training images. The test split is the official test part
    (digits: 360 images drawn with the split seed, taken out first) and is left out entirely when
    ``include_test=False``. A user's data: see the module docstring (``val_size`` None: the
    fraction)."""
    device = torch.device(device)
    images, labels = on_device(ds, device)
    if ds.split_by_fraction:
        train_idx, val_idx, test_idx = split_indices(ds, val_size, train_size, seed)
        return Splits(ds, images, labels, train_idx.to(device), val_idx.to(device),
                      test_idx.to(device) if include_test else None, int(seed))
    n_pool = len(ds.train_y)
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n_pool, generator=g)
    if ds.test_x is None:
        test_idx, perm = perm[:DIGITS_TEST_SIZE], perm[DIGITS_TEST_SIZE:]
    else:
        test_idx = torch.arange(n_pool, n_pool + len(ds.test_y))
    _check_val_size(val_size, len(perm))
    val_idx, train_idx = perm[:val_size], perm[val_size:]
    train_idx = _first(train_idx, train_size, len(val_idx))
    return Splits(ds, images, labels, train_idx.to(device), val_idx.to(device),
                  test_idx.to(device) if include_test else None, int(seed))


def check_split_sizes(ds: Dataset, val_size: int | None, train_size: int | None = None, seed: int = 0) -> None:
    """The ValueError (or DatasetError) ``make_splits`` would raise for these sizes, without laying the
    data out: for a command's checks before any work."""
    if ds.split_by_fraction:
        split_indices(ds, val_size, train_size, seed)
        return
    pool = len(ds.train_y) - (DIGITS_TEST_SIZE if ds.test_x is None else 0)
    _check_val_size(val_size, pool)
    _first(torch.arange(pool - val_size), train_size, val_size)


def _check_val_size(val_size: int, pool: int) -> None:
    if not 0 <= val_size < pool:
        raise ValueError(f"val_size={val_size} leaves no training images ({pool} available)")


def split_indices(ds: Dataset, val_size: int | None = None, train_size: int | None = None,
                  seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train, val, test) index tensors on the CPU into a user's data as ``on_device`` lays it out
    (train part, given validation part, given test part). :class:`DatasetError` when a class has too
    few samples to split, ValueError for sizes that do not fit."""
    n_train = len(ds.train_y)
    n_val = 0 if ds.val_y is None else len(ds.val_y)
    pool = torch.arange(n_train)
    if ds.test_y is not None:
        test_idx = torch.arange(n_train + n_val, n_train + n_val + len(ds.test_y))
    else:
        g = torch.Generator().manual_seed(USER_TEST_SEED)
        needs = 2 if ds.val_y is not None else 3  # one each for test, validation, training
        picked, rest = stratified_take(ds.train_y, USER_TEST_FRACTION, g, "test", ds.source, needs)
        test_idx, pool = pool[picked], pool[rest]
    g = torch.Generator().manual_seed(int(seed))
    if ds.val_y is not None:
        if val_size is not None:
            raise ValueError(f"{ds.source} has its own validation part ({n_val} samples): leave val_size unset")
        val_idx = torch.arange(n_train, n_train + n_val)
        train_idx = pool[torch.randperm(len(pool), generator=g)]
    else:
        amount = USER_VAL_FRACTION if val_size is None else int(val_size)
        picked, rest = stratified_take(ds.train_y[pool], amount, g, "validation", ds.source)
        val_idx, train_idx = pool[picked], pool[rest]
    return _first(train_idx, train_size, len(val_idx)), val_idx, test_idx


def _first(train_idx: torch.Tensor, train_size: int | None, n_val: int) -> torch.Tensor:
    """The first ``train_size`` training indices (all of them for None), checked."""
    if train_size is None:
        return train_idx
    if train_size < 1:
        raise ValueError(f"train_size must be positive, got {train_size}")
    if train_size > len(train_idx):
        raise ValueError(f"train_size={train_size} but only {len(train_idx)} training samples remain "
                         f"after {n_val} validation samples")
    return train_idx[:train_size]


# How training labels are corrupted (TrainConfig.label_noise_kind). Validation and test labels stay
# clean in every kind, so noise robustness is measured on true labels.
LABEL_NOISE_KINDS = ("symmetric", "pairflip", "asymmetric")
# The class-pair flips of the noisy-label literature's "asymmetric" noise (Patrini et al. 2017, CVPR,
# "Making deep neural networks robust to label noise: a loss correction approach"; used by the GCE, SCE
# and Active-Passive-Losses papers): MNIST 2->7, 3->8, 5<->6, 7->1 (digits has MNIST's classes), CIFAR-10
# truck->automobile, bird->airplane, deer->horse, cat<->dog. Classes not listed keep their label.
# Fashion-MNIST and CIFAR-100 have no such map in that literature: use pairflip there.
ASYMMETRIC_PAIRS: dict[str, dict[int, int]] = {
    "digits": {2: 7, 3: 8, 5: 6, 6: 5, 7: 1},
    "cifar10": {9: 1, 2: 0, 4: 7, 3: 5, 5: 3},
}


def check_label_noise(rate: float, kind: str, dataset: str) -> None:
    """A ValueError in one line for a rate outside [0, 1), an unknown kind, or asymmetric noise on a
    dataset without a literature class map (``dataset``: a canonical name)."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"label noise must be in [0, 1), got {rate}")
    if kind not in LABEL_NOISE_KINDS:
        raise ValueError(f"label_noise_kind must be one of {', '.join(LABEL_NOISE_KINDS)}, got {kind!r}")
    if kind == "asymmetric" and rate and dataset not in ASYMMETRIC_PAIRS:
        raise ValueError(f"asymmetric label noise has a class-pair map only for {', '.join(ASYMMETRIC_PAIRS)}; "
                         f"{dataset!r} has none (use label_noise_kind='pairflip')")


def with_label_noise(splits: Splits, rate: float, num_classes: int, seed: int = 0,
                     kind: str = "symmetric") -> Splits:
    """A copy of ``splits`` whose *training* labels are noisy; validation and test labels stay clean.

    Each training label is corrupted with probability ``rate`` (one seeded draw per training sample, in
    the order of ``splits.train``; ``seed`` is the split seed, so each split seed draws its own noise):

    * ``symmetric``: replaced by a class drawn uniformly from the other ``num_classes - 1``;
    * ``pairflip``: class c becomes c + 1 mod C (Han et al. 2018, "Co-teaching", arXiv 1804.06872);
    * ``asymmetric``: class c becomes ``ASYMMETRIC_PAIRS[dataset][c]`` (Patrini et al. 2017), classes
      without a pair keep their label (so fewer than ``rate`` of all labels change).
    """
    check_label_noise(rate, kind, splits.dataset.name)
    if rate == 0.0:
        return splits
    g = torch.Generator().manual_seed(int(seed) + 7_777)
    idx = splits.train.cpu()
    flip = torch.rand(len(idx), generator=g) < rate
    labels = splits.labels.clone()
    old = labels[idx.to(labels.device)].cpu()
    if kind == "symmetric":
        shift = torch.randint(1, num_classes, (len(idx),), generator=g)
        flipped = (old + shift) % num_classes
    elif kind == "pairflip":
        flipped = (old + 1) % num_classes
    else:
        pairs = torch.arange(num_classes)
        for src, dst in ASYMMETRIC_PAIRS[splits.dataset.name].items():
            pairs[src] = dst
        flipped = pairs[old]
    new = torch.where(flip, flipped, old)
    labels[idx.to(labels.device)] = new.to(labels.device)
    return Splits(splits.dataset, splits.images, labels, splits.train, splits.val, splits.test, splits.seed)
