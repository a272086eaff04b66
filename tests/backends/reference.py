"""Shared helpers for checking any backend against the autograd reference.

Criterion (apple/ml-cross-entropy): a backend passes where, elementwise,
``|backend - exact| <= |torch_in_dtype - exact| + atol + rtol*|exact|``, with ``exact`` computed in
float64 by the torch autograd backend and ``torch_in_dtype`` by the same backend doing its maths in
the input dtype.
"""

from __future__ import annotations

import torch

from nlfs.backends import TorchKernel
from nlfs.expr import Program

SHAPES = [(1, 2), (3, 7), (257, 10), (64, 1000), (5, 4099)]


def reference(program: Program, logits: torch.Tensor, target: torch.Tensor, constants: torch.Tensor,
              compute_dtype="input"):
    """(per-sample loss, d loss_n / d logits) by autograd; ``compute_dtype`` as in TorchKernel."""
    z = logits.detach().clone().requires_grad_(True)
    kernel = TorchKernel(program, compute_dtype)
    rows = kernel(z, target, constants)
    (grad,) = torch.autograd.grad(rows.sum(), z)
    return rows.detach(), grad


def exact(program, logits, target, constants):
    return reference(program, logits.double(), target if target.dim() == 1 else target.double(),
                     constants, compute_dtype=torch.float64)


def assert_no_less_accurate(name: str, got: torch.Tensor, torch_dtype: torch.Tensor, ref: torch.Tensor,
                            atol: float, rtol: float) -> None:
    got, torch_dtype, ref = got.double().cpu(), torch_dtype.double().cpu(), ref.double().cpu()
    assert got.shape == ref.shape, f"{name}: shape {tuple(got.shape)} != {tuple(ref.shape)}"
    assert torch.isfinite(got).all(), f"{name}: non-finite values"
    err = (got - ref).abs()
    allowed = (torch_dtype - ref).abs() + atol + rtol * ref.abs()
    bad = err > allowed
    if bad.any():
        i = int(bad.flatten().nonzero()[0])
        raise AssertionError(
            f"{name}: {int(bad.sum())} elements less accurate than torch in dtype; first at flat index {i}: "
            f"got {got.flatten()[i].item()!r}, exact {ref.flatten()[i].item()!r}, "
            f"torch {torch_dtype.flatten()[i].item()!r}")


def catalogue_constants(spec, program: Program) -> torch.Tensor:
    """A catalogue loss's constant values, in the order ``program`` reads them (float64)."""
    return torch.tensor([spec.constants[c] for c in program.constants], dtype=torch.float64)


def random_constants(program: Program, seed: int) -> torch.Tensor:
    """Seeded constant values for ``program``, uniform in [-2, 2) (float64)."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(len(program.constants), generator=g, dtype=torch.float64) * 4 - 2


def make_inputs(n: int, c: int, dtype=torch.float32, scale: float = 3.0, prob_targets: bool = False,
                seed: int = 0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, c, generator=g, dtype=torch.float64) * scale).to(dtype).to(device)
    if prob_targets:
        target = torch.softmax(torch.randn(n, c, generator=g, dtype=torch.float64) * 2, 1).float().to(device)
    else:
        target = torch.randint(0, c, (n,), generator=g).to(device)
    return logits, target


def poison_(t: torch.Tensor) -> torch.Tensor:
    """Fill an output buffer with NaN so elements a kernel forgot to write fail the check."""
    return t.fill_(float("nan"))


def leaf_adjoints(program: Program, logits: torch.Tensor, target: torch.Tensor, constants: torch.Tensor,
                  class_reduction: bool = True):
    """(f, adj): the program's N x C values in float64, with the backends' value and adjoint clamps,
    and {"p", "logp", "z": |d L / d leaf|}, the adjoint magnitudes at the leaves (the scale of the
    rounding noise any implementation of the fused gradient has). L is the loss (the program's
    reduction over classes), or sum(f) with ``class_reduction=False``."""
    from nlfs.backends import target_probs
    from nlfs.expr import CLASS_OPS, MAXV, OPS, TorchMath

    tm = TorchMath()
    z = logits.detach().double()
    n, c = z.shape
    y = target_probs(target, c, torch.float64)
    leaves = {"p": torch.softmax(z, 1), "logp": torch.log_softmax(z, 1), "z": z}
    tracked, vals = [], []
    for ins in program.instrs:
        if ins.op in leaves:
            v = leaves[ins.op].clone().requires_grad_(True)
            tracked.append((ins.op, v))
        elif ins.op == "y":
            v = y
        elif ins.op == "C":
            v = torch.full_like(z, float(c))
        elif ins.op == "num":
            v = torch.full_like(z, ins.value)
        elif ins.op == "const":
            v = constants[ins.value].double().expand_as(z)
        else:
            spec = OPS.get(ins.op) or CLASS_OPS[ins.op]
            v = spec.forward(tm, *[vals[a] for a in ins.args])
            if not spec.bounded:
                v = v.clamp(-MAXV, MAXV)
        if v.requires_grad:
            v.register_hook(lambda g: g.clamp(-MAXV, MAXV))
        vals.append(v)
    f = vals[-1].expand_as(z)
    adj = {k: torch.zeros_like(z) for k in leaves}
    if tracked and f.requires_grad:
        mean = class_reduction and program.class_reduction == "element_mean"
        root = f.sum() / (c if mean else 1)
        grads = torch.autograd.grad(root, [v for _, v in tracked], allow_unused=True)
        for (op, _), g in zip(tracked, grads, strict=True):
            if g is not None:
                adj[op] += g.abs()
    return f.detach(), adj
