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


def loss_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a kernel returns the loss in: float64 for float64 logits, else float32 (half
    logits: fp32 maths; ``nlfs.Loss`` rounds it once to what PyTorch would return)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


class Kernel(ABC):
    """A compiled program. ``target`` is an (N, C) float tensor of target probabilities or an
    (N,) int64 tensor of class indices; ``constants`` is a 1-D float64 CPU tensor in program order."""

    program: Program

    @abstractmethod
    def __call__(self, logits: torch.Tensor, target: torch.Tensor, constants: torch.Tensor):
        """Fused: return (loss_per_sample [N] in ``loss_dtype(logits.dtype)``, grad [N, C] in logits' dtype).
        Non-fused: return loss_per_sample with an autograd graph."""

    def reduced(self, logits: torch.Tensor, target: torch.Tensor, constants: torch.Tensor, reduction: str,
                inplace: bool = False, ignore_index: int = -100):
        """Fused kernels: (loss reduced over samples by ``reduction`` (mean/sum/none), gradient,
        the factor the gradient still needs for that reduction). A kernel that can fold the 1/N
        of "mean" into its own gradient write returns 1.0 there. ``inplace``: the kernel may write the
        gradient over ``logits`` (a hint; kernels that cannot ignore it). ``ignore_index``: class-index
        targets with this value, which only a kernel that skips them itself sees (``skips_ignored``;
        ``nlfs.Loss`` removes them before calling any other)."""
        loss_rows, grad = self(logits, target, constants)
        n = logits.shape[0]
        if reduction == "none":
            return loss_rows, grad, 1.0
        total = loss_rows.sum()
        if reduction == "mean":  # no samples: nan, as torch's mean
            return total / n if n else total * float("nan"), grad, 1.0 / max(n, 1)
        return total, grad, 1.0


class Backend(ABC):
    name: str
    fused: bool
    lowers_class_ops = False  # ops over a row's classes (nlfs.expr.CLASS_OPS): a backend says it lowers them

    @abstractmethod
    def compile(self, program: Program) -> Kernel: ...

    def refuses(self, program: Program) -> str:
        """Why this backend cannot run ``program`` ("" when it can)."""
        if program.class_ops and not self.lowers_class_ops:
            return (f"the {self.name} backend computes elementwise losses only; "
                    f"{', '.join(sorted(program.class_ops))} sums over classes: use backend='torch' or 'auto'")
        return ""

    def check(self, program: Program) -> None:
        """A ValueError naming why, when this backend cannot run ``program`` (see :meth:`refuses`)."""
        why = self.refuses(program)
        if why:
            raise ValueError(f"nlfs: {why}")

    def available(self) -> tuple[bool, str]:
        """(usable here, why not)."""
        return True, ""


SECOND_ORDER_ERROR = (
    "nlfs: a fused loss kernel gives first derivatives only; second-order gradients through it "
    "(create_graph=True: MAML, Hessian-vector products, gradient penalties) need "
    "nlfs.Loss(..., backend='torch')")


def _saved_tensor_hooks_active() -> bool:
    """Whether saved-tensor hooks (save_on_cpu, say) are in effect: the saved gradient that backward
    unpacks may then be a copy, so scaling it in place would not stick."""
    top = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)
    if top is None:
        return True  # cannot tell: assume they are
    try:
        return top(False) is not None
    except TypeError:  # another signature
        return True


def may_overwrite_logits(logits: torch.Tensor) -> bool:
    """Whether a loss asked for ``grad_in_logits`` may write its gradient over ``logits``: only when a
    gradient is wanted (not under no_grad, as in evaluation or a reentrant checkpoint's first pass),
    no saved-tensor hooks may hand backward a copy, and the logits are not, nor view, the data of a
    leaf that requires grad (a parameter)."""
    if not (torch.is_grad_enabled() and logits.requires_grad) or _saved_tensor_hooks_active():
        return False
    base = logits._base if logits._base is not None else logits
    return not (base.is_leaf and base.requires_grad)


def _scaled(grad: torch.Tensor, factor: torch.Tensor, extra: float = 1.0) -> torch.Tensor:
    """A new ``grad * factor * extra``, multiplied in at least fp32 (an upstream 65536, AMP's loss
    scale, is inf in fp16) and rounded once to the gradient's dtype."""
    ct = torch.float64 if grad.dtype == torch.float64 else torch.float32
    f = factor.to(ct) * extra if extra != 1.0 else factor.to(ct)
    return (grad.to(ct) * f).to(grad.dtype)


class FusedLossFunction(torch.autograd.Function):
    """Autograd glue for fused kernels: the kernel computes the gradient during the forward.

    ``backward`` only scales that gradient by the upstream one. The first backward hands out the
    saved gradient itself: as it is for a CPU upstream gradient of 1 (a free check there), else scaled
    in place where the kernel can do that on the device (``kernel.scale_grad_``, which skips the pass
    when the upstream gradient is 1 and records its value). Once handed out, the buffer belongs to the
    caller and is never written again: a retained graph backpropagated again gets a new tensor,
    rescaled from the recorded factor."""

    @staticmethod
    def forward(ctx, logits, target, constants, kernel, reduction, inplace=False, ignore_index=-100):
        out, grad, mean_factor_left = kernel.reduced(logits, target, constants, reduction, inplace=inplace,
                                                     ignore_index=ignore_index)
        ctx.reduction = reduction
        ctx.mean_factor_left = mean_factor_left  # what the saved gradient still lacks of the mean's 1/N
        ctx.scale_in_place = None if _saved_tensor_hooks_active() else getattr(kernel, "scale_grad_", None)
        ctx.applied = None  # once the saved gradient was handed out: the factor it holds (float or tensor)
        ctx.save_for_backward(grad)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        if torch.is_grad_enabled():  # create_graph=True: d(gradient)/d(logits) is not available
            raise RuntimeError(SECOND_ORDER_ERROR)
        (grad,) = ctx.saved_tensors
        none = (None, None, None, None, None, None)
        if ctx.reduction == "none":
            return (_scaled(grad, grad_out.unsqueeze(1)), *none)
        # ctx.mean_factor_left: a float, or a device tensor (a mean over the rows not ignored, counted there)
        unit = isinstance(ctx.mean_factor_left, float) and ctx.mean_factor_left == 1.0
        s = grad_out if unit else grad_out * ctx.mean_factor_left
        if ctx.applied is not None:  # a retained graph, again: a new tensor from the recorded factor
            previous = float(ctx.applied)  # a host sync, but only on this rare path
            if previous == 0.0:
                raise RuntimeError("nlfs: the fused loss's saved gradient was scaled by 0 in an earlier "
                                   "backward of this retained graph and cannot be recovered")
            return (_scaled(grad, s, 1.0 / previous), *none)
        if unit and grad_out.device.type == "cpu" and grad_out.item() == 1.0:
            # loss.backward() on a CPU loss: the kernel's gradient as it is, no extra pass
            # (Liger-Kernel does the same)
            ctx.applied = 1.0
            return (grad, *none)
        if (ctx.scale_in_place is not None and grad_out.device == grad.device and grad.is_contiguous()
                and grad.dtype != torch.float64):  # float64 (gradcheck's dtype): exact, reentrant, out of place
            # On the device the "== 1" test is the kernel's own: no host sync, and no pass over the
            # gradient for a plain loss.backward()
            ctx.applied = torch.empty(1, dtype=torch.float32, device=grad.device)
            ctx.scale_in_place(grad, s, ctx.applied)
            return (grad, *none)
        # one pass over the gradient (the remaining scale rides on the upstream scalar)
        return (_scaled(grad, s), *none)
