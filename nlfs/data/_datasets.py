"""Dataset loading: Fashion-MNIST (IDX), CIFAR-10/100 (python pickle batches), scikit-learn digits,
and a user's own data (an ImageFolder directory, a ``.npz``/``.pt`` file, ``module:function``: ``_user``).

Every named loader returns a :class:`Dataset` of uint8 images (N, C, H, W) and int64 labels on the CPU; a
missing or corrupt dataset raises :class:`DatasetError` naming the paths tried and how to get the data.
Loaded datasets are cached in-process (:func:`load_dataset`), and so are their copies on a device
(:func:`on_device`).
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import torch

from ._dataset import Dataset, DatasetError
from ._user import _stats, is_user_source, load_user_dataset, resize_images, resolve_source, source_stamp

DATASETS = ("digits", "fashion-mnist", "cifar10", "cifar100")
_ALIASES = {
    "digits": "digits", "sklearn-digits": "digits",
    "fashion-mnist": "fashion-mnist", "fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
    "cifar10": "cifar10", "cifar-10": "cifar10", "cifar100": "cifar100", "cifar-100": "cifar100",
}
FASHION_MNIST_DEFAULT = "/usr/share/datasets/fashion-mnist"
CIFAR_DEFAULT = "~/.cache/nlfs/data"


def canonical_name(name: str) -> str:
    """A named dataset's canonical name, or a user's data as an absolute path or ``module:function``
    (a path that does not exist: :class:`DatasetError`)."""
    key = str(name).lower().strip()
    if key in _ALIASES:
        return _ALIASES[key]
    if is_user_source(str(name).strip()):
        return resolve_source(str(name))
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}, or give an ImageFolder "
                     "directory, a .npz/.pt file or module:function")


# ---------------------------------------------------------------- digits
def load_digits() -> Dataset:
    """scikit-learn's 8x8 digits (1,797 images, always present). No official test part: the split
    module carves a seeded test set out of it."""
    from sklearn.datasets import load_digits as _sk

    d = _sk()
    x = torch.from_numpy(np.round(d.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
    y = torch.from_numpy(d.target.astype(np.int64))
    mean, std = _stats(x)
    return Dataset("digits", x, y, None, None, 10, mean, std, source="sklearn.datasets.load_digits",
                   classes=[str(i) for i in range(10)])


# ---------------------------------------------------------------- Fashion-MNIST (IDX)
_FMNIST_FILES = {
    "train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte",
}
FMNIST_HOWTO = ("install it with `apt-get install dataset-fashion-mnist` (IDX files under "
                f"{FASHION_MNIST_DEFAULT}), or point --data-root / $NLFS_DATA at a folder holding "
                "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], "
                "t10k-labels-idx1-ubyte[.gz]")


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (raw or gzipped) as a numpy array; :class:`DatasetError` if it is malformed."""
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as err:
        raise DatasetError(f"cannot read IDX file {path}: {err}; {FMNIST_HOWTO}") from err
    if len(data) < 4:
        raise DatasetError(f"IDX file {path} is truncated ({len(data)} bytes); {FMNIST_HOWTO}")
    zero, dtype_code, ndim = data[0] * 256 + data[1], data[2], data[3]
    if zero != 0 or dtype_code != 0x08 or not 1 <= ndim <= 4:
        raise DatasetError(f"{path} is not a uint8 IDX file (bad magic {data[:4].hex()}); {FMNIST_HOWTO}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"IDX file {path} is truncated; {FMNIST_HOWTO}")
    dims = struct.unpack(">" + "I" * ndim, data[4:header])
    count = int(np.prod(dims))
    if len(data) - header != count:
        raise DatasetError(f"IDX file {path}: header says {dims} ({count} bytes) but it holds "
                           f"{len(data) - header} bytes; the file is corrupt; {FMNIST_HOWTO}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def fashion_mnist_candidates(data_root: str | os.PathLike | None) -> list[Path]:
    """Folders searched, in order: ``data_root``, else ``$NLFS_DATA``, else the Debian package path
    (each also with a ``fashion-mnist`` or torchvision-style ``FashionMNIST/raw`` sub-folder)."""
    if data_root is not None:
        base = Path(data_root).expanduser()
    elif os.environ.get("NLFS_DATA"):
        base = Path(os.environ["NLFS_DATA"]).expanduser()
    else:
        return [Path(FASHION_MNIST_DEFAULT)]
    return [base, base / "fashion-mnist", base / "FashionMNIST" / "raw"]


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def load_fashion_mnist(data_root: str | os.PathLike | None = None) -> Dataset:
    tried = fashion_mnist_candidates(data_root)
    for folder in tried:
        files = {k: _find(folder, v) for k, v in _FMNIST_FILES.items()}
        if all(files.values()):
            break
    else:
        raise DatasetError(f"Fashion-MNIST not found: no IDX files in {', '.join(map(str, tried))}; "
                           f"{FMNIST_HOWTO}")
    arrays = {k: read_idx(p) for k, p in files.items()}
    for part in ("train", "test"):
        x, y = arrays[f"{part}_x"], arrays[f"{part}_y"]
        if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise DatasetError(f"Fashion-MNIST in {folder}: {part} images {x.shape} do not match labels "
                               f"{y.shape}; {FMNIST_HOWTO}")
        if y.size and int(y.max()) > 9:
            raise DatasetError(f"Fashion-MNIST in {folder}: {part} label {int(y.max())} out of range 0-9")
    tx = torch.from_numpy(arrays["train_x"].copy()).unsqueeze(1)
    mean, std = _stats(tx)
    return Dataset(
        "fashion-mnist", tx, torch.from_numpy(arrays["train_y"].astype(np.int64)),
        torch.from_numpy(arrays["test_x"].copy()).unsqueeze(1),
        torch.from_numpy(arrays["test_y"].astype(np.int64)), 10, mean, std, source=str(folder),
        classes=["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                 "Bag", "Ankle boot"])


# ---------------------------------------------------------------- CIFAR (python pickle batches)
_CIFAR = {
    "cifar10": dict(folder="cifar-10-batches-py", train=[f"data_batch_{i}" for i in range(1, 6)],
                    test=["test_batch"], meta="batches.meta", label="labels", names="label_names",
                    classes=10, tv="CIFAR10"),
    "cifar100": dict(folder="cifar-100-python", train=["train"], test=["test"], meta="meta",
                     label="fine_labels", names="fine_label_names", classes=100, tv="CIFAR100"),
}


def cifar_root(data_root: str | os.PathLike | None) -> Path:
    """``data_root``, else ``$NLFS_DATA``, else ``~/.cache/nlfs/data`` (the torchvision root holding
    ``cifar-10-batches-py`` / ``cifar-100-python``)."""
    if data_root is not None:
        return Path(data_root).expanduser()
    if os.environ.get("NLFS_DATA"):
        return Path(os.environ["NLFS_DATA"]).expanduser()
    return Path(CIFAR_DEFAULT).expanduser()


def _unpickle(path: Path, howto: str) -> dict:
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh, encoding="latin1")
    except FileNotFoundError as err:
        raise DatasetError(f"missing CIFAR file {path}; {howto}") from err
    except Exception as err:  # truncated / not a pickle
        raise DatasetError(f"corrupt CIFAR file {path} ({type(err).__name__}: {err}); {howto}") from err


def load_cifar(which: str = "cifar10", data_root: str | os.PathLike | None = None,
               download: bool = False) -> Dataset:
    """CIFAR-10 or CIFAR-100 from a torchvision root. ``download=True`` fetches it with torchvision;
    otherwise nothing is downloaded. The pickle batches are read directly (same format torchvision
    reads), so a partial or hand-made folder with the right files also loads."""
    which = canonical_name(which)
    spec = _CIFAR[which]
    root = cifar_root(data_root)
    folder = root / spec["folder"]
    howto = (f"fetch it once with torchvision into {root} (nlfs.data.load_dataset({which!r}, download=True), "
             f"nlfs.train's --download), or point --data-root / $NLFS_DATA at the folder holding {spec['folder']}/")
    if download:
        import torchvision

        getattr(torchvision.datasets, spec["tv"])(str(root), train=True, download=True)
        getattr(torchvision.datasets, spec["tv"])(str(root), train=False, download=True)
    if not folder.is_dir():
        raise DatasetError(f"{which} not found: no folder {folder}; {howto}")
    parts = {}
    for part in ("train", "test"):
        xs, ys = [], []
        for fname in spec[part]:
            entry = _unpickle(folder / fname, howto)
            try:
                data = np.asarray(entry["data"], dtype=np.uint8)
                labels = np.asarray(entry[spec["label"]], dtype=np.int64)
            except KeyError as err:
                raise DatasetError(f"corrupt CIFAR file {folder / fname}: no key {err}; {howto}") from None
            if data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != labels.shape[0]:
                raise DatasetError(f"corrupt CIFAR file {folder / fname}: data {data.shape}, "
                                   f"labels {labels.shape}; {howto}")
            xs.append(data.reshape(-1, 3, 32, 32))
            ys.append(labels)
        x, y = np.concatenate(xs), np.concatenate(ys)
        if y.size and (y.min() < 0 or y.max() >= spec["classes"]):
            raise DatasetError(f"{which} in {folder}: labels out of range 0-{spec['classes'] - 1}")
        parts[part] = (torch.from_numpy(x), torch.from_numpy(y))
    classes: list[str] = []
    meta = folder / spec["meta"]
    if meta.is_file():
        classes = list(_unpickle(meta, howto).get(spec["names"], []))
    mean, std = _stats(parts["train"][0])
    return Dataset(which, *parts["train"], *parts["test"], spec["classes"], mean, std, source=str(folder),
                   classes=classes)


# ---------------------------------------------------------------- cache
_CACHE: dict[tuple, Dataset] = {}
_DEVICE_CACHE: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def load_dataset(name: str, data_root: str | os.PathLike | None = None, download: bool = False,
                 resize=None) -> Dataset:
    """Load (once per process) a dataset by name: ``digits``, ``fashion-mnist``, ``cifar10``,
    ``cifar100``, or a user's data (an ImageFolder directory, a ``.npz``/``.pt`` file, or
    ``module:function``; cached per path and modification time). ``resize`` (H, W): every image
    resized (a user's images of different sizes need it). Never substitutes another dataset: a
    missing one raises :class:`DatasetError`."""
    name = canonical_name(name)
    size = None if resize is None else tuple(int(v) for v in resize)
    if name not in DATASETS:
        key = (name, source_stamp(name), size)
        ds = _CACHE.get(key)
        if ds is None:
            ds = _CACHE[key] = load_user_dataset(name, size)
        return ds
    if size is not None:
        key = (name, str(data_root), download, size)
        ds = _CACHE.get(key)
        if ds is None:
            import dataclasses

            full = load_dataset(name, data_root, download)
            ds = _CACHE[key] = dataclasses.replace(
                full, train_x=resize_images(full.train_x, size),
                test_x=None if full.test_x is None else resize_images(full.test_x, size))
        return ds
    if name == "digits":
        key = (name,)
    elif name == "fashion-mnist":
        key = (name, tuple(str(p) for p in fashion_mnist_candidates(data_root)))
    else:
        key = (name, str(cifar_root(data_root)))
    ds = _CACHE.get(key)
    if ds is None:
        if name == "digits":
            ds = load_digits()
        elif name == "fashion-mnist":
            ds = load_fashion_mnist(data_root)
        else:
            ds = load_cifar(name, data_root, download)
        _CACHE[key] = ds
    return ds


def on_device(ds: Dataset, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """All samples (train part, then validation part if any, then test part) and labels on ``device``;
    cached per process."""
    key = (ds.name, ds.source, id(ds), str(device))
    hit = _DEVICE_CACHE.get(key)
    if hit is None:
        xs, ys = [ds.train_x], [ds.train_y]
        if ds.val_x is not None:
            xs.append(ds.val_x)
            ys.append(ds.val_y)
        if ds.test_x is not None:
            xs.append(ds.test_x)
            ys.append(ds.test_y)
        x = torch.cat(xs).to(device).contiguous()
        y = torch.cat(ys).to(device)
        hit = (x, y)
        _DEVICE_CACHE[key] = hit
    return hit


def clear_cache() -> None:
    _CACHE.clear()
    _DEVICE_CACHE.clear()
