"""Fail fast: check that a training configuration can run before any work is done.

A command that trains many candidates (a search, a transfer run) must not discover after an hour
that the backend does not exist on this machine, or record every candidate as failed for it: each
command checks its configuration first and stops with one line saying what is wrong and how to fix
it (:class:`ConfigError`).
"""

from __future__ import annotations

from .._module import Loss
from ..backends import BackendUnavailable
from ..data import AUGMENTS, DatasetError, check_split_sizes, load_dataset
from ..models import check_model, is_factory, make_model
from ._errors import ConfigError
from ._loop import make_loss, resolve_device


def check_config(cfg, loss="CE", constants: dict | None = None) -> None:
    """Raise :class:`ConfigError` if ``cfg`` cannot train ``loss`` on this machine: unknown dataset,
    optimizer or model, missing or malformed data (a user's data is checked and split here), an
    augmentation the data cannot take, a model that does not fit the data, unavailable device or
    loss backend, a loss that cannot be built. Loads the dataset (cached for the process) and builds
    the model once (a ``module:factory`` model is probed with a batch of two)."""
    try:
        r = cfg.resolved()
    except DatasetError as err:
        raise ConfigError(f"dataset: {err}") from None
    except ValueError as err:
        raise ConfigError(str(err)) from None
    try:
        device = resolve_device(r.device)
    except (RuntimeError, ValueError) as err:
        raise ConfigError(f"device: {err}; use --device cpu or auto") from None
    if r.augment not in AUGMENTS:
        raise ConfigError(f"augment must be one of {', '.join(AUGMENTS)}, got {r.augment!r}")
    try:
        ds = load_dataset(r.dataset, r.data_root, r.download, r.resize)
        check_split_sizes(ds, r.val_size, r.train_size, r.split_seed)
    except DatasetError as err:
        raise ConfigError(f"dataset: {err}") from None
    except ValueError as err:
        raise ConfigError(f"dataset {ds.source}: {err}") from None
    if ds.features and r.augment != "none":
        raise ConfigError(f"augment {r.augment!r} needs images; {ds.source} holds feature vectors {ds.shape}: "
                          "use --augment none")
    if r.augment in ("randaugment", "autoaugment") and ds.train_x.is_floating_point() and \
            (float(ds.train_x.min()) < 0 or float(ds.train_x.max()) > 1):
        raise ConfigError(f"augment {r.augment!r} needs uint8 images or floats in [0, 1]; {ds.source} holds "
                          f"floats in [{float(ds.train_x.min()):.3g}, {float(ds.train_x.max()):.3g}]")
    try:
        model = make_model(r.model, ds.shape, ds.num_classes, r.checkpoint, r.dropout)
        if is_factory(r.model):
            check_model(model, ds.shape, ds.num_classes, r.model)
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as err:
        text = str(err)
        named = text.startswith((f"model {r.model}", f"model {r.model!r}", f"unknown model {r.model!r}"))
        raise ConfigError(text if named else f"model {r.model!r}: {text}") from None
    try:
        fn = make_loss(loss, r.backend, constants)[0]
        if isinstance(fn, Loss):
            fn.kernel_for(device)
    except BackendUnavailable as err:
        raise ConfigError(f"loss backend {r.backend!r} is not available on {device}: {err}; or choose "
                          "--backend auto, cpp or torch") from None
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"loss {loss!r}: {err}") from None
