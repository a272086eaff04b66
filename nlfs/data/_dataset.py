"""The :class:`Dataset` every loader returns, and :class:`DatasetError`."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


class DatasetError(FileNotFoundError):
    """A dataset that is missing or unreadable; the message names the path(s) and how to get it."""


class UnlearnableClassWarning(UserWarning):
    """A validation or test part holds classes its training part lacks: allowed, but no loss can learn
    them. Said once per process per data; nlfs's own worker processes, whose driver said it, stay quiet."""


@dataclass
class Dataset:
    """Images (N, C, H, W) or feature vectors (N, D), labels int64 (N,), for the official train and
    test parts (and a user's validation part). Named datasets hold uint8 images; a user's data may
    hold float32 images or features (see ``nlfs.data._user``). ``split_by_fraction``: a user's data,
    split by stratified fractions (``make_splits``) rather than the named datasets' fixed rules."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor | None
    test_y: torch.Tensor | None
    num_classes: int
    mean: tuple[float, ...]  # per channel, on the 0..1 scale
    std: tuple[float, ...]
    source: str = ""  # where it was read from
    classes: list[str] = field(default_factory=list)
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None
    split_by_fraction: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        """One sample's shape: (C, H, W), or (D,) for feature vectors."""
        return tuple(self.train_x.shape[1:])

    @property
    def features(self) -> bool:
        """Feature vectors (N, D) rather than images."""
        return self.train_x.dim() == 2

    @property
    def in_channels(self) -> int:
        return self.train_x.shape[1]

    @property
    def image_size(self) -> int:
        return self.train_x.shape[2]
