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
def nlfs_scale_grad_kernel(g_ptr, s_ptr, rec_ptr, n_elements, BLOCK: tl.constexpr, RECORD: tl.constexpr):
    s = tl.load(s_ptr).to(tl.float32)
    if RECORD:  # the factor, kept by value for a later backward of a retained graph
        if tl.program_id(0) == 0:
            tl.store(rec_ptr, s)
    if s != 1.0:
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n_elements
        g = tl.load(g_ptr + offs, mask=mask).to(tl.float32)
        tl.store(g_ptr + offs, (g * s).to(g_ptr.dtype.element_ty), mask=mask)


def scale_grad_(grad, scale, record=None) -> None:
    """``grad *= scale`` in place (contiguous ``grad``; ``scale`` a one-element tensor on its device),
    rounding once from fp32; nothing is read or written when ``scale == 1``. ``record``: a one-element
    fp32 tensor on the same device that receives the value of ``scale`` (no extra launch)."""
    if not grad.is_contiguous():
        raise ValueError("scale_grad_ needs a contiguous gradient")
    for name, t in (("scale", scale), ("record", record)):
        if t is not None and (t.numel() != 1 or t.device != grad.device):
            raise ValueError(f"{name} must be one element on {grad.device}, got {tuple(t.shape)} on {t.device}")
    if record is not None and record.dtype != torch.float32:
        raise ValueError(f"record must be float32, got {record.dtype}")
    n = grad.numel()
    if grad.dtype == torch.float64 or n == 0:  # the kernel's maths is fp32; fp64 gradients keep theirs
        # through .data: the saved tensor's version must not move (a retained graph's next backward
        # checks it), just as the Triton kernel's write does not move it
        grad.data.mul_(scale.to(grad.dtype))
        if record is not None:
            record.copy_(scale.reshape(1))
        return
    s = scale.reshape(1).contiguous()
    rec = s if record is None else record
    launch = lambda: nlfs_scale_grad_kernel[(triton.cdiv(n, BLOCK),)](grad, s, rec, n, BLOCK=BLOCK,  # noqa: E731
                                                                      RECORD=record is not None)
    if grad.device.type == "cuda" and grad.device.index != torch.cuda.current_device():
        with torch.cuda.device(grad.device):  # Triton launches on the current device
            launch()
    else:
        launch()
