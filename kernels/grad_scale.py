"""In-place scaling of a saved gradient by the upstream gradient, decided on the device.

``FusedLossFunction.backward`` gets the upstream gradient as a device scalar, which is 1.0 for a plain
``loss.backward()``. Testing that on the host would synchronise; multiplying unconditionally would be a
second full pass over the gradient (as many bytes again as the fused kernel itself). Here every program
loads the scalar and returns at once when it is 1, so the common case costs one tiny launch and the
general case (loss weights, AMP loss scaling, accumulation) one in-place pass, with no host sync either way.
"""

import torch
import triton
import triton.language as tl

BLOCK = 4096


@triton.jit
def nlfs_scale_grad_kernel(g_ptr, s_ptr, n_elements, BLOCK: tl.constexpr):
    s = tl.load(s_ptr).to(tl.float32)
    if s != 1.0:
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n_elements
        g = tl.load(g_ptr + offs, mask=mask).to(tl.float32)
        tl.store(g_ptr + offs, (g * s).to(g_ptr.dtype.element_ty), mask=mask)


def scale_grad_(grad, scale) -> None:
    """``grad *= scale`` in place (contiguous ``grad``; ``scale`` a one-element tensor on its device),
    rounding once from fp32; nothing is read or written when ``scale == 1``."""
    if not grad.is_contiguous():
        raise ValueError("scale_grad_ needs a contiguous gradient")
    if scale.numel() != 1 or scale.device != grad.device:
        raise ValueError(f"scale must be one element on {grad.device}, got {tuple(scale.shape)} on {scale.device}")
    if grad.dtype == torch.float64:  # the kernel's maths is fp32; fp64 gradients keep theirs
        grad.mul_(scale.to(torch.float64))
        return
    n = grad.numel()
    if n == 0:
        return
    if grad.device.type == "cuda" and grad.device.index != torch.cuda.current_device():
        with torch.cuda.device(grad.device):  # Triton launches on the current device
            nlfs_scale_grad_kernel[(triton.cdiv(n, BLOCK),)](grad, scale.reshape(1).contiguous(), n, BLOCK=BLOCK)
    else:
        nlfs_scale_grad_kernel[(triton.cdiv(n, BLOCK),)](grad, scale.reshape(1).contiguous(), n, BLOCK=BLOCK)
