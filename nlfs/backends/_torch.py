"""The reference backend: evaluates a program with PyTorch ops; autograd makes the gradient.

Half-precision logits are upcast to fp32 for the maths unless ``compute_dtype`` says otherwise
(tests use ``compute_dtype="input"`` to get "PyTorch itself in that dtype").
"""

from __future__ import annotations

import torch

from ..expr import CLASS_OPS, MAXV, OPS, Program, TorchMath
from ._base import Backend, Kernel

_MATH = TorchMath()


def _limit(dtype: torch.dtype) -> float:
    """MAXV, or the dtype's largest finite value when that is smaller (fp16: 65504)."""
    return min(MAXV, torch.finfo(dtype).max)


def _clamp_grad(g: torch.Tensor | None) -> torch.Tensor | None:
    if g is None:
        return None
    lim = _limit(g.dtype)
    return g.clamp(-lim, lim)


class TorchKernel(Kernel):
    def __init__(self, program: Program, compute_dtype: str | torch.dtype = "fp32"):
        self.program = program
        self.compute_dtype = compute_dtype

    def _dtype(self, logits: torch.Tensor) -> torch.dtype:
        if self.compute_dtype == "input":
            return logits.dtype
        if isinstance(self.compute_dtype, torch.dtype):
            return self.compute_dtype
        return logits.dtype if logits.dtype == torch.float64 else torch.float32

    def elementwise(self, logits: torch.Tensor, target: torch.Tensor, constants: torch.Tensor):
        """The N x C matrix of f(y, p) (before the class reduction)."""
        dtype = self._dtype(logits)
        z = logits.to(dtype)
        n, c = z.shape
        y = target_probs(target, c, dtype)
        grad_on = torch.is_grad_enabled() and z.requires_grad
        consts = constants.to(device=z.device, dtype=dtype)
        limit = _limit(dtype)
        vals: list = []
        for ins in self.program.instrs:
            op = ins.op
            if op == "y":
                v = y
            elif op == "p":
                v = torch.softmax(z, dim=1)
            elif op == "logp":
                v = torch.log_softmax(z, dim=1)
            elif op == "z":
                v = z.view_as(z)
            elif op == "C":
                v = torch.full_like(z, float(c))
            elif op == "num":
                v = torch.full_like(z, ins.value)
            elif op == "const":
                v = consts[ins.value].expand_as(z)
            else:
                spec = OPS.get(op) or CLASS_OPS[op]
                v = spec.forward(_MATH, *[vals[a] for a in ins.args])
                if not spec.bounded:
                    v = v.clamp(-limit, limit)
            if grad_on and v.requires_grad:
                v.register_hook(_clamp_grad)
            vals.append(v)
        out = vals[-1]
        if out.shape != z.shape:  # an expression of numbers and constants only
            out = out.expand_as(z)
        return out

    def __call__(self, logits, target, constants):
        f = self.elementwise(logits, target, constants)
        if self.program.class_reduction == "element_mean":
            return f.mean(dim=1)
        return f.sum(dim=1)


def target_probs(target: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """Class indices (N,) become one-hot rows; probability rows pass through."""
    if target.dim() == 1:
        return torch.nn.functional.one_hot(target.long(), num_classes).to(dtype)
    return target.to(dtype)


class TorchBackend(Backend):
    name = "torch"
    fused = False
    lowers_class_ops = True

    def __init__(self, compute_dtype: str | torch.dtype = "fp32"):
        self.compute_dtype = compute_dtype

    def compile(self, program: Program) -> TorchKernel:
        return TorchKernel(program, self.compute_dtype)
