"""The backend seam: compile a lowered program once, then call it for loss and gradient.

A *fused* backend's kernel returns the per-sample loss and ``d loss_n / d logits_n`` in one pass;
:class:`FusedLossFunction` plugs it into autograd (the gradient is made in the forward, ``backward``
only scales it by the upstream gradient). A non-fused backend (torch) returns a per-sample loss
that carries its own autograd graph.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from ..expr import Program


class Kernel(ABC):
    """A compiled program. ``target`` is an (N, C) float tensor of target probabilities or an
    (N,) int64 tensor of class indices; ``constants`` is a 1-D float64 CPU tensor in program order."""

    program: Program

    @abstractmethod
    def __call__(self, logits: torch.Tensor, target: torch.Tensor, constants: torch.Tensor):
        """Fused: return (loss_per_sample fp32 [N], grad [N, C] in logits' dtype).
        Non-fused: return loss_per_sample with an autograd graph."""


class Backend(ABC):
    name: str
    fused: bool

    @abstractmethod
    def compile(self, program: Program) -> Kernel: ...

    def available(self) -> tuple[bool, str]:
        """(usable here, why not)."""
        return True, ""


class FusedLossFunction(torch.autograd.Function):
    """Autograd glue for fused kernels: the kernel computes the gradient during the forward."""

    @staticmethod
    def forward(ctx, logits, target, constants, kernel, reduction):
        loss_rows, grad = kernel(logits, target, constants)
        n = logits.shape[0]
        if reduction == "mean":
            out = loss_rows.sum() / max(n, 1)
        elif reduction == "sum":
            out = loss_rows.sum()
        else:
            out = loss_rows
        ctx.reduction = reduction
        ctx.scale = 1.0 / max(n, 1) if reduction == "mean" else 1.0
        ctx.save_for_backward(grad)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        # One pass over the gradient: the 1/N of "mean" rides on the upstream scalar.
        (grad,) = ctx.saved_tensors
        if ctx.reduction == "none":
            g = grad * grad_out.to(grad.dtype).unsqueeze(1)
        else:
            g = grad * (grad_out * ctx.scale).to(grad.dtype)
        return g, None, None, None, None
