"""``nlfs.Loss``: any loss expression as a drop-in for ``nn.CrossEntropyLoss``."""

from __future__ import annotations

import math
import warnings
import weakref

import torch
import torch.nn.functional as F
from torch import nn

from .backends import FusedLossFunction, TorchKernel, check_name, loss_dtype, may_overwrite_logits, resolve_backend
from .expr import NUM_LIMIT, Expr, lower
from .losses import resolve_spec

_SAMPLE_REDUCTIONS = ("mean", "sum", "none")


class Loss(nn.Module):
    """A loss expression as an ``nn.Module``: ``loss(logits, target)``, a drop-in for
    ``nn.CrossEntropyLoss`` (same arguments, same shapes, same meanings).

    Args:
        loss: a catalogue name (``"CE"``, ``"NGL"``...), an expression string, an ``Expr`` or a
            ``LossSpec``.
        backend: ``"auto"`` (triton on CUDA, else cpp, else torch), ``"torch"``, ``"cpp"``,
            ``"triton"``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` over samples, as in ``nn.CrossEntropyLoss``.
        constants: values for named constants, overriding the catalogue defaults (finite numbers
            within float32's range, as numbers in expressions; else ``ValueError``).
        class_reduction: ``"class_sum"`` or ``"element_mean"``: how the elementwise expression is
            combined over classes (the catalogue entry's own by default, else ``class_sum``);
            ``reduction_kind``, its old name, is accepted with a DeprecationWarning.
        weight: a (C,) tensor of class weights, as PyTorch applies them (see below).
        ignore_index: class-index targets with this value are skipped: no loss, no gradient, not
            counted by ``mean``.
        label_smoothing: eps in [0, 1]: the target becomes ``(1 - eps) * y + eps / C`` before the
            expression sees it.
        check_finite: raise if the logits contain NaN or Inf (costs a host sync).
        grad_in_logits: let a backend that can (triton) write the gradient over the logits buffer
            during the forward, saving an (N, C) buffer (Liger-Kernel's cross-entropy does the
            same). The logits then hold the gradient, not the logits, once the loss is computed: only
            for logits nothing else reads afterwards (accuracy from them, say, must come first; a term
            that saved them earlier raises autograd's in-place error in backward). A leaf that
            requires grad is never overwritten.

    ``logits`` is (N, C) or (N, C, d1, ..., dk); ``target`` is class indices (N,) / (N, d1, ..., dk)
    or class probabilities of the logits' shape (Mixup/CutMix). Targets are treated as constants: no
    gradient flows to them. The loss comes back in the logits' dtype (float32 for half logits under
    autocast, as PyTorch's cross-entropy).

    ``weight``: with class-index targets and no label smoothing, a row's loss is multiplied by
    ``weight[target]`` and ``mean`` divides by the summed weights of the counted rows; with
    probability targets or label smoothing, each class's elementwise term is multiplied by
    ``weight[c]`` (``mean`` divides by N for probability targets, by the summed ``weight[target]``
    for class indices). Both are PyTorch's definitions for cross-entropy; the elementwise form is
    evaluated by the torch backend whatever ``backend`` says (the fused kernels take no per-class
    weights).
    """

    def __init__(self, loss="CE", backend: str = "auto", reduction: str = "mean",
                 constants: dict[str, float] | None = None, class_reduction: str | None = None,
                 check_finite: bool = False, grad_in_logits: bool = False, *,
                 weight: torch.Tensor | None = None, ignore_index: int = -100, label_smoothing: float = 0.0,
                 reduction_kind: str | None = None):
        super().__init__()
        if reduction not in _SAMPLE_REDUCTIONS:
            raise ValueError(f"reduction must be one of {_SAMPLE_REDUCTIONS}, got {reduction!r}")
        if backend != "auto":
            check_name(backend)
        if not (isinstance(label_smoothing, (int, float)) and 0.0 <= label_smoothing <= 1.0):
            raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
        if reduction_kind is not None:
            warnings.warn("Loss(reduction_kind=...) is deprecated: pass class_reduction", DeprecationWarning,
                          stacklevel=2)
            class_reduction = reduction_kind
        self.spec = resolve_spec(loss, class_reduction)
        values = self.spec.values(constants)
        # The scale rides inside the program, so every backend folds it into the loss and gradient.
        self.program = lower(self.spec.scaled_expr, self.spec.class_reduction, self.spec.expr.constants)
        if not {"p", "logp", "z"} & self.program.leaves:
            raise ValueError(f"{self.spec.expr} does not read the prediction (p, z or log(p)): its gradient "
                             "is 0 for every input")
        if backend != "auto" and self.program.class_ops:  # a backend that cannot run it: say so now
            resolve_backend(backend, None, self.program)
        self.register_buffer(
            "constants", torch.tensor([_constant(k, values[k]) for k in self.program.constants],
                                      dtype=torch.float64), persistent=False)
        self.register_buffer("weight", _class_weights(weight))
        self.ignore_index = int(ignore_index)
        self.label_smoothing = float(label_smoothing)
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
            self.constants[self.program.constants.index(k)] = _constant(k, v)

    def kernel_for(self, device: torch.device):
        hit = self._by_device.get(device)  # resolving the backend each call costs more than the CE kernel
        if hit is not None:
            return hit
        backend = resolve_backend(self.backend_name, device, self.program)
        kernel = self._kernels.get(backend.name)
        if kernel is None:
            kernel = backend.compile(self.program)
            self._kernels[backend.name] = kernel
        self._by_device[device] = (backend, kernel)
        return backend, kernel

    def to_latex(self, digits: int | None = None) -> str:
        """LaTeX of the simplified loss with its current constants (``nlfs.to_latex``)."""
        from ._export import to_latex

        return to_latex(self, digits=digits)

    def to_sympy(self):
        """SymPy expression of the simplified loss with its current constants (``nlfs.to_sympy``)."""
        from ._export import to_sympy

        return to_sympy(self)

    def to_torch_source(self, name: str | None = None) -> str:
        """Standalone PyTorch source (no nlfs import) computing this loss (``nlfs.to_torch_source``)."""
        from ._export import to_torch_source

        return to_torch_source(self, name)

    def extra_repr(self) -> str:
        scale = "" if self.spec.scale == 1.0 else f", scale={self.spec.scale:.6g}"
        extra = "" if self.weight is None else ", weight=(C,)"
        extra += "" if self.ignore_index == -100 else f", ignore_index={self.ignore_index}"
        extra += "" if self.label_smoothing == 0.0 else f", label_smoothing={self.label_smoothing:g}"
        return (f"{self.spec.name!r}: {self.spec.expr}{scale}, reduction={self.reduction!r}, "
                f"over classes={self.spec.class_reduction!r}, backend={self.backend_name!r}{extra}")

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_not_overwritten(logits)
        # (N, C): as given (the common case, kept to a few attribute reads: at (128, 10) the C++
        # kernel itself takes ~20 us)
        plain_2d = isinstance(logits, torch.Tensor) and logits.dim() == 2
        z, t, rows_shape = (logits, target, None) if plain_2d else as_rows(logits, target)
        backend, kernel = self.kernel_for(z.device)
        check_inputs(z, t, self.check_finite, check_range=not getattr(kernel, "checks_targets", False),
                     ignore_index=self.ignore_index)
        plain = self.label_smoothing == 0.0 and self._buffers["weight"] is None  # (no Module.__getattr__)
        if not plain and self.weight is not None and self.weight.shape[0] != z.shape[1]:
            raise ValueError(f"weight has {self.weight.shape[0]} entries for {z.shape[1]} classes")
        if plain and (t.dim() == 2 or getattr(kernel, "skips_ignored", False)):
            out = self._reduce(backend, kernel, z, t, self.reduction)  # the fast path: one kernel call
        elif plain:
            keep = t != self.ignore_index
            if bool(keep.all()):  # nothing ignored (free on the CPU; a host sync on CUDA)
                out = self._reduce(backend, kernel, z, t, self.reduction)
            elif self.reduction == "none":  # ignored rows are not evaluated at all
                out = _scatter_rows(self._reduce(backend, kernel, z[keep], t[keep], "none"), keep)
            else:
                out = self._reduce(backend, kernel, z[keep], t[keep], self.reduction)
        else:
            out = self._weighted(backend, kernel, z, t)
        if rows_shape is not None and self.reduction == "none":
            out = out.view(rows_shape)
        want = logits.dtype
        if want == torch.float16 or want == torch.bfloat16:
            want = _out_dtype(logits)
        return out if out.dtype == want else out.to(want)

    def _reduce(self, backend, kernel, z, t, reduction):
        """The kernel's loss over rows ``z`` (class indices or probabilities ``t``), reduced."""
        if backend.fused:
            inplace = self.grad_in_logits and may_overwrite_logits(z)
            out = FusedLossFunction.apply(z, t, self.constants, kernel, reduction, inplace, self.ignore_index)
            if inplace:
                _remember_overwritten(z)
            return out
        rows = kernel(z, t, self.constants)
        if reduction == "mean":
            return rows.mean()
        return rows.sum() if reduction == "sum" else rows

    def _weighted(self, backend, kernel, z, t):
        """Class weights and/or label smoothing (PyTorch's definitions; see the class docstring)."""
        n, c = z.shape
        eps, w = self.label_smoothing, self.weight
        if t.dim() == 1:
            keep = t != self.ignore_index
            zk, tk = z[keep], t[keep]
            denom = w[tk].sum() if w is not None else tk.new_tensor(tk.shape[0]).to(w_dtype(z))
            if eps == 0.0:  # a row weight: weight[target]
                rows = self._reduce(backend, kernel, zk, tk, "none") * w[tk].to(w_dtype(z))
            else:
                y = F.one_hot(tk.long(), c).to(w_dtype(z)) * (1.0 - eps) + eps / c
                rows = self._rows(backend, kernel, zk, y, w)
            rows_all = _scatter_rows(rows, keep) if self.reduction == "none" else rows
        else:
            y = t.to(w_dtype(z))
            if eps:
                y = y * (1.0 - eps) + eps / c
            rows_all = rows = self._rows(backend, kernel, z, y, w)
            denom = torch.tensor(float(n), dtype=rows.dtype, device=rows.device)
        if self.reduction == "none":
            return rows_all
        total = rows.sum()
        return total / denom.to(total.dtype) if self.reduction == "mean" else total

    def _rows(self, backend, kernel, z, y, w):
        """Per-row loss for probability targets ``y``; with class weights, each class's term times
        ``w[c]``, evaluated by the torch reference kernel (autograd makes the gradient)."""
        if w is None:
            return self._reduce(backend, kernel, z, y, "none")
        ref = self._kernels.get("torch-reference")
        if ref is None:
            ref = self._kernels["torch-reference"] = TorchKernel(self.program)
        f = ref.elementwise(z, y, self.constants) * w.to(device=z.device, dtype=w_dtype(z))
        return f.mean(dim=1) if self.program.class_reduction == "element_mean" else f.sum(dim=1)


