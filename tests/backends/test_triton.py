"""The Triton backend against the torch autograd reference.

Without a GPU these run under TRITON_INTERPRET=1 on CPU tensors (tests/conftest.py).
Criterion (tests/backends/reference.py): elementwise |triton - exact| <= |torch_in_dtype - exact| +
atol + rtol*|exact|, exact = float64 autograd, with torch's error counted SLACK = 4 times (see
``check``: ill-conditioned random expressions make elementwise rounding a coin toss). Output
buffers are poisoned with NaN before each call (passed to the kernel with ``out=``), so elements a
kernel forgot to write fail.

Sizes: every catalogue loss on every shape; ``scaled(300)`` random expressions per search space on
the small shapes (1x2, 3x7, 257x10) and ``scaled(10)`` of them on the large ones (64x1000, 5x4099),
which the interpreter runs ~20x slower.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap
import warnings
import weakref
from pathlib import Path

import pytest
import torch

import nlfs
from nlfs.backends import FusedLossFunction
from nlfs.spaces import GPSpace, NLFSSpace
from tests.backends.reference import (
    SHAPES,
    assert_no_less_accurate,
    catalogue_constants,
    exact,
    make_inputs,
    poison_,
    reference,
)
from tests.conftest import require_backend, scaled

require_backend("triton", module=True)  # a skip, or a failure under CI's NLFS_REQUIRE_BACKENDS

CUDA = torch.cuda.is_available()

from nlfs.backends import _triton  # noqa: E402
from nlfs.backends._triton import TritonBackend, compile_report  # noqa: E402

DEVICE = "cuda" if CUDA else "cpu"
SMALL = [s for s in SHAPES if s[0] * s[1] <= 5000]
LARGE = [s for s in SHAPES if s[0] * s[1] > 5000]
TOL = {torch.float32: (2e-5, 2e-5), torch.float16: (2e-3, 2e-3), torch.bfloat16: (2e-2, 2e-2)}
SLACK = 4.0
DTYPES = [torch.float32, torch.float16,
          pytest.param(torch.bfloat16, marks=pytest.mark.skipif(not CUDA, reason="bf16 needs a GPU"))]


@pytest.fixture(scope="module", autouse=True)
def _cache_dir(tmp_path_factory):
    old = os.environ.get("NLFS_CACHE_DIR")
    os.environ["NLFS_CACHE_DIR"] = str(tmp_path_factory.mktemp("nlfs_cache"))
    yield
    if old is None:
        os.environ.pop("NLFS_CACHE_DIR", None)
    else:
        os.environ["NLFS_CACHE_DIR"] = old


BACKEND = TritonBackend()


def _program(spec):
    return nlfs.lower(spec.expr, spec.class_reduction)


def check(program, constants, n, c, dtype=torch.float32, prob=False, seed=0, name="", kernel=None,
          scale=3.0):
    kernel = kernel or BACKEND.compile(program)
    logits, target = make_inputs(n, c, dtype=dtype, prob_targets=prob, seed=seed, scale=scale)
    out = (poison_(torch.empty(n, device=DEVICE)), poison_(torch.empty(n, c, dtype=dtype, device=DEVICE)))
    loss, grad = kernel(logits.to(DEVICE), target.to(DEVICE), constants, out=out)
    assert loss.data_ptr() == out[0].data_ptr() and grad.data_ptr() == out[1].data_ptr()
    assert loss.dtype == torch.float32 and grad.dtype == dtype and grad.shape == (n, c)
    ref_loss, ref_grad = exact(program, logits, target, constants)
    if dtype == torch.float32:
        t_loss, t_grad = reference(program, logits, target, constants, compute_dtype="input")
    else:
        # The torch backend cannot do its maths in half (clamp(+-1e10) overflows fp16), so the
        # baseline is what it delivers for half logits: fp32 maths, gradient cast to the dtype.
        t_loss, t_grad = reference(program, logits, target, constants, compute_dtype="fp32")
        t_grad = t_grad.to(dtype)
    atol, rtol = TOL[dtype]
    # Where torch's own error is large the problem is ill-conditioned (cancellation in
    # h - p*sum(h) after a 1e7 gradient from a protected division, say) and rounding order decides:
    # allow SLACK times torch's error there; elsewhere atol/rtol dominate.
    t_loss = ref_loss + SLACK * (t_loss.double() - ref_loss)
    t_grad = ref_grad + SLACK * (t_grad.double() - ref_grad)
    tag = f"{name} [{n}x{c} {dtype} {'prob' if prob else 'index'}]"
    assert_no_less_accurate(tag + " loss", loss, t_loss, ref_loss, atol, rtol)
    # gradients are compared at the scale of the row's largest gradient (cancellation in
    # h - p*sum(h) makes tiny entries' relative error meaningless)
    gscale = ref_grad.abs().amax(dim=1, keepdim=True).clamp_min(1.0)
    assert_no_less_accurate(tag + " grad", grad / gscale.to(grad.device), t_grad / gscale, ref_grad / gscale,
                            atol, rtol)


# --------------------------------------------------------------------------- catalogue

@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", nlfs.losses.names())  # NCE+RCE (sum_classes) too: the whole-row tile
def test_catalogue(name, shape):
    spec = nlfs.losses.get(name)
    prog = _program(spec)
    for prob in (False, True):
        check(prog, catalogue_constants(spec, prog), *shape, prob=prob, name=name)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", ["CE", "Focal", "NGL", "SCE", "LabelSmoothingCE"])
def test_catalogue_half(name, dtype):
    spec = nlfs.losses.get(name)
    prog = _program(spec)
    for shape in [(3, 7), (257, 10), (5, 4099)]:
        check(prog, catalogue_constants(spec, prog), *shape, dtype=dtype, prob=shape[0] == 257, name=name)


# --------------------------------------------------------------------------- random expressions

def _random_programs(space, count, seed):
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        out.append(nlfs.lower(space.random_expr(rng)))
    return out


def _sweep(space, shapes, count, seed):
    """Every (expression, shape) case is checked; up to 1% of them may fail (printed as warnings).

    Random expressions contain discontinuities at fp32 rounding boundaries (sign(log(exp(p))) flips
    where exp(p) rounds to 1, pdiv(p, 0) = 1e7*p followed by h - p*sum(h)); a softmax that differs
    from torch's by one ulp then flips a branch that torch happens to get right. The catalogue tests
    allow no failure.
    """
    failures = []
    checks = 0
    for i, prog in enumerate(_random_programs(space, count, seed)):
        kernel = BACKEND.compile(prog)
        consts = torch.zeros(len(prog.constants), dtype=torch.float64)
        for j, shape in enumerate(shapes):
            checks += 1
            try:
                check(prog, consts, *shape, prob=(i + j) % 3 == 0, seed=i, kernel=kernel,
                      name=_triton.program_text(prog))
            except AssertionError as err:
                failures.append(str(err))
    for f in failures:
        warnings.warn(f, stacklevel=1)
    assert len(failures) <= max(1, checks // 100), f"{len(failures)}/{checks} failures; first: {failures[:3]}"


@pytest.mark.parametrize("space", [NLFSSpace(), GPSpace()], ids=lambda s: s.name)
def test_random_expressions_small_shapes(space):
    _sweep(space, SMALL, scaled(300), seed=1)


@pytest.mark.parametrize("space", [NLFSSpace(), GPSpace()], ids=lambda s: s.name)
def test_random_expressions_large_shapes(space):
    _sweep(space, LARGE, scaled(10), seed=2)


# --------------------------------------------------------------------------- shapes and inputs

def test_large_class_count_loop_template():
    """131,072 classes: the chunked online-softmax template (three passes over the row)."""
    for name in ("CE", "NGL", "Focal"):
        spec = nlfs.losses.get(name)
        prog = _program(spec)
        check(prog, catalogue_constants(spec, prog), 2, 131_072, name=name, prob=name == "NGL")


def test_batch_size_one_and_single_class():
    spec = nlfs.losses.get("Focal")
    prog = _program(spec)
    for shape in [(1, 1), (1, 2), (1, 3), (1, 1000), (1, 5000), (2, 1)]:
        check(prog, catalogue_constants(spec, prog), *shape, name="Focal")


def test_empty_batch():
    kernel = BACKEND.compile(_program(nlfs.losses.get("CE")))
    loss, grad = kernel(torch.empty(0, 5, device=DEVICE), torch.empty(0, dtype=torch.long, device=DEVICE),
                        torch.empty(0, dtype=torch.float64))
    assert loss.shape == (0,) and grad.shape == (0, 5)


def test_extreme_logits_stay_finite():
    spec = nlfs.losses.get("Baikal")
    prog = _program(spec)
    kernel = BACKEND.compile(prog)
    logits = torch.tensor([[1e4, -1e4, 0.0, 3.0], [-80.0, 80.0, 80.0, -80.0]], device=DEVICE)
    loss, grad = kernel(logits, torch.tensor([1, 0], device=DEVICE), torch.empty(0, dtype=torch.float64))
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()


def test_non_contiguous_logits_and_targets():
    spec = nlfs.losses.get("SCE")
    prog = _program(spec)
    kernel = BACKEND.compile(prog)
    consts = catalogue_constants(spec, prog)
    base, target = make_inputs(40, 24, prob_targets=True)
    for logits in (base[::2], base.t().contiguous().t(), base[:, ::2]):
        tgt = target[: logits.shape[0], : logits.shape[1]]
        tgt = tgt / tgt.sum(1, keepdim=True)
        loss, grad = kernel(logits.to(DEVICE), tgt.to(DEVICE), consts)
        ref_loss, ref_grad = exact(prog, logits, tgt, consts)
        torch.testing.assert_close(loss.double().cpu(), ref_loss, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(grad.double().cpu(), ref_grad, atol=1e-5, rtol=1e-5)
    idx = torch.randint(0, 24, (40, 2))[:, 0]  # non-contiguous int targets
    loss, _ = kernel(base.to(DEVICE), idx.to(DEVICE), consts)
    torch.testing.assert_close(loss.double().cpu(), exact(prog, base, idx, consts)[0], atol=1e-5, rtol=1e-5)


def test_int32_targets_and_inplace_gradient():
    spec = nlfs.losses.get("CE")
    prog = _program(spec)
    kernel = BACKEND.compile(prog)
    for c in (10, 5000):
        logits, target = make_inputs(6, c)
        ref_loss, ref_grad = exact(prog, logits, target, torch.empty(0))
        buf = logits.clone().to(DEVICE)
        loss, grad = kernel(buf, target.int().to(DEVICE), torch.empty(0), inplace=True)
        assert grad.data_ptr() == buf.data_ptr()
        torch.testing.assert_close(grad.double().cpu(), ref_grad, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(loss.double().cpu(), ref_loss, atol=1e-5, rtol=1e-6)


def test_constants_are_read_in_kernel():
    """Changing a constant in place changes the result without recompiling."""
    loss_mod = nlfs.Loss("Focal", backend="triton", reduction="sum")
    logits, target = make_inputs(8, 5)
    logits, target = logits.to(DEVICE), target.to(DEVICE)
    a = loss_mod(logits, target)
    kernels = dict(loss_mod._kernels)
    loss_mod.set_constants(gamma=0.0)
    b = loss_mod(logits, target)
    assert loss_mod._kernels == kernels
    ce = nlfs.Loss("CE", backend="torch", reduction="sum")(logits.cpu(), target.cpu())
    torch.testing.assert_close(b.cpu(), ce, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a, b)


def test_fresh_constant_tensors_are_never_a_stale_cache_hit():
    """Each call with a new constants tensor uses its values, even when the allocator hands the new
    tensor the freed address of the last one (same data_ptr, version 0)."""
    spec = nlfs.losses.get("Focal")
    prog = _program(spec)
    kernel = BACKEND.compile(prog)
    logits, target = make_inputs(8, 5)
    for gamma in (0.0, 2.0, 0.5, 3.0, 0.0):
        consts = torch.tensor([gamma], dtype=torch.float64)  # a fresh tensor every time
        got, _ = kernel(logits.to(DEVICE), target.to(DEVICE), consts)
        want, _ = exact(prog, logits, target, consts)
        torch.testing.assert_close(got.double().cpu(), want, atol=1e-5, rtol=1e-5)
        held = weakref.ref(consts)
        del consts
        assert held() is not None  # the cache keeps its key's tensor alive: that address is not reused


# --------------------------------------------------------------------------- autograd glue

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_loss_module_gradient(reduction):
    for name, shape in [("NGL", (7, 13)), ("LabelSmoothingCE", (3, 4099))]:
        logits, target = make_inputs(*shape)
        z1 = logits.clone().to(DEVICE).requires_grad_(True)
        z2 = logits.clone().requires_grad_(True)
        out1 = nlfs.Loss(name, backend="triton", reduction=reduction)(z1, target.to(DEVICE))
        out2 = nlfs.Loss(name, backend="torch", reduction=reduction)(z2, target)
        w = torch.rand(out2.shape) if reduction == "none" else torch.tensor(1.7)
        (out1 * w.to(DEVICE)).sum().backward()
        (out2 * w).sum().backward()
        torch.testing.assert_close(out1.detach().cpu(), out2.detach(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(z1.grad.cpu(), z2.grad, atol=1e-6, rtol=1e-5)


def test_fused_loss_function_direct():
    spec = nlfs.losses.get("Poly1")
    prog = _program(spec)
    kernel = BACKEND.compile(prog)
    logits, target = make_inputs(5, 9, prob_targets=True)
    z = logits.clone().to(DEVICE).requires_grad_(True)
    out = FusedLossFunction.apply(z, target.to(DEVICE), catalogue_constants(spec, prog), kernel, "mean")
    out.backward()
    ref_loss, ref_grad = exact(prog, logits, target, catalogue_constants(spec, prog))
    torch.testing.assert_close(out.detach().double().cpu(), ref_loss.mean(), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(z.grad.double().cpu(), ref_grad / 5, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("forced", [True, False], ids=["specialised", "general"])
def test_target_specialised_and_general_forms(forced):
    """Class-index targets run either the y = 0 / y = 1 bodies or the general body with a one-hot y;
    both forms, in both templates, against the exact reference. (Which one a launch picks is
    specialise_tile's cost model for the tile and always the specialised one for the loop.)"""
    rng = random.Random(11)
    programs = [("Focal", _program(nlfs.losses.get("Focal"))), ("NGL", _program(nlfs.losses.get("NGL"))),
                ("Baikal", _program(nlfs.losses.get("Baikal")))]
    programs += [(f"gp#{i}", p) for i, p in enumerate(_random_programs(GPSpace(), scaled(6), 3))]
    for name, prog in programs:
        kernel = BACKEND.compile(prog)
        kernel.specialise = forced
        consts = torch.full((len(prog.constants),), 0.5, dtype=torch.float64)
        for shape in [(37, 10), (3, 4099)]:
            check(prog, consts, *shape, name=f"{name} specialise={forced}", kernel=kernel,
                  seed=rng.randrange(1000))
        used = {dict(k[3]).get("SPECIALISED") for k in kernel.stats.jit_s}
        assert used == ({forced} if "y" in prog.leaves else {False}), (name, used)


def test_specialisation_choice():
    """The tile specialises where fixing y removes per-element work (Focal's y = 0 form is the
    constant 0) and not where it saves less than reloading the target costs (CE: -y*log(p) with a
    one-hot y is a multiply; TaylorGLO: y only meets named constants), nor below 256 lanes per row;
    the loop always does."""
    ce = BACKEND.compile(_program(nlfs.losses.get("CE")))
    focal = BACKEND.compile(_program(nlfs.losses.get("Focal")))
    taylor = BACKEND.compile(_program(nlfs.losses.get("TaylorGLO")))
    tile, loop = "nlfs_tile_kernel", "nlfs_loop_kernel"
    assert focal.specialised(tile, 4, 1024) and focal.specialised(loop, 4, 2048)
    assert not focal.specialised(tile, 4, 16) and not focal.specialised(tile, 4, 128)
    assert not ce.specialised(tile, 4, 1024) and ce.specialised(loop, 4, 2048)
    assert not taylor.specialised(tile, 4, 1024) and taylor.specialised(loop, 4, 2048)
    no_y = BACKEND.compile(nlfs.lower(nlfs.parse("(1 - p) ** 2")))
    assert not no_y.specialised(loop, 4, 2048)
    focal.specialise = False
    assert not focal.specialised(loop, 4, 2048)
    focal.specialise = True
    assert focal.specialised(tile, 4, 16)
    src = _triton.generate_source(_program(nlfs.losses.get("CE")))
    off = src[src.index("def nlfs_body_off"):src.index("def nlfs_body_on")]
    forward = off.split("# ---- forward ----")[1].split("# ---- reverse ----")[0]
    assert forward.split() == ["v0", "=", "zero", "+", "0.0", "f", "=", "v0"]  # -y*log(p) at y = 0


@pytest.mark.skipif(not CUDA, reason="host synchronisation is a CUDA matter")
def test_no_host_sync_on_the_hot_path():
    """Forward and backward through nlfs.Loss never wait for the device (sync debug mode raises)."""
    logits, target = make_inputs(64, 100)
    z = logits.cuda().requires_grad_(True)
    t = target.cuda()
    for name in ("Focal", "NGL"):
        loss = nlfs.Loss(name, backend="triton")
        loss(z, t).backward()  # compile and first launches outside the check
        (2.0 * loss(z, t)).backward()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for w in (1.0, 2.0):
                z.grad = None
                (w * loss(z, t)).backward()
        finally:
            torch.cuda.set_sync_debug_mode(0)


@pytest.mark.skipif(not CUDA, reason="CUDA graphs need CUDA")
def test_kernel_is_cuda_graph_capturable():
    spec = nlfs.losses.get("SCE")
    prog = _program(spec)
    kernel = BACKEND.compile(prog)
    logits, target = make_inputs(300, 10)
    z, t, consts = logits.cuda(), target.cuda(), catalogue_constants(spec, prog).float().cuda()
    expect = kernel(z, t, consts)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        loss_rows, grad = kernel(z, t, consts)
    z.copy_(z * 0.5)
    graph.replay()
    fresh = kernel(z, t, consts)
    torch.testing.assert_close(loss_rows, fresh[0])
    torch.testing.assert_close(grad, fresh[1])
    assert not torch.equal(grad, expect[1])  # the replay saw the new logits


@pytest.mark.skipif(not CUDA, reason="counts Triton's compiles on a GPU")
def test_one_compile_for_every_batch_size():
    """A search meets many batch sizes (the last partial batch, evaluation batches): the row count
    is neither a constexpr nor specialised on, so one launch configuration compiles once."""
    kernel = BACKEND.compile(_program(nlfs.losses.get("Focal")))
    consts = catalogue_constants(nlfs.losses.get("Focal"), kernel.program)
    for n in (128, 96, 37, 1, 1000, 4099):
        logits, target = make_inputs(n, 10)
        kernel(logits.cuda(), target.cuda(), consts)
    assert len(kernel.stats.jit_s) == 1
    caches = getattr(kernel.module.nlfs_tile_kernel, "device_caches", None)
    if caches:
        assert sum(len(c[0]) for c in caches.values()) == 1


@pytest.mark.parametrize("shape", [(6, 9), (3, 4099)], ids=["tile", "loop"])
def test_gradient_written_over_the_logits(shape):
    """grad_in_logits=True: the same parameter gradients as a separate buffer, and the logits buffer
    itself holds dL/dlogits afterwards."""
    n, c = shape
    x = torch.randn(n, 5)
    results = {}
    for in_logits in (False, True):
        lin = torch.nn.Linear(5, c).to(DEVICE)
        with torch.no_grad():
            lin.weight.copy_(torch.linspace(-1, 1, 5 * c).reshape(c, 5))
            lin.bias.copy_(torch.linspace(0.5, -0.5, c))
        logits = lin(x.to(DEVICE))
        target = torch.arange(n) % c
        loss = nlfs.Loss("Focal", backend="triton", grad_in_logits=in_logits)(logits, target.to(DEVICE))
        (2.0 * loss).backward()
        results[in_logits] = (float(loss.detach()), lin.weight.grad.cpu().clone(), lin.bias.grad.cpu().clone(),
                              logits.detach().cpu().clone())
    (l0, w0, b0, z0), (l1, w1, b1, z1) = results[False], results[True]
    assert l0 == l1
    torch.testing.assert_close(w1, w0, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(b1, b0, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(z1.sum(0), b1, atol=1e-6, rtol=1e-5)  # the buffer now holds dL/dlogits
    assert not torch.allclose(z0, z1)
    # a term that read the logits before the loss overwrote them fails loudly in backward
    logits = torch.nn.Linear(5, c).to(DEVICE)(x.to(DEVICE))
    obj = logits.pow(2).mean() + nlfs.Loss("Focal", backend="triton", grad_in_logits=True)(
        logits, (torch.arange(n) % c).to(DEVICE))
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        obj.backward()
    # the same logits handed to a loss again after one overwrote them: a clear error
    logits = torch.nn.Linear(5, c).to(DEVICE)(x.to(DEVICE))
    first = nlfs.Loss("Focal", backend="triton", grad_in_logits=True)(logits, (torch.arange(n) % c).to(DEVICE))
    for backend in ("triton", "torch"):
        with pytest.raises(ValueError, match="hold the gradient of an earlier"):
            nlfs.Loss("CE", backend=backend)(logits, (torch.arange(n) % c).to(DEVICE))
    first.backward()
    # never over a leaf that requires grad (a parameter), nor a view of one, nor when no gradient is
    # wanted (evaluation, a reentrant checkpoint's first pass), nor under saved-tensor hooks
    t = (torch.arange(n) % c).to(DEVICE)
    loss_fn = nlfs.Loss("Focal", backend="triton", grad_in_logits=True)
    leaf = torch.randn(n, c, device=DEVICE, requires_grad=True)
    table = torch.randn(n * c, device=DEVICE, requires_grad=True)
    for z in (leaf, table.view(n, c)):
        before = z.detach().clone()
        loss_fn(z, t).backward()
        assert torch.equal(z.detach(), before)
    assert leaf.grad is not None and table.grad is not None
    logits = torch.nn.Linear(5, c).to(DEVICE)(x.to(DEVICE))
    before = logits.detach().clone()
    with torch.no_grad():
        loss_fn(logits, t)
    with torch.autograd.graph.save_on_cpu():
        loss_fn(logits, t)
    assert torch.equal(logits.detach(), before)


def test_mean_scale_is_applied_in_the_kernel():
    """For "mean" the kernel writes the gradient already divided by N: backward has nothing left."""
    spec = nlfs.losses.get("Focal")
    prog = _program(spec)
    kernel = BACKEND.compile(prog)
    logits, target = make_inputs(6, 11)
    consts = catalogue_constants(spec, prog)
    out, grad, scale = kernel.reduced(logits.to(DEVICE), target.to(DEVICE), consts, "mean")
    _, raw = kernel(logits.to(DEVICE), target.to(DEVICE), consts)
    assert scale == 1.0
    torch.testing.assert_close(grad, raw / 6, atol=0, rtol=2e-7)
    out_sum, grad_sum, scale_sum = kernel.reduced(logits.to(DEVICE), target.to(DEVICE), consts, "sum")
    assert scale_sum == 1.0 and torch.equal(grad_sum, raw)
    torch.testing.assert_close(out_sum / 6, out)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("weight", [1.0, 2.5, 0.0])
def test_backward_scales_in_place_without_host_sync(reduction, weight, monkeypatch):
    """Upstream gradients other than 1 (loss weights, AMP loss scale) go through the device-side
    scaling kernel; the result matches autograd of the torch backend."""
    calls = []
    real = _triton.TritonKernel.scale_grad_
    monkeypatch.setattr(_triton.TritonKernel, "scale_grad_",
                        lambda self, g, s, r=None: calls.append(1) or real(self, g, s, r))
    logits, target = make_inputs(9, 13)
    z1 = logits.clone().to(DEVICE).requires_grad_(True)
    z2 = logits.clone().requires_grad_(True)
    (weight * nlfs.Loss("NGL", backend="triton", reduction=reduction)(z1, target.to(DEVICE))).backward()
    (weight * nlfs.Loss("NGL", backend="torch", reduction=reduction)(z2, target)).backward()
    torch.testing.assert_close(z1.grad.cpu(), z2.grad, atol=1e-6, rtol=1e-5)
    # on CPU tensors a weight of 1 takes the free host check; on CUDA every backward is device-side
    assert len(calls) == (1 if CUDA or weight != 1.0 else 0)


@pytest.mark.parametrize("hooks", [False, True], ids=["plain", "save_on_cpu"])
def test_retained_graph_backpropagated_again(hooks):
    """The saved gradient is scaled in place and the factor it holds is recorded, so a retained graph
    backpropagated again (any weights, in any order) gives each time what autograd would; under
    saved-tensor hooks (which may hand backward a copy) nothing is scaled in place."""
    import contextlib

    logits, target = make_inputs(6, 9)
    ref_z = logits.clone().requires_grad_(True)
    nlfs.Loss("Focal", backend="torch")(ref_z, target).backward()
    z = logits.clone().to(DEVICE).requires_grad_(True)
    ctx = torch.autograd.graph.save_on_cpu() if hooks else contextlib.nullcontext()
    with ctx:
        loss = nlfs.Loss("Focal", backend="triton")(z, target.to(DEVICE))
    for w in (3.0, 1.0, 0.5, 1.0, -2.0):
        (g,) = torch.autograd.grad(loss * w, z, retain_graph=True)
        torch.testing.assert_close(g.cpu(), w * ref_z.grad, atol=1e-6, rtol=1e-5)
    (g,) = torch.autograd.grad(loss * 0.0, z, retain_graph=True)
    assert torch.equal(g.cpu(), torch.zeros_like(g.cpu()))
    # what a backward handed out is never written again by a later one
    kept = [torch.autograd.grad(loss * w, z, retain_graph=True)[0] for w in (1.0, 2.0)]
    torch.testing.assert_close(kept[0].cpu(), ref_z.grad, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(kept[1].cpu(), 2 * ref_z.grad, atol=1e-6, rtol=1e-5)
    # an upstream gradient tensor changed after its backward changes nothing already recorded
    with ctx:
        loss2 = nlfs.Loss("Focal", backend="triton")(z, target.to(DEVICE))
    w = torch.tensor(3.0, device=DEVICE)
    (g3,) = torch.autograd.grad(loss2, z, grad_outputs=w, retain_graph=True)
    w.fill_(5.0)
    (g5,) = torch.autograd.grad(loss2, z, grad_outputs=w, retain_graph=True)
    torch.testing.assert_close(g3.cpu(), 3 * ref_z.grad, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(g5.cpu(), 5 * ref_z.grad, atol=1e-6, rtol=1e-5)
    if not hooks:  # a first backward that scaled the saved gradient by 0 leaves nothing to rescale
        with ctx:
            loss3 = nlfs.Loss("Focal", backend="triton")(z, target.to(DEVICE))
        torch.autograd.grad(loss3 * 0.0, z, retain_graph=True)
        with pytest.raises(RuntimeError, match="scaled by 0"):
            torch.autograd.grad(loss3 * 2.0, z, retain_graph=True)


def test_second_order_gradients_are_an_error():
    logits, target = make_inputs(4, 5)
    z = logits.clone().to(DEVICE).requires_grad_(True)
    loss = nlfs.Loss("NGL", backend="triton")(z, target.to(DEVICE))
    with pytest.raises(RuntimeError, match="first derivatives only.*backend='torch'"):
        torch.autograd.grad(loss, z, create_graph=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64], ids=str)
def test_scale_grad_kernel(dtype):
    from nlfs.kernels.grad_scale import BLOCK, scale_grad_

    g = (torch.randn(3, BLOCK + 5) * 10).to(DEVICE, dtype)  # more than one program, a ragged tail
    for s in (1.0, 0.37, -3.0):
        got = g.clone()
        record = torch.full((1,), float("nan"), device=DEVICE)
        scale_grad_(got, torch.tensor(s, device=DEVICE), record)
        assert record.item() == torch.tensor(s).item()  # the factor's value, kept for a later backward
        s32 = torch.tensor(s).item()  # the upstream gradient is an fp32 scalar
        expect = g * s32 if dtype == torch.float64 else (g.float() * s32).to(dtype)  # one rounding
        assert torch.equal(got, expect), s
    with pytest.raises(ValueError, match="contiguous"):
        scale_grad_(g.t(), torch.tensor(2.0, device=DEVICE))
    with pytest.raises(ValueError, match="one element"):
        scale_grad_(g, torch.ones(2, device=DEVICE))


def test_backend_registry():
    from nlfs.backends import available_backends, get_backend

    assert get_backend("triton").name == "triton"
    assert available_backends()["triton"] == ""
    assert BACKEND.fused


# --------------------------------------------------------------------------- cache

def test_disk_cache_memory_and_fresh_process(tmp_path, monkeypatch):
    monkeypatch.setenv("NLFS_CACHE_DIR", str(tmp_path))
    prog = nlfs.lower(nlfs.parse("-y * log(p) + 0.123456 * sin(p * 3.0)"))
    k1 = BACKEND.compile(prog)
    assert k1.stats.source in ("generated", "memory")
    if k1.stats.source == "memory":  # seen earlier in this process: no file in this new dir
        _triton._MODULES.clear()
        k1 = BACKEND.compile(prog)
    assert k1.stats.source == "generated" and k1.stats.codegen_s > 0
    k2 = BACKEND.compile(prog)
    assert k2.stats.source == "memory" and k2.stats.codegen_s == 0 and k2.module is k1.module
    _triton._MODULES.clear()
    k3 = BACKEND.compile(prog)
    assert k3.stats.source == "disk" and k3.stats.codegen_s == 0
    files = list((tmp_path / "triton").glob("nlfs_k_*.py"))
    assert len(files) == 1 and "def nlfs_body" in files[0].read_text()
    logits, target = make_inputs(3, 7)
    k3(logits.to(DEVICE), target.to(DEVICE), torch.empty(0))
    assert len(k3.stats.jit_s) == 1  # the first launch of this specialisation was timed
    report = compile_report([k3])
    assert "first_launch_ms" in report and "disk" in report and k3.source_path in report
    # a fresh process finds the file and does no code generation
    code = textwrap.dedent(f"""
        import os
        os.environ.setdefault("TRITON_INTERPRET", "{'0' if CUDA else '1'}")
        import nlfs
        from nlfs.backends import _triton
        calls = []
        real = _triton.generate_source
        _triton.generate_source = lambda p: calls.append(1) or real(p)
        k = _triton.TritonBackend().compile(nlfs.lower(nlfs.parse("-y * log(p) + 0.123456 * sin(p * 3.0)")))
        assert k.stats.source == "disk" and not calls, (k.stats, calls)
        print("OK", k.stats.import_s)
    """)
    env = dict(os.environ, NLFS_CACHE_DIR=str(tmp_path))
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert res.returncode == 0 and "OK" in res.stdout, res.stderr[-2000:]


def test_cache_key_covers_the_code_generator(monkeypatch):
    """The disk cache is keyed on the program and on every file the generated source depends on:
    a changed code generator (here: the specialisation it draws on) never reuses a stale file."""
    from nlfs.expr import _specialize

    prog = _program(nlfs.losses.get("Focal"))
    key = _triton.cache_key(prog)
    real = Path(_specialize.__file__).read_bytes()
    monkeypatch.setattr(_triton, "_SOURCE_HASH", None)
    monkeypatch.setattr(Path, "read_bytes", lambda self: real + b"# edited" if self.name == "_specialize.py"
                        else Path.open(self, "rb").read())
    assert _triton.cache_key(prog) != key
    monkeypatch.undo()
    assert _triton.cache_key(prog) == key


def test_generated_source_is_readable():
    prog = _program(nlfs.losses.get("Focal"))
    src = _triton.generate_source(prog)
    assert "def nlfs_body" in src and "def nlfs_tile_kernel" in src and "def nlfs_loop_kernel" in src
    assert "tl.load(const_ptr + 0)" in src  # constants come from device memory
    assert _triton.program_text(prog) in src
    assert _triton.cache_key(prog) == _triton.cache_key(_program(nlfs.losses.get("Focal")))
