"""``nlfs.Loss``: any loss expression as a drop-in for ``nn.CrossEntropyLoss``."""

from __future__ import annotations

import weakref

import torch
from torch import nn

from . import losses as _losses
from .backends import FusedLossFunction, resolve_backend
from .backends._base import may_overwrite_logits
from .expr import Expr, lower, parse

_REDUCTIONS = ("mean", "sum", "none")


def resolve_spec(loss, reduction_kind: str | None = None) -> _losses.LossSpec:
    """A catalogue name, an expression string, an Expr or a LossSpec -> LossSpec."""
    if isinstance(loss, _losses.LossSpec):
        spec = loss
    elif isinstance(loss, Expr):
        spec = _losses.LossSpec(str(loss), loss)
    elif isinstance(loss, str):
        if _losses.is_registered(loss):
            spec = _losses.get(loss)
        else:
            spec = _losses.LossSpec(loss, parse(loss))
    else:
        raise TypeError(f"loss must be a name, an expression string, an Expr or a LossSpec, "
                        f"got {type(loss).__name__}")
    if reduction_kind is not None and reduction_kind != spec.reduction:
        spec = _losses.LossSpec(spec.name, spec.expr, reduction_kind, spec.constants, spec.source, spec.scale)
    return spec


class Loss(nn.Module):
    """A loss expression as an ``nn.Module``: ``loss(logits, target)``.

    Args:
        loss: a catalogue name (``"CE"``, ``"NGL"``...), an expression string, an ``Expr`` or a
            ``LossSpec``.
        backend: ``"auto"`` (triton on CUDA, else cpp, else torch), ``"torch"``, ``"cpp"``,
            ``"triton"``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` over samples, as in ``nn.CrossEntropyLoss``.
        constants: values for named constants, overriding the catalogue defaults.
        reduction_kind: ``"class_sum"`` or ``"element_mean"``: how the elementwise expression is
            reduced over classes (the catalogue entry's own by default, else ``class_sum``).
        check_finite: raise if the logits contain NaN or Inf (costs a host sync).
        grad_in_logits: let a backend that can (triton) write the gradient over the logits buffer
            during the forward, saving an (N, C) buffer (Liger-Kernel's cross-entropy does the
            same). The logits then hold the gradient, not the logits, once the loss is computed: only
            for logits nothing else reads afterwards (accuracy from them, say, must come first; a term
            that saved them earlier raises autograd's in-place error in backward). A leaf that
            requires grad is never overwritten.

    ``target`` is (N,) class indices or (N, C) class probabilities (Mixup/CutMix). Targets are
    treated as constants: no gradient flows to them.
    """

    def __init__(self, loss="CE", backend: str = "auto", reduction: str = "mean",
                 constants: dict[str, float] | None = None, reduction_kind: str | None = None,
                 check_finite: bool = False, grad_in_logits: bool = False):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        self.spec = resolve_spec(loss, reduction_kind)
        values = dict(self.spec.constants)
        for k, v in (constants or {}).items():
            if k not in self.spec.expr.constants:
                raise ValueError(f"constant {k!r} does not occur in {self.spec.expr}")
            values[k] = float(v)
        missing = [k for k in self.spec.expr.constants if k not in values]
        if missing:
            raise ValueError(f"no value for constants {missing} of {self.spec.expr}; "
                             f"pass constants={{...}}")
        # The scale rides inside the program, so every backend folds it into the loss and gradient.
        self.program = lower(self.spec.scaled_expr, self.spec.reduction, self.spec.expr.constants)
        self.register_buffer(
            "constants", torch.tensor([values[k] for k in self.program.constants], dtype=torch.float64),
            persistent=False)
        self.backend_name = backend
        self.reduction = reduction
        self.check_finite = check_finite
        self.grad_in_logits = grad_in_logits
        self._kernels: dict[str, object] = {}
        self._by_device: dict[torch.device, tuple] = {}

    @property
    def expr(self) -> Expr:
        return self.spec.expr

    @property
    def constant_values(self) -> dict[str, float]:
        return dict(zip(self.program.constants, self.constants.tolist()))

    def set_constants(self, **values: float) -> None:
        """Change constants in place; nothing is recompiled."""
        for k, v in values.items():
            if k not in self.program.constants:
                raise ValueError(f"constant {k!r} does not occur in {self.spec.expr}")
            self.constants[self.program.constants.index(k)] = float(v)

    def kernel_for(self, device: torch.device):
        hit = self._by_device.get(device)  # resolving the backend each call costs more than the CE kernel
        if hit is not None:
            return hit
        backend = resolve_backend(self.backend_name, device)
        kernel = self._kernels.get(backend.name)
        if kernel is None:
            kernel = backend.compile(self.program)
            self._kernels[backend.name] = kernel
        self._by_device[device] = (backend, kernel)
        return backend, kernel

    def extra_repr(self) -> str:
        scale = "" if self.spec.scale == 1.0 else f", scale={self.spec.scale:.6g}"
        return (f"{self.spec.name!r}: {self.spec.expr}{scale}, reduction={self.reduction!r}, "
                f"over classes={self.spec.reduction!r}, backend={self.backend_name!r}")

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_not_overwritten(logits)
        backend, kernel = self.kernel_for(logits.device)
        check_inputs(logits, target, self.check_finite, check_range=not getattr(kernel, "checks_targets", False))
        if backend.fused:
            inplace = self.grad_in_logits and may_overwrite_logits(logits)
            out = FusedLossFunction.apply(logits, target, self.constants, kernel, self.reduction, inplace)
            if inplace:
                _remember_overwritten(logits)
            return out
        rows = kernel(logits, target, self.constants)
        if self.reduction == "mean":
            return rows.mean()
        if self.reduction == "sum":
            return rows.sum()
        return rows


