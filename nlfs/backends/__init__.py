"""Loss backends behind one seam: ``torch`` (autograd reference), ``cpp`` (compiled CPU evaluator),
``triton`` (generated fused GPU kernels). ``auto`` picks triton on CUDA, else cpp, else torch."""

from __future__ import annotations

import warnings

import torch

from ._base import Backend, FusedLossFunction, Kernel
from ._torch import TorchBackend, target_probs

__all__ = ["Backend", "BackendUnavailable", "FusedLossFunction", "Kernel", "TorchBackend",
           "available_backends", "get_backend", "resolve_backend", "target_probs"]

NAMES = ("torch", "cpp", "triton")


class BackendUnavailable(RuntimeError):
    """A backend that cannot run here; the message says why and how to fix it."""


def _make(name: str) -> Backend:
    if name == "torch":
        return TorchBackend()
    if name == "cpp":
        from ._cpp import CppBackend

        return CppBackend()
    if name == "triton":
        from ._triton import TritonBackend

        return TritonBackend()
    raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(NAMES)} or 'auto'")


def get_backend(name: str) -> Backend:
    """The named backend, or :class:`BackendUnavailable` saying why it cannot run here."""
    try:
        backend = _make(name)
    except ImportError as err:
        raise BackendUnavailable(f"backend {name!r} is not available: {err}") from err
    ok, why = backend.available()
    if not ok:
        raise BackendUnavailable(f"backend {name!r} is not available: {why}")
    return backend


def available_backends() -> dict[str, str]:
    """Backend name -> "" if usable here, else the reason it is not."""
    out = {}
    for name in NAMES:
        try:
            get_backend(name)
            out[name] = ""
        except BackendUnavailable as err:
            out[name] = str(err)
    return out


_warned: set[str] = set()


def resolve_backend(name: str, device: torch.device | None = None) -> Backend:
    """``auto``: triton for CUDA tensors, else cpp, else torch (warning once why)."""
    if name != "auto":
        return get_backend(name)
    order = ["triton", "cpp", "torch"] if device is not None and device.type == "cuda" else ["cpp", "torch"]
    reasons = []
    for cand in order:
        try:
            backend = get_backend(cand)
        except BackendUnavailable as err:
            reasons.append(str(err))
            continue
        if reasons and cand not in _warned:
            _warned.add(cand)
            warnings.warn(f"nlfs: falling back to the {cand!r} backend; " + "; ".join(reasons),
                          RuntimeWarning, stacklevel=3)
        return backend
    raise BackendUnavailable("; ".join(reasons))
