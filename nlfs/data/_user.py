"""A user's own data: an ImageFolder directory, a ``.npz``/``.pt`` file, a ``module:function``, or
arrays in memory, all turned into one :class:`Dataset` by :func:`as_dataset`.

How data is stored: uint8 images stay uint8 (N, C, H, W) (the pipeline of the named datasets); images
of any other dtype are kept as float32 as given (normalised per channel from their own statistics,
no rescaling, so nothing is lost); feature vectors (N, D) are float32, normalised per feature from the
training part. Labels are int64 class indices 0..C-1 (string labels become sorted class names).
Every problem is a :class:`DatasetError` of one line naming the source and what is wrong. A validation or
test part holding a class the training part lacks is allowed, and said once (``warnings.warn``).
"""

from __future__ import annotations

import math
import os
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from .._imports import import_reference
from ._dataset import Dataset, DatasetError, UnlearnableClassWarning

PARTS = ("train", "val", "test")
SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".ppm", ".pgm", ".tif", ".tiff")
_FUNCTION = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def is_user_source(text: str) -> bool:
    """Does ``text`` name a user's data (a path to a directory/.npz/.pt, or ``module:function``)?"""
    return bool(_FUNCTION.fullmatch(text)) or os.sep in text or "/" in text or \
        Path(text).suffix.lower() in (".npz", ".pt", ".pth") or Path(text).expanduser().exists()


def resolve_source(text: str) -> str:
    """The canonical form of a user's data reference: an absolute path, or ``module:function`` as is.
    A path that does not exist is a :class:`DatasetError`."""
    text = str(text).strip()
    path = Path(text).expanduser()
    if path.exists():
        return str(path.resolve())
    if _FUNCTION.fullmatch(text):
        return text
    raise DatasetError(f"dataset {text}: no such file or directory (expected an ImageFolder directory, a "
                       ".npz/.pt file with x_train and y_train, or module:function)")


def source_stamp(source: str) -> tuple:
    """What changes when the data on disk changes: a file's (mtime, size); a directory's and its
    sub-folders' mtimes (adding, removing or renaming an image changes them; editing one in place
    does not). ``module:function``: nothing (loaded once per process)."""
    path = Path(source)
    if path.is_file():
        st = path.stat()
        return (st.st_mtime_ns, st.st_size)
    if path.is_dir():
        return tuple((str(d), d.stat().st_mtime_ns) for d in sorted([path, *_subdirs(path, 2)]))
    return ()


def _subdirs(path: Path, depth: int) -> list[Path]:
    out = []
    for d in path.iterdir():
        if d.is_dir() and not d.name.startswith("."):
            out.append(d)
            if depth > 1:
                out += _subdirs(d, depth - 1)
    return out


# ----------------------------------------------------------------------------------------- loading
def load_user_dataset(source: str, resize=None) -> Dataset:
    """Load a user's data from its canonical reference (see :func:`resolve_source`)."""
    path = Path(source)
    if path.is_dir():
        return load_image_folder(path, resize)
    if path.is_file():
        return arrays_to_dataset(_read_file(path), source, resize)
    return arrays_to_dataset(_call(source), source, resize)


def _read_file(path: Path) -> dict:
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            return _read_npz(path)
        if suffix in (".pt", ".pth"):
            data = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(data, dict):
                raise DatasetError(f"{path}: holds a {type(data).__name__}, expected a dict with x_train, "
                                   "y_train")
            return data
    except DatasetError:
        raise
    except Exception as err:  # a corrupt file, pickled objects, ...
        raise DatasetError(f"{path}: cannot read it ({type(err).__name__}: {err})") from None
    raise DatasetError(f"{path}: not a dataset file (expected a directory, .npz or .pt)")


def _read_npz(path: Path) -> dict:
    """The arrays of an ``.npz`` archive; what else the file is, said in one line."""
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as fh:
            head = fh.read(6)
        what = ("the file is empty" if not head else "it holds a single .npy array" if head == b"\x93NUMPY" else
                "it is not a zip file, or a damaged one")
        raise DatasetError(f"{path}: not an .npz archive (a zip of .npy arrays): {what}; write one with "
                           f"np.savez({path.name!r}, x_train=..., y_train=...)")
    out = {}
    with np.load(path, allow_pickle=False) as z:
        for k in z.files:
            try:
                out[k] = z[k]
            except ValueError as err:
                if "allow_pickle" not in str(err):
                    raise
                raise DatasetError(f"{path}: {k} is an object array (pickled Python objects, e.g. rows of "
                                   "different lengths), which is not read; store numbers or strings "
                                   "(np.asarray(..., dtype=float) or dtype=str)") from None
    return out