# Logits an nlfs.Loss(grad_in_logits=True) wrote its gradient over: id -> (weak reference, version after).
_OVERWRITTEN: dict[int, tuple] = {}


def _remember_overwritten(logits: torch.Tensor) -> None:
    key = id(logits)
    _OVERWRITTEN[key] = (weakref.ref(logits, lambda _ref, key=key: _OVERWRITTEN.pop(key, None)), logits._version)


def _check_not_overwritten(logits: torch.Tensor) -> None:
    """Handing a loss the very logits a grad_in_logits loss turned into its gradient is a mistake
    that would otherwise go unnoticed (the values look like logits)."""
    hit = _OVERWRITTEN.get(id(logits))
    if hit is not None and hit[0]() is logits and logits._version == hit[1]:
        raise ValueError("these logits hold the gradient of an earlier nlfs.Loss(grad_in_logits=True), not "
                         "logits: compute every loss from them before that one, or drop grad_in_logits")


def check_inputs(logits: torch.Tensor, target: torch.Tensor, check_finite: bool = False,
                 check_range: bool = True) -> None:
    """Shape, dtype and range checks with messages that say what was expected. ``check_range``:
    check class indices here (a kernel that checks them itself, as the C++ one does, skips it)."""
    if not isinstance(logits, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError("logits and target must be tensors")
    if logits.dim() != 2:
        raise ValueError(f"logits must be 2-D (N, C), got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be floating point, got {logits.dtype}")
    n, c = logits.shape
    if c < 1:
        raise ValueError("logits need at least one class column")
    if target.device != logits.device:
        raise ValueError(f"target is on {target.device} but logits are on {logits.device}")
    if target.dim() == 1:
        if target.is_floating_point() or target.dtype == torch.bool:
            raise TypeError(f"class-index targets must be integers, got {target.dtype}")
        if target.shape[0] != n:
            raise ValueError(f"target has {target.shape[0]} entries for {n} rows of logits")
        # CPU check is cheap; on CUDA it would synchronise, so only when asked.
        if n and check_range and (target.device.type == "cpu" or check_finite):
            lo, hi = int(target.min()), int(target.max())
            if lo < 0 or hi >= c:
                bad = lo if lo < 0 else hi
                raise ValueError(f"target class {bad} is out of range for {c} classes")
    elif target.dim() == 2:
        if tuple(target.shape) != (n, c):
            raise ValueError(f"probability targets must have shape {(n, c)}, got {tuple(target.shape)}")
        if not target.is_floating_point():
            raise TypeError(f"probability targets must be floating point, got {target.dtype}")
    else:
        raise ValueError(f"target must be (N,) class indices or (N, C) probabilities, "
                         f"got shape {tuple(target.shape)}")
    if check_finite and not bool(torch.isfinite(logits).all()):
        raise ValueError("logits contain NaN or Inf")