def w_dtype(z: torch.Tensor) -> torch.dtype:
    """The dtype of targets and weights built here: the kernels' loss dtype."""
    return loss_dtype(z.dtype)


def _constant(name: str, value) -> float:
    """A constant's value: finite and within float32's range (as numbers in expressions are), so that
    float32 and float64 backends hold the same value."""
    v = float(value)
    if not math.isfinite(v) or abs(v) > NUM_LIMIT:
        raise ValueError(f"constant {name!r} = {value!r} is not a finite number within float32's range "
                         f"(|value| <= {NUM_LIMIT:.7g})")
    return v


def _class_weights(weight) -> torch.Tensor | None:
    if weight is None:
        return None
    w = torch.as_tensor(weight)
    if w.dim() != 1 or not w.is_floating_point():
        raise ValueError(f"weight must be a 1-D float tensor of class weights, got {tuple(w.shape)} {w.dtype}")
    if not bool(torch.isfinite(w).all()):
        raise ValueError("weight contains NaN or Inf")
    return w.detach().clone()


def _out_dtype(logits: torch.Tensor) -> torch.dtype:
    """PyTorch's cross-entropy returns the logits' dtype; under autocast it computes (and returns) fp32."""
    dtype = logits.dtype
    if (dtype == torch.float16 or dtype == torch.bfloat16) and torch.is_autocast_enabled(logits.device.type):
        return torch.float32
    return dtype