def _call(spec: str):
    name = spec.partition(":")[2]
    fn = import_reference(spec, f"dataset {spec}", DatasetError)
    try:
        return fn()
    except Exception as err:
        raise DatasetError(f"dataset {spec}: {name}() raised {type(err).__name__}: {err}") from None


def as_dataset(data, name: str | None = None, resize=None) -> Dataset:
    """Any data a user has, as a :class:`Dataset`: a path or ``module:function`` (str or Path); a dict
    with ``x_train``, ``y_train`` and optional ``x_val``, ``y_val``, ``x_test``, ``y_test``,
    ``classes``; a tuple ``(x, y)``, ``(x_train, y_train, x_test, y_test)`` or ``(x_train, y_train,
    x_val, y_val, x_test, y_test)`` of arrays/tensors/lists; a torch ``Dataset`` of ``(x, y)`` items
    (stacked; all of it is the training part); or a :class:`Dataset` (returned as is)."""
    if isinstance(data, Dataset):
        return data
    if isinstance(data, (str, os.PathLike)):
        return load_user_dataset(resolve_source(str(data)), resize)
    return arrays_to_dataset(data, name or f"<{type(data).__name__}>", resize)


def _parts(data, where: str) -> dict:
    if isinstance(data, dict):
        return dict(data)
    if isinstance(data, torch.utils.data.Dataset) and hasattr(data, "__len__"):
        items = [data[i] for i in range(len(data))]
        if not items:
            raise DatasetError(f"{where}: the torch Dataset is empty")
        xs = [torch.as_tensor(np.asarray(i[0])) for i in items]
        return {"x_train": torch.stack(xs), "y_train": [i[1] for i in items]}
    if isinstance(data, (tuple, list)) and len(data) in (2, 4, 6):
        names = {2: ("train",), 4: ("train", "test"), 6: ("train", "val", "test")}[len(data)]
        out = {}
        for i, part in enumerate(names):
            out[f"x_{part}"], out[f"y_{part}"] = data[2 * i], data[2 * i + 1]
        return out
    raise DatasetError(f"{where}: got a {type(data).__name__}; expected a dict with x_train and y_train, "
                       "a tuple (x, y), (x_train, y_train, x_test, y_test) or with val too, or a torch Dataset")


