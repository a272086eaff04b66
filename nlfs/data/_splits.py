"""Explicit, seeded train/validation/test splits over a dataset that lives on the training device.

The images stay uint8 on the device (``on_device``: one copy per device per process); a split is three
index tensors into it, and a batch is an index slice gathered in one op.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._datasets import Dataset, on_device

DIGITS_TEST_SIZE = 360  # digits has no official test part: a fixed, seeded 20% is carved out


@dataclass
class Splits:
    """Index tensors (on the device) into ``images``/``labels``; ``test`` is None when not wanted."""

    dataset: Dataset
    images: torch.Tensor  # uint8 (M, C, H, W) on the device
    labels: torch.Tensor  # int64 (M,)
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor | None
    seed: int

    @property
    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val),
                "test": 0 if self.test is None else len(self.test)}


def make_splits(ds: Dataset, val_size: int, train_size: int | None = None, seed: int = 0,
                device: str | torch.device = "cpu", include_test: bool = True) -> Splits:
    """Seeded split of the official training part into train and validation (``val_size`` images),
    optionally keeping only ``train_size`` training images. The test split is the official test part
    (digits: a fixed seeded 360 images taken out first) and is left out entirely when
    ``include_test=False``."""
    device = torch.device(device)
    images, labels = on_device(ds, device)
    n_pool = len(ds.train_y)
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n_pool, generator=g)
    if ds.test_x is None:
        test_idx, perm = perm[:DIGITS_TEST_SIZE], perm[DIGITS_TEST_SIZE:]
    else:
        test_idx = torch.arange(n_pool, n_pool + len(ds.test_y))
    if not 0 <= val_size < len(perm):
        raise ValueError(f"val_size={val_size} leaves no training images ({len(perm)} available)")
    val_idx, train_idx = perm[:val_size], perm[val_size:]
    if train_size is not None:
        if train_size < 1:
            raise ValueError(f"train_size must be positive, got {train_size}")
        if train_size > len(train_idx):
            raise ValueError(f"train_size={train_size} but only {len(train_idx)} training images remain "
                             f"after {val_size} validation images")
        train_idx = train_idx[:train_size]
    return Splits(ds, images, labels, train_idx.to(device), val_idx.to(device),
                  test_idx.to(device) if include_test else None, int(seed))


def with_label_noise(splits: Splits, rate: float, num_classes: int, seed: int = 0) -> Splits:
    """A copy of ``splits`` whose *training* labels are symmetrically noisy: each is replaced, with
    probability ``rate``, by a class drawn uniformly from the other ``num_classes - 1`` (seeded;
    validation and test labels stay clean, so noise robustness is measured on true labels)."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"label noise must be in [0, 1), got {rate}")
    if rate == 0.0:
        return splits
    g = torch.Generator().manual_seed(int(seed) + 7_777)
    idx = splits.train.cpu()
    flip = torch.rand(len(idx), generator=g) < rate
    shift = torch.randint(1, num_classes, (len(idx),), generator=g)
    labels = splits.labels.clone()
    old = labels[idx.to(labels.device)].cpu()
    new = torch.where(flip, (old + shift) % num_classes, old)
    labels[idx.to(labels.device)] = new.to(labels.device)
    return Splits(splits.dataset, splits.images, labels, splits.train, splits.val, splits.test, splits.seed)