def _scatter_rows(rows: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Rows of the kept samples back in place, 0 for the ignored ones (as PyTorch's reduction="none")."""
    out = rows.new_zeros(keep.shape[0])
    return out.masked_scatter(keep, rows)


def as_rows(logits: torch.Tensor, target: torch.Tensor):
    """(N, C, d1, ..., dk) logits and their targets as (M, C) rows (class dimension last) and (M,) or
    (M, C) targets, with the shape of ``reduction="none"``'s output."""
    if not isinstance(logits, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError("logits and target must be tensors")
    if logits.dim() <= 2:
        return logits, target, logits.shape[:1]
    n, c, spatial = logits.shape[0], logits.shape[1], tuple(logits.shape[2:])
    z = logits.movedim(1, -1).reshape(-1, c)
    if tuple(target.shape) == (n, *spatial):
        t = target.reshape(-1)
    elif tuple(target.shape) == tuple(logits.shape):
        t = target.movedim(1, -1).reshape(-1, c)
    else:
        raise ValueError(f"for logits of shape {tuple(logits.shape)} the target must be {(n, *spatial)} "
                         f"class indices or {tuple(logits.shape)} probabilities, got {tuple(target.shape)}")
    return z, t, (n, *spatial)


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
                 check_range: bool = True, ignore_index: int | None = None) -> None:
    """Shape, dtype and range checks with messages that say what was expected. ``check_range``:
    check class indices here (a kernel that checks them itself, as the C++ one does, skips it); a
    target equal to ``ignore_index`` is in range. On CUDA the range is checked only with
    ``check_finite`` (a host sync); otherwise the Triton kernel turns a bad target into a NaN row."""
    if not isinstance(logits, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError("logits and target must be tensors")
    if logits.dim() != 2:
        raise ValueError(f"logits must be 2-D (N, C) or (N, C, d1, ..., dk), got shape {tuple(logits.shape)}")
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
            bad_rows = (target < 0) | (target >= c)
            if ignore_index is not None:
                bad_rows &= target != ignore_index
            if bool(bad_rows.any()):
                bad = int(target[bad_rows][0])
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