def _array(value, where: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except Exception as err:
        raise DatasetError(f"{where}: not an array ({type(err).__name__}: {err})") from None


def arrays_to_dataset(data, source: str, resize=None) -> Dataset:
    """A :class:`Dataset` from arrays (see :func:`as_dataset` for the accepted forms), checked."""
    parts = _parts(data, source)
    if "x_train" not in parts or "y_train" not in parts:
        has = ", ".join(sorted(map(str, parts))) or "nothing"
        raise DatasetError(f"{source}: needs x_train and y_train (has {has})")
    for part in ("val", "test"):
        if (f"x_{part}" in parts) != (f"y_{part}" in parts):
            raise DatasetError(f"{source}: x_{part} and y_{part} must be given together")
    classes = [str(c) for c in _array(parts["classes"], f"{source}: classes").reshape(-1)] \
        if parts.get("classes") is not None else []
    xs, ys = {}, {}
    for part in PARTS:
        if f"x_{part}" not in parts or parts[f"x_{part}"] is None:
            continue
        xs[part] = _array(parts[f"x_{part}"], f"{source}: x_{part}")
        y = _array(parts[f"y_{part}"], f"{source}: y_{part}")
        _check_label_shape(y, len(xs[part]), f"y_{part}", source)
        ys[part] = y.reshape(-1) if y.ndim > 0 else np.asarray([])
        if len(xs[part]) != len(ys[part]):
            raise DatasetError(f"{source}: x_{part} has {len(xs[part])} rows but y_{part} has {len(ys[part])}")
        if len(xs[part]) == 0:
            raise DatasetError(f"{source}: x_{part} is empty")
    labels, classes = _labels(ys, classes, source)
    tensors = {part: _samples(x, f"{source}: x_{part}") for part, x in xs.items()}
    shapes = {part: tuple(t.shape[1:]) for part, t in tensors.items()}
    if resize is not None and tensors["train"].dim() != 4:  # silently unresized, a "14x14" rung would lie
        raise DatasetError(f"{source}: resize is for images; this data holds feature vectors (samples of shape "
                           f"{tuple(tensors['train'].shape[1:])}): drop resize")
    if resize is not None:
        tensors = {part: resize_images(t, resize) for part, t in tensors.items()}
        shapes = {part: tuple(t.shape[1:]) for part, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise DatasetError(f"{source}: parts have different sample shapes "
                           f"({', '.join(f'x_{p} {s}' for p, s in shapes.items())})")
    dtypes = {t.dtype for t in tensors.values()}
    if len(dtypes) > 1:  # uint8 train images with float test images: one scale for all
        tensors = {part: t.float() for part, t in tensors.items()}
    return _make(source, tensors, labels, classes)


def _check_label_shape(y: np.ndarray, rows: int, name: str, source: str) -> None:
    """Labels are class indices, one per sample: (N,), or (N, 1) / (1, N). One-hot rows or per-class
    scores (N, C) are refused with how to turn them into indices."""
    if y.ndim <= 1 or (y.size == rows and max(y.shape) == y.size):
        return
    need = f"labels must be class indices of shape (N,) = ({rows},)"
    if y.ndim == 2 and len(y) == rows and y.dtype.kind in "biuf":
        onehot = bool(((y == 0) | (y == 1)).all() and (y.sum(1) == 1).all())
        what = "looks one-hot (N, C)" if onehot else "looks like one column per class (N, C)"
        raise DatasetError(f"{source}: {name} has shape {y.shape} and {what}; {need}: convert with "
                           f"{name}.argmax(1)")
    raise DatasetError(f"{source}: {name} has shape {y.shape}; {need}")


def _labels(ys: dict, classes: list[str], source: str):
    """int64 labels 0..C-1 per part, and the class names (strings as labels: their sorted set)."""
    kinds = {y.dtype.kind for y in ys.values()}
    if kinds & {"U", "S", "O"}:
        if not kinds <= {"U", "S", "O"}:
            raise DatasetError(f"{source}: labels mix text and numbers")
        names = sorted({str(v) for y in ys.values() for v in y})
        if classes and set(names) - set(classes):
            raise DatasetError(f"{source}: labels {sorted(set(names) - set(classes))[:5]} are not in classes")
        classes = classes or names
        index = {c: i for i, c in enumerate(classes)}
        return {p: torch.tensor([index[str(v)] for v in y], dtype=torch.int64) for p, y in ys.items()}, classes
    out = {}
    for part, y in ys.items():
        if y.dtype.kind == "b":
            y = y.astype(np.int64)
        if y.dtype.kind == "f":
            bad = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))
            if bad.size:
                raise DatasetError(f"{source}: labels must be whole numbers 0..C-1; y_{part}[{bad[0]}] is "
                                   f"{y[bad[0]]}")
        elif y.dtype.kind not in "iu":
            raise DatasetError(f"{source}: y_{part} holds {y.dtype} values, not integer class indices")
        out[part] = torch.from_numpy(y.astype(np.int64))
    top = max(int(y.max()) for y in out.values())
    count = len(classes) if classes else top + 1
    for part, y in out.items():
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= count:
            bad = low if low < 0 else high
            where = f"{len(classes)} classes" if classes else "classes"
            raise DatasetError(f"{source}: label {bad} in y_{part} is outside 0..{count - 1} ({where})")
    if not classes:  # the count comes from the highest label: a stray one makes empty classes
        high, present = int(out["train"].max()), set(out["train"].unique().tolist())
        if len(present) <= high:
            empty = [c for c in range(min(high + 1, len(present) + 5)) if c not in present][:5]
            missing = high + 1 - len(present)
            shown = ", ".join(map(str, empty)) + (f", ... ({missing} classes)" if missing > len(empty) else "")
            which = f"class {shown} has" if missing == 1 else f"classes {shown} have"
            raise DatasetError(f"{source}: the labels in y_train run 0..{high} but {which} no samples (labels "
                               "must be 0..C-1; is a label out of range?)")
        # a class only y_val or y_test holds is allowed (a small training split may miss one); a class no part
        # holds is not: a stray label above y_train's
        present = set().union(*(set(y.unique().tolist()) for y in out.values()))
        if len(present) < count:
            part = next(p for p, y in out.items() if int(y.max()) == top)
            empty = [c for c in range(count) if c not in present]
            shown = ", ".join(map(str, empty[:5])) + (f", ... ({len(empty)} classes)" if len(empty) > 5 else "")
            raise DatasetError(f"{source}: label {top} in y_{part} is above y_train's 0..{high} and leaves "
                               f"{'class' if len(empty) == 1 else 'classes'} {shown} with no samples in any part "
                               "(labels must be 0..C-1; is a label out of range?)")
    if count < 2:
        raise DatasetError(f"{source}: only one class ({count}); classification needs at least 2")
    return out, classes or [str(i) for i in range(count)]


