"""Fail fast: check that a training configuration can run before any work is done.

A command that trains many candidates (a search, a transfer run) must not discover after an hour
that the backend does not exist on this machine, or record every candidate as failed for it: each
command checks its configuration first and stops with one line saying what is wrong and how to fix
it (:class:`ConfigError`).
"""

from __future__ import annotations

from .._module import Loss
from ..backends import BackendUnavailable
from ..data import AUGMENTS, DatasetError, load_dataset
from ..models import build_model
from ._errors import ConfigError
from ._loop import make_loss, resolve_device


def check_config(cfg, loss="CE", constants: dict | None = None) -> None:
    """Raise :class:`ConfigError` if ``cfg`` cannot train ``loss`` on this machine: unknown dataset,
    optimizer or model, missing data, unavailable device or loss backend, a loss that cannot be
    built. Loads the dataset (cached for the process) and builds the model once."""
    try:
        r = cfg.resolved()
    except ValueError as err:
        raise ConfigError(str(err)) from None
    try:
        device = resolve_device(r.device)
    except (RuntimeError, ValueError) as err:
        raise ConfigError(f"device: {err}; use --device cpu or auto") from None
    if r.augment not in AUGMENTS:
        raise ConfigError(f"augment must be one of {', '.join(AUGMENTS)}, got {r.augment!r}")
    try:
        ds = load_dataset(r.dataset, r.data_root, r.download)
    except DatasetError as err:
        raise ConfigError(f"dataset: {err}") from None
    try:
        build_model(r.model, ds.in_channels, ds.num_classes, ds.image_size, r.checkpoint, r.dropout)
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as err:
        raise ConfigError(f"model {r.model!r}: {err}") from None
    try:
        fn = make_loss(loss, r.backend, constants)[0]
        if isinstance(fn, Loss):
            fn.kernel_for(device)
    except BackendUnavailable as err:
        raise ConfigError(f"loss backend {r.backend!r} is not available on {device}: {err}; or choose "
                          "--backend auto, cpp or torch") from None
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"loss {loss!r}: {err}") from None
