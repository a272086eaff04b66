"""A user's data written by the tests themselves: ImageFolders of digits PNGs, a wine .npz, a .pt file."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def digits_images(per_class: int = 12):
    """scikit-learn digits as uint8 8x8 images, the first ``per_class`` of each class."""
    from sklearn.datasets import load_digits

    d = load_digits()
    keep = np.concatenate([np.flatnonzero(d.target == k)[:per_class] for k in range(10)])
    return np.round(d.images[keep] * (255.0 / 16.0)).astype(np.uint8), d.target[keep]


def write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def write_image_folder(root: Path, per_class: int = 12, splits: bool = False) -> Path:
    """``root/<digit name>/<i>.png``, or with ``splits``: ``root/{train,val,test}/<digit name>/...``."""
    x, y = digits_images(per_class)
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    for i, (img, k) in enumerate(zip(x, y, strict=True)):
        part = ""
        if splits:
            part = ("train", "train", "val", "test")[i % 4] if per_class >= 4 else "train"
        write_png(root / part / names[k] / f"{i}.png", img)
    return root


def write_wine(path: Path, with_classes: bool = True) -> Path:
    from sklearn.datasets import load_wine

    d = load_wine()
    extra = {"classes": np.array(d.target_names)} if with_classes else {}
    np.savez(path, x_train=d.data, y_train=d.target, **extra)
    return path