def _samples(x: np.ndarray, where: str) -> torch.Tensor:
    """Images as (N, C, H, W) (uint8 kept, others float32) or features as float32 (N, D)."""
    if x.dtype.kind not in "biuf":
        raise DatasetError(f"{where}: holds {x.dtype} values, not numbers")
    if x.ndim == 2:
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    elif x.ndim in (3, 4):
        if x.ndim == 3:
            x = x[:, None]
        elif x.shape[3] <= 4 < x.shape[1]:  # (N, H, W, C): a last axis of 1-4 channels
            x = x.transpose(0, 3, 1, 2)
        dtype = np.uint8 if x.dtype == np.uint8 else np.float32
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=dtype))
    else:
        raise DatasetError(f"{where}: shape {x.shape}; expected images (N, H, W), (N, H, W, C), (N, C, H, W) "
                           "or feature vectors (N, D)")
    if t.is_floating_point():
        bad = ~torch.isfinite(t.reshape(len(t), -1)).all(1)
        if bad.any():
            i = int(bad.nonzero()[0])
            raise DatasetError(f"{where}: row {i} holds NaN or Inf values ({int(bad.sum())} rows do)")
    return t


def image_size(value) -> tuple[int, int]:
    """A resize as given: ``S``, ``(H, W)``, or text ``"S"``, ``"H,W"``, ``"HxW"`` -> (H, W) of positive
    pixels; anything else a ValueError saying what is expected (the one reading of a size: the CLI's
    ``--resize``, ``discover(resize=...)`` and ``TrainConfig.resize`` all come here)."""
    def side(v) -> int:
        if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
            raise ValueError(v)
        return int(v)

    try:
        if isinstance(value, str):
            parts = tuple(int(v) for v in value.lower().replace("x", ",").split(","))
        elif isinstance(value, (int, float)):
            parts = (side(value),)
        else:
            parts = tuple(side(v) for v in value)
    except (TypeError, ValueError):
        parts = ()
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise ValueError(f"resize must be S or (H, W) of positive pixels (text: S, HxW or H,W), got {value!r}")
    return parts * 2 if len(parts) == 1 else parts


def resize_images(x: torch.Tensor, size) -> torch.Tensor:
    """(N, C, H, W) images resized to ``size`` = (H, W) (antialiased; uint8 stays uint8)."""
    from torchvision.transforms.v2 import functional as TF

    size = [int(s) for s in size]
    if list(x.shape[-2:]) == size:
        return x
    return TF.resize(x, size, antialias=True)


