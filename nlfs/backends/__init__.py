"""Loss backends behind one seam: ``torch`` (autograd reference), ``cpp`` (compiled CPU evaluator),
``triton`` (generated fused GPU kernels). ``auto`` picks triton on CUDA, else cpp, else torch."""

from __future__ import annotations

import sys
import warnings

import torch

from ._base import Backend, FusedLossFunction, Kernel, loss_dtype, may_overwrite_logits
from ._torch import TorchBackend, TorchKernel, target_probs

__all__ = ["Backend", "BackendUnavailable", "FusedLossFunction", "Kernel", "TorchBackend", "TorchKernel",
           "available_backends", "check_name", "cpp_threads", "get_backend", "loss_dtype", "may_overwrite_logits",
           "resolve_backend", "target_probs"]

NAMES = ("torch", "cpp", "triton")


class BackendUnavailable(RuntimeError):
    """A backend that cannot run here; the message says why and how to fix it."""


def check_name(name: str) -> None:
    """A ValueError for a backend name nlfs does not have (``auto`` is a choice, not a backend)."""
    if name not in NAMES:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(NAMES)} or 'auto'")


def _make(name: str) -> Backend:
    check_name(name)
    if name == "torch":
        return TorchBackend()
    if name == "cpp":
        from ._cpp import CppBackend

        return CppBackend()
    from ._triton import TritonBackend

    return TritonBackend()


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


def cpp_threads(n: int | None = None, *, load: bool = False) -> int | None:
    """The C++ evaluator's thread count, set to ``n`` first when given. None when the extension is
    not loaded (it reads ``NLFS_CPP_THREADS`` when it first runs; ``load=True`` loads it now) or
    cannot run here."""
    if not load and "nlfs._cpp" not in sys.modules:
        return None
    from . import _cpp

    try:
        if n is not None:
            _cpp.set_num_threads(n)
        return _cpp.get_num_threads()
    except RuntimeError:  # not built, or built from another ops table: the backend is unusable anyway
        return None


_warned: set[str] = set()


def resolve_backend(name: str, device: torch.device | None = None, program=None) -> Backend:
    """``auto``: triton for CUDA tensors, else cpp, else torch (warning once why); with ``program``,
    the first of those that can run it (every built-in backend lowers the ops over classes). A named
    backend that cannot run ``program`` is a ValueError saying why."""
    if name != "auto":
        backend = get_backend(name)
        if program is not None:
            backend.check(program)
        return backend
    order = ["triton", "cpp", "torch"] if device is not None and device.type == "cuda" else ["cpp", "torch"]
    reasons = []
    for cand in order:
        try:
            backend = get_backend(cand)
        except BackendUnavailable as err:
            reasons.append(str(err))
            continue
        if program is not None and backend.refuses(program):
            continue  # not a fault of this machine: no warning
        if reasons and cand not in _warned:
            _warned.add(cand)
            warnings.warn(f"nlfs: falling back to the {cand!r} backend; " + "; ".join(reasons),
                          RuntimeWarning, stacklevel=3)
        return backend
    raise BackendUnavailable("; ".join(reasons))
