"""``module:name`` references a user passes on the command line (a dataset source, a model factory)."""

from __future__ import annotations

import importlib


def import_reference(spec: str, what: str, error: type[Exception]):
    """The object ``module:name`` names; ``error`` (e.g. DatasetError) with one line saying what is
    missing, prefixed by ``what`` (``"dataset mymod:load"``)."""
    module, _, name = spec.strip().partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as err:
        raise error(f"{what}: cannot import module {module!r} ({err})") from None
    except AttributeError:
        raise error(f"{what}: module {module!r} has no {name!r}") from None