def _stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per channel (images, on the 0..1 scale for uint8) or per feature."""
    xf = x.to(torch.float64)
    if x.dtype == torch.uint8:
        xf = xf / 255.0
    dims = (0,) if x.dim() == 2 else (0, 2, 3)
    mean = xf.mean(dim=dims)
    std = xf.std(dim=dims) if len(x) > 1 else torch.ones_like(mean)
    if x.dim() == 2:  # a constant feature: leave its scale alone
        std = torch.where(std > 0, std, torch.ones_like(std))
    else:
        std = std.clamp_min(1e-3)
    return tuple(mean.tolist()), tuple(std.tolist())


def _make(source: str, x: dict, y: dict, classes: list[str], folders: bool = False) -> Dataset:
    _warn_unlearnable(source, y, classes, folders)
    mean, std = _stats(x["train"])
    return Dataset(source, x["train"], y["train"], x.get("test"), y.get("test"), len(classes), mean, std,
                   source=source, classes=list(classes), val_x=x.get("val"), val_y=y.get("val"),
                   split_by_fraction=True)


_WARNED: set[str] = set()  # digests of the data this process has warned about


def _warn_unlearnable(source: str, y: dict, classes: list[str], folders: bool = False) -> None:
    """One ``warnings.warn`` when a validation or test part holds classes the training part lacks:
    allowed (a small training split may miss a class), but no loss can learn them, so every loss's
    accuracy there is capped. Said once per data (not per load of the same labels, nor per training)."""
    trained = set(y["train"].unique().tolist())
    extra = {part: sorted(set(y[part].unique().tolist()) - trained) for part in PARTS[1:] if part in y}
    extra = {part: missing for part, missing in extra.items() if missing}
    if not extra:
        return
    import hashlib

    digest = hashlib.sha1("\0".join(classes).encode())
    for part in PARTS:
        if part in y:
            digest.update(part.encode() + y[part].numpy().tobytes())
    key = digest.hexdigest()[:16]
    if key in _WARNED:
        return
    _WARNED.add(key)
    said = []
    for part, missing in extra.items():
        names = [repr(classes[c]) if classes and classes[c] != str(c) else str(c) for c in missing]
        shown = ", ".join(names[:5]) + (f", ... ({len(names)} classes)" if len(names) > 5 else "")
        count = int(torch.isin(y[part], torch.tensor(missing)).sum())
        where = f"{part}/" if folders else f"y_{part}"
        said.append(f"{where} holds {'class' if len(missing) == 1 else 'classes'} {shown} that "
                    f"{'train/' if folders else 'y_train'} lacks ({count} of its {len(y[part])} samples)")
    warnings.warn(f"nlfs: {source}: {'; '.join(said)}. No loss can learn a class its training split lacks: those "
                  "samples count as errors for every loss, CE included; add samples of those classes to the "
                  "training part", UnlearnableClassWarning, stacklevel=2)


# ------------------------------------------------------------------------------------- ImageFolder
def load_image_folder(root: Path, resize=None) -> Dataset:
    """``root/<class>/<image>``, or ``root/train/<class>/<image>`` with optional ``val/`` (or
    ``valid/``, ``validation/``) and ``test/`` parts used as given. Class names are the folder names,
    sorted (as torchvision's ImageFolder); images are decoded with PIL into torchvision tensors."""
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    split_dirs = {d.name.lower(): d for d in subdirs if d.name.lower() in SPLIT_FOLDERS}
    layout = ("expected DIR/<class>/<image>, or DIR/train/<class>/<image> with optional DIR/val/ and "
              "DIR/test/")
    if "train" in split_dirs:
        others = [d.name for d in subdirs if d.name.lower() not in SPLIT_FOLDERS]
        if others:
            raise DatasetError(f"{root}: mixes split folders (train/) with other folders ({', '.join(others)}); "
                               f"{layout}")
        parts = {SPLIT_FOLDERS[k]: d for k, d in split_dirs.items()}
    elif subdirs:
        parts = {"train": root}
    else:
        raise DatasetError(f"{root} is not an ImageFolder layout: no class subfolders; {layout}")
    files: dict[str, list[tuple[Path, str]]] = {}
    for part, folder in parts.items():
        class_dirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not class_dirs:
            raise DatasetError(f"{folder} is not an ImageFolder layout: no class subfolders; {layout}")
        loose = [f.name for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
        if loose:
            raise DatasetError(f"{folder} holds images outside class subfolders ({loose[0]}, ...); {layout}")
        files[part] = []
        for d in class_dirs:
            images = sorted(f for f in d.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not images and part == "train":
                raise DatasetError(f"{d}: class folder holds no images ({', '.join(IMAGE_SUFFIXES)})")
            files[part] += [(f, d.name) for f in images]
    classes = sorted({c for fs in files.values() for _, c in fs})
    index = {c: i for i, c in enumerate(classes)}
    x, y = {}, {}
    for part, fs in files.items():
        if not fs:
            raise DatasetError(f"{parts[part]}: no images")
        images = [_decode(f) for f, _ in fs]
        x[part] = _stack(images, [f for f, _ in fs], resize, root)
        y[part] = torch.tensor([index[c] for _, c in fs], dtype=torch.int64)
    if len(classes) < 2:
        raise DatasetError(f"{root}: only one class folder ({classes[0]}); classification needs at least 2")
    sizes = {tuple(t.shape[1:]) for t in x.values()}
    if len(sizes) > 1:
        raise DatasetError(f"{root}: the parts hold images of different shapes {sorted(sizes)}; use --resize")
    return _make(str(root), x, y, classes, folders=True)


def _decode(path: Path) -> torch.Tensor:
    """One image as uint8 (C, H, W), read with PIL and torchvision's ``pil_to_tensor`` (torchvision's
    own decoders are deprecated from 0.29 in favour of torchcodec). Grey stays one channel, every
    other mode becomes RGB (an alpha channel is dropped)."""
    from PIL import Image
    from torchvision.transforms.v2.functional import pil_to_tensor

    try:
        with Image.open(path) as im:
            mode = "L" if im.mode in ("1", "L", "LA", "P") and _grey(im) else "RGB"
            img = pil_to_tensor(im.convert(mode))
    except Exception as err:
        raise DatasetError(f"{path}: cannot decode the image ({type(err).__name__}: {err})") from None
    return img


def _grey(im) -> bool:
    if im.mode != "P":
        return True
    palette = im.convert("RGB")
    r, g, b = palette.split()
    return r.tobytes() == g.tobytes() == b.tobytes()


def _stack(images: list[torch.Tensor], paths: list[Path], resize, root: Path) -> torch.Tensor:
    channels = max(t.shape[0] for t in images)
    images = [t.expand(channels, -1, -1) if t.shape[0] != channels else t for t in images]
    if resize is not None:
        images = [resize_images(t[None], resize)[0] for t in images]
    else:
        first = tuple(images[0].shape[1:])
        for t, p in zip(images, paths, strict=True):
            if tuple(t.shape[1:]) != first:
                raise DatasetError(f"{root}: images of different sizes ({paths[0].name} is "
                                   f"{first[0]}x{first[1]}, {p.relative_to(root)} is {t.shape[1]}x{t.shape[2]}); "
                                   "use --resize H[,W] (TrainConfig.resize) to resize them all")
    return torch.stack(images).contiguous()


def save_dataset(ds: Dataset, path: str | os.PathLike) -> Path:
    """Write ``ds`` as a ``.pt`` file that :func:`as_dataset` reads back (e.g. to hand a dataset held in
    memory to worker processes by path)."""
    out = {"x_train": ds.train_x, "y_train": ds.train_y, "classes": list(ds.classes)}
    for part, x, y in (("val", ds.val_x, ds.val_y), ("test", ds.test_x, ds.test_y)):
        if x is not None:
            out[f"x_{part}"], out[f"y_{part}"] = x, y
    path = Path(path)
    torch.save(out, path)
    return path


def stratified_take(labels: torch.Tensor, amount, generator: torch.Generator, what: str,
                    source: str, needs: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions (into ``labels``) of a stratified random part and of the rest. ``amount``: a fraction
    (every present class gives ``round(fraction * n)``, at least 1, and keeps at least one) or a count
    (shared among classes by size, largest remainders first). A class with fewer than ``needs``
    samples cannot be split: :class:`DatasetError`."""
    counts = torch.bincount(labels).tolist()
    for c, n in enumerate(counts):
        if 0 < n < needs:
            raise DatasetError(f"{source}: class {c} has only {n} sample{'s' if n != 1 else ''}: too few for "
                               f"the {what} split (each class needs at least {needs}; give that part or more samples)")
    total = len(labels)
    if isinstance(amount, float):
        take = [0 if n == 0 else min(n - 1, max(1, round(amount * n))) for n in counts]
    else:
        if not 0 < amount < total:
            raise DatasetError(f"{source}: a {what} part of {amount} leaves no training samples "
                               f"({total} available)")
        quota = [amount * n / total for n in counts]
        take = [math.floor(q) for q in quota]
        for c in sorted(range(len(counts)), key=lambda c: quota[c] - take[c], reverse=True)[:amount - sum(take)]:
            take[c] += 1
    picked, rest = [], []
    for c, k in enumerate(take):
        members = (labels == c).nonzero().view(-1)
        members = members[torch.randperm(len(members), generator=generator)]
        picked.append(members[:k])
        rest.append(members[k:])
    picked, rest = torch.cat(picked), torch.cat(rest)
    return (picked[torch.randperm(len(picked), generator=generator)],
            rest[torch.randperm(len(rest), generator=generator)])
