"""Tiny dataset folders written by the tests themselves: Fashion-MNIST IDX and CIFAR pickle batches."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np


def learnable_images(n: int, size: int, channels: int, classes: int, seed: int):
    """Class k: a bright 4-pixel-wide bar at a class-specific position plus noise (easy to learn)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.integers(0, 60, (n, channels, size, size)).astype(np.uint8)
    for i, k in enumerate(y):
        pos = int(k) * (size - 4) // max(1, classes - 1)
        if k % 2:
            x[i, :, pos:pos + 4, :] = 230
        else:
            x[i, :, :, pos:pos + 4] = 230
    return x, y.astype(np.uint8)


def write_idx(path: Path, array: np.ndarray, gz: bool) -> Path:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def write_fashion_mnist(folder: Path, n_train: int = 600, n_test: int = 200, gz_train: bool = True,
                        gz_test: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    x, y = learnable_images(n_train, 28, 1, 10, 1)
    write_idx(folder / "train-images-idx3-ubyte", x[:, 0], gz_train)
    write_idx(folder / "train-labels-idx1-ubyte", y, gz_train)
    x, y = learnable_images(n_test, 28, 1, 10, 2)
    write_idx(folder / "t10k-images-idx3-ubyte", x[:, 0], gz_test)
    write_idx(folder / "t10k-labels-idx1-ubyte", y, gz_test)
    return folder


def write_cifar(root: Path, which: str = "cifar10", per_batch: int = 20) -> Path:
    classes = 10 if which == "cifar10" else 100
    if which == "cifar10":
        folder = root / "cifar-10-batches-py"
        files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        label_key, meta, names = "labels", "batches.meta", "label_names"
    else:
        folder = root / "cifar-100-python"
        files = ["train", "test"]
        label_key, meta, names = "fine_labels", "meta", "fine_label_names"
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(files):
        x, y = learnable_images(per_batch, 32, 3, classes, 10 + i)
        entry = {"data": x.reshape(per_batch, -1), label_key: [int(v) for v in y],
                 "batch_label": f, "filenames": [f"{j}.png" for j in range(per_batch)]}
        with open(folder / f, "wb") as fh:
            pickle.dump(entry, fh)
    with open(folder / meta, "wb") as fh:
        pickle.dump({names: [f"class{k}" for k in range(classes)]}, fh)
    return folder
