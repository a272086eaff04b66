"""The ``cpp`` backend against the torch autograd reference: catalogue and random expressions over
SHAPES, float64 to 1e-10 relative, float32 no less accurate than PyTorch in float32; targets,
output poisoning, thread-count determinism, malformed programs, nlfs.Loss glue and training."""

import random

import numpy as np
import pytest
import torch

import nlfs
import nlfs.backends._torch as _torch_backend
from nlfs.expr import Instr, Program, TorchMath, lower
from nlfs.spaces import GPSpace, NLFSSpace
from tests.backends.reference import (
    SHAPES,
    assert_no_less_accurate,
    catalogue_constants,
    leaf_adjoints,
    make_inputs,
    poison_,
    random_constants,
    reference,
)
from tests.backends.reference import exact as _exact
from tests.conftest import require_backend, scaled

require_backend("cpp", module=True)  # a skip, or a failure under CI's NLFS_REQUIRE_BACKENDS
import nlfs.backends._cpp as cpp  # noqa: E402

BACKEND = cpp.CppBackend()
CATALOGUE = nlfs.losses.names()  # NCE+RCE (sum_classes) too: whole rows at a time


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # many small torch ops: no oversubscription


def _assert_f64(name, got, ref, rtol=1e-10, atol=1e-12, slack=None):
    got, ref = got.double(), ref.double()
    assert got.shape == ref.shape
    assert torch.isfinite(got).all(), f"{name}: non-finite"
    # Elements whose exact value sits near zero (cancellation in h - p*sum(h)) get an absolute
    # tolerance relative to the row's gradient scale.
    scale = ref.abs().amax(dim=-1, keepdim=True).clamp_min(1.0) if ref.dim() == 2 else 1.0
    err = (got - ref).abs()
    allowed = atol * scale + rtol * ref.abs()
    if slack is not None:
        allowed = allowed + slack
    bad = err > allowed
    if bad.any():
        i = int(bad.flatten().nonzero()[0])
        raise AssertionError(f"{name}: {int(bad.sum())} elements off; first at {i}: got "
                             f"{got.flatten()[i].item()!r} exact {ref.flatten()[i].item()!r}")


class _TableI1e(torch.autograd.Function):
    """torch.special.i1e whose backward is the ops table's partial rule. The table's rule is 0.5 for
    |x| < 1e-6 (the true derivative is 0.5 - 0.75|x|); autograd of torch.special.i1e uses the true
    one, so without this the reference and every table-generated backend differ by up to 1.5e-6
    relative near 0."""

    @staticmethod
    def forward(ctx, x):
        o = torch.special.i1e(x)
        ctx.save_for_backward(x, o)
        return o

    @staticmethod
    def backward(ctx, g):
        from nlfs.expr import OPS

        x, o = ctx.saved_tensors
        return g * OPS["bessel_i1e"].partials(_torch_backend._MATH, x, o)[0]


class _TableMath(TorchMath):
    def __getattr__(self, name):
        if name == "i1e":
            return _TableI1e.apply
        return super().__getattr__(name)


def exact(program, logits, target, consts):
    """The float64 autograd reference, with the ops table's semantics where torch's differ:
    float64 default dtype (TorchMath.where builds scalar/scalar branches, the sign-keeping eps floor,
    in the default dtype: float32(1e-7) != 1e-7) and the table's bessel_i1e partial."""
    before_dtype, before_math = torch.get_default_dtype(), _torch_backend._MATH
    torch.set_default_dtype(torch.float64)
    _torch_backend._MATH = _TableMath()
    try:
        return _exact(program, logits, target, consts)
    finally:
        torch.set_default_dtype(before_dtype)
        _torch_backend._MATH = before_math


def _rounding_scale(program, logits, target, consts):
    """Per-element scale of the float64 rounding noise any implementation of the fused gradient has:
    (loss rows: sum_c |f|; grad: |p|(|g_p| + sum p|g_p| + sum|g_logp|) + |g_logp| + |g_z| from the
    leaf adjoints). A gradient that is exactly 0 in theory (d/dz of sum_c p) comes out as
    eps * |g_p|, whatever the order of the sums."""
    f, g = leaf_adjoints(program, logits, target, consts)
    p = torch.softmax(logits.double(), 1)
    grad_scale = (p * (g["p"] + (p * g["p"]).sum(1, keepdim=True) + g["logp"].sum(1, keepdim=True))
                  + g["logp"] + g["z"])
    return f.abs().sum(1), grad_scale


def _conditioning_slack(program, logits, target, consts, ref_loss, ref_grad, perturb):
    """How far the float64 reference itself moves when the logits move by ~2 ulp: random expressions
    can be arbitrarily ill-conditioned (pdiv(y, y - p) near y == p), and there no two float64
    implementations agree to 1e-10. Four times the largest such swing is allowed on top."""
    loss_scale, grad_scale = _rounding_scale(program, logits, target, consts)
    c = logits.shape[1]
    slack_l = 2e-16 * c * loss_scale
    slack_g = 1e-14 * grad_scale
    for f in (1 + 4e-16, 1 - 4e-16) if perturb else ():
        l2, g2 = exact(program, logits * f, target, consts)
        slack_l = torch.maximum(slack_l, 4 * (l2 - ref_loss).abs())
        slack_g = torch.maximum(slack_g, 4 * (g2 - ref_grad).abs())
    return slack_l, slack_g


def check_program(name, program, consts, n, c, prob_targets, seed=0, dtypes=(torch.float64, torch.float32),
                  conditioning=False, grad_rtol=1e-10):
    kernel = BACKEND.compile(program)
    for dtype in dtypes:
        logits, target = make_inputs(n, c, dtype, prob_targets=prob_targets, seed=seed)
        loss, grad = kernel(logits, target, consts)
        assert loss.dtype == dtype and loss.shape == (n,)  # float64 logits: a float64 loss
        assert grad.dtype == dtype and grad.shape == (n, c)
        ref_loss, ref_grad = exact(program, logits, target, consts)
        tag = f"{name} {dtype} {(n, c)} prob={prob_targets}"
        if dtype == torch.float64:
            slack_loss, slack_grad = _conditioning_slack(program, logits, target, consts, ref_loss, ref_grad,
                                                         perturb=conditioning)
            # loss rows in float64, as tight as the gradient
            _assert_f64(tag + " loss", loss, ref_loss, rtol=grad_rtol, slack=slack_loss)
            _assert_f64(tag + " grad", grad, ref_grad, slack=slack_grad, rtol=grad_rtol)
        else:
            t_loss, t_grad = reference(program, logits, target, consts, compute_dtype="input")
            assert_no_less_accurate(tag + " loss", loss, t_loss, ref_loss, atol=1e-6, rtol=1e-6)
            assert_no_less_accurate(tag + " grad", grad, t_grad, ref_grad, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("shape", SHAPES, ids=[f"{n}x{c}" for n, c in SHAPES])
@pytest.mark.parametrize("name", CATALOGUE)
def test_catalogue(name, shape):
    spec = nlfs.losses.get(name)
    program = lower(spec.expr, spec.class_reduction)
    consts = catalogue_constants(spec, program)
    check_program(name, program, consts, *shape, prob_targets=False)
    check_program(name, program, consts, *shape, prob_targets=True, seed=1)


@pytest.mark.parametrize("space", ["nlfs", "gp"])
def test_random_expressions(space):
    """Known open case at NLFS_TEST_SCALE=3 (nlfs #748): exp(pdiv(p, min(y, 0))) - aq(p, y), float64,
    (20, 1000): gradient differs from the reference by ~6e-7 relative (adjoints at the 1e10 clamp)."""
    sp = NLFSSpace() if space == "nlfs" else GPSpace()
    rng = random.Random(1234 if space == "nlfs" else 4321)
    for i in range(scaled(300)):
        expr = sp.random_expr(rng)
        reduction = "element_mean" if i % 3 == 2 else "class_sum"
        program = lower(expr, reduction)
        n, c = SHAPES[i % len(SHAPES)]
        if n * c > 20_000:  # the big shapes every fifth expression, smaller batch to keep it fast
            n = max(1, 20_000 // c)
        check_program(f"#{i} {expr}", program, random_constants(program, i), n, c, prob_targets=bool(i % 2),
                      seed=i, conditioning=True)


def test_extreme_logits_stay_finite():
    for name in CATALOGUE:
        spec = nlfs.losses.get(name)
        program = lower(spec.expr, spec.class_reduction)
        kernel = BACKEND.compile(program)
        for dtype in (torch.float32, torch.float64):
            for scale in (1e-3, 50.0, 1e4, 1e30):
                logits, target = make_inputs(64, 100, dtype, scale=scale, seed=3)
                loss, grad = kernel(logits, target, catalogue_constants(spec, program))
                assert torch.isfinite(loss).all() and torch.isfinite(grad).all(), (name, dtype, scale)


def test_protected_ops_at_the_edges():
    """Every op at inputs that hit eps floors, MAXV clamps and ties, through the whole kernel."""
    from nlfs.expr import OPS

    rng = random.Random(0)
    for name, op in sorted(OPS.items()):
        for k in range(3):
            leaves = ["z", "p", "logp", "y", "num"]
            instrs = []
            for j in range(op.arity):
                leaf = leaves[(k + j) % len(leaves)]
                instrs.append(Instr(leaf, (), rng.choice([0.0, 1e-7, -3.0, 30.0]) if leaf == "num" else None))
            # scale the argument so the clamps and floors are reached
            instrs.append(Instr("num", (), rng.choice([1e-8, 1.0, 40.0, 1e6])))
            instrs.append(Instr("mul", (0, len(instrs) - 1)))
            args = (len(instrs) - 1,) + ((1,) if op.arity == 2 else ())
            instrs.append(Instr(name, args))
            program = Program(tuple(instrs), (), "class_sum")
            check_program(f"{name} edge {k}", program, torch.zeros(0, dtype=torch.float64), 17, 9,
                          prob_targets=bool(k % 2), seed=k)


def test_target_kinds_agree():
    spec = nlfs.losses.get("LabelSmoothingCE")
    program = lower(spec.expr, spec.class_reduction)
    kernel = BACKEND.compile(program)
    logits, target = make_inputs(33, 12, torch.float64, seed=5)
    onehot = torch.nn.functional.one_hot(target, 12)
    results = [kernel(logits, t, catalogue_constants(spec, program))
               for t in (target, target.int(), onehot.float(), onehot.double())]
    for loss, grad in results[1:]:
        # the loss rows are float64 now: the specialised (index) and whole-program sums may round
        # the last bit differently
        torch.testing.assert_close(loss, results[0][0], rtol=1e-14, atol=0)
        assert torch.equal(grad, results[0][1])


def test_outputs_fully_written_poisoned_buffers():
    for name in CATALOGUE:
        spec = nlfs.losses.get(name)
        program = lower(spec.expr, spec.class_reduction)
        kernel = BACKEND.compile(program)
        for dtype in (torch.float32, torch.float64):
            for n, c in SHAPES:
                logits, target = make_inputs(n, c, dtype, seed=7)
                loss = poison_(torch.empty(n, dtype=torch.float64))
                grad = poison_(torch.empty(n, c, dtype=dtype))
                kernel.run_into(logits, target, catalogue_constants(spec, program), loss, grad)
                assert not torch.isnan(loss).any() and not torch.isnan(grad).any(), (name, dtype, n, c)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(1031, 37), (2049, 10), (67, 300)], ids=["1031x37", "2049x10", "67x300"])
def test_threads_bit_identical(shape, dtype):
    """Short rows in blocks (float and double paths), long rows in chunks; index and probability
    targets (the target-specialised and the whole program)."""
    before = cpp.get_num_threads()
    try:
        for name in CATALOGUE:
            spec = nlfs.losses.get(name)
            program = lower(spec.expr, spec.class_reduction)
            kernel = BACKEND.compile(program)
            for prob in (False, True):
                logits, target = make_inputs(*shape, dtype, prob_targets=prob, seed=11)
                out = {}
                for t in (1, 2, 3):
                    cpp.set_num_threads(t)
                    out[t] = kernel(logits, target, catalogue_constants(spec, program))
                for t in (2, 3):
                    assert torch.equal(out[1][0], out[t][0]) and torch.equal(out[1][1], out[t][1]), (name, t, prob)
    finally:
        cpp.set_num_threads(before)
    with pytest.raises(ValueError):
        cpp.set_num_threads(0)


def test_thread_env_variables():
    """NLFS_CPP_THREADS sets the thread count; NLFS_CPP_SPIN_US=0 (workers never spin) changes no result."""
    import subprocess
    import sys

    code = ("import torch, nlfs; from nlfs.backends import _cpp; print(_cpp.get_num_threads()); "
            "g = torch.Generator().manual_seed(0); z = torch.randn(3000, 50, generator=g); "
            "t = torch.randint(0, 50, (3000,), generator=g); loss, grad = nlfs.Loss('NGL').kernel_for(z.device)[1]("
            "z, t, torch.tensor([2.4092], dtype=torch.float64)); "
            "print(float(loss.double().sum()), float(grad.double().abs().sum()))")
    outs = []
    for spin in ("0", "200"):
        env = {"NLFS_CPP_THREADS": "3", "NLFS_CPP_SPIN_US": spin, "PATH": "/usr/bin:/bin"}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        lines = out.stdout.split("\n")
        assert lines[0].strip() == "3"
        outs.append(lines[1])
    assert outs[0] == outs[1]


def test_index_targets_out_of_range_rejected_by_the_kernel():
    kernel = BACKEND.compile(lower(nlfs.parse("-y*log(p)")))
    logits, target = make_inputs(6, 4, torch.float32)
    for bad in (4, -1):
        t = target.clone()
        t[3] = bad
        with pytest.raises(ValueError, match=f"target class {bad} is out of range for 4 classes"):
            kernel(logits, t, torch.zeros(0, dtype=torch.float64))
        with pytest.raises(ValueError, match=f"target class {bad} is out of range for 4 classes"):
            nlfs.Loss("CE", backend="cpp")(logits, t)


@pytest.mark.parametrize("name", CATALOGUE)
def test_specialised_and_whole_program_agree(name):
    """Class-index targets run the loss specialised to y = 0 / y = 1; the whole program (one-hot y
    built in the kernel) must give the same loss and gradient."""
    from nlfs import _cpp as ext

    spec = nlfs.losses.get(name)
    program = lower(spec.expr, spec.class_reduction)
    kernel = BACKEND.compile(program)
    consts = catalogue_constants(spec, program)
    for dtype, (n, c), tol in ((torch.float64, (37, 11), 1e-12), (torch.float64, (5, 300), 1e-12),
                               (torch.float32, (37, 40), 2e-6)):
        logits, target = make_inputs(n, c, dtype, seed=3)
        loss, grad = kernel(logits, target, consts)
        whole_loss, whole_grad = torch.empty(n, dtype=torch.float64), torch.empty(n, c, dtype=dtype)
        ext.run(kernel._handle, logits.data_ptr(), 0 if dtype == torch.float32 else 1, target.data_ptr(), 0, n, c,
                consts.data_ptr(), consts.numel(), whole_loss.data_ptr(), whole_grad.data_ptr())
        torch.testing.assert_close(loss.double(), whole_loss, rtol=tol, atol=tol)
        torch.testing.assert_close(grad, whole_grad, rtol=tol, atol=tol)


FAST_PATH = ["-y*log(p)", "-y*(1-p)**2*log(p) + 3", "y*z", "y*exp(p) - 2*y", "y*p*z + 0*p", "sin(y*p) + C"]


@pytest.mark.parametrize("reduction", ["class_sum", "element_mean"])
@pytest.mark.parametrize("text", FAST_PATH)
def test_losses_constant_off_the_target(text, reduction):
    """Losses whose y = 0 form is a constant take the kernel's fast path (no per-element program):
    the gradient off the target is -p_j * K. Through softmax, logits only, and with a constant."""
    from nlfs.expr import specialize

    program = lower(nlfs.parse(text), reduction)
    off = specialize(program, 0.0)
    assert not off.leaves - {"C"}, off  # the case under test
    for shape in ((1, 2), (33, 10), (9, 300)):
        check_program(text, program, torch.zeros(0, dtype=torch.float64), *shape, prob_targets=False, seed=5)


@pytest.mark.parametrize("text,logits,target,consts", [
    ("y*z", [[1e12, 0.0, 3.0]], [0], {}),
    ("z*(1-y)", [[1e300, 2.0, 3.0, 0.5]], [1], {}),
    ("sin(y*beta) + p", [[0.3, 1.0, -2.0]], [1], {"beta": 1e12}),
    ("sin(z + y)", [[1e11, 1.0, 2.0]], [2], {}),
    ("(z - y) / 1", [[-1e15, 4.0]], [0], {}),
])
def test_specialisation_keeps_the_clamps_of_huge_values(text, logits, target, consts):
    """x*1, x+0... drop no op whose operand is a logit, log(p) or a constant: those are not clamped,
    so the op's clamp (and zero adjoint beyond MAXV) stays part of the loss; finite input, finite loss."""
    out = {}
    for backend in ("torch", "cpp"):
        z = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
        loss = nlfs.Loss(text, backend=backend, constants=consts, reduction="sum")(z, torch.tensor(target))
        loss.backward()
        out[backend] = (loss.double(), z.grad)
    assert torch.isfinite(out["cpp"][0]) and torch.isfinite(out["cpp"][1]).all()
    torch.testing.assert_close(out["cpp"][0], out["torch"][0], rtol=1e-12, atol=0)  # float64 loss rows
    torch.testing.assert_close(out["cpp"][1], out["torch"][1], rtol=1e-12, atol=1e-15)


def test_specialised_programs_validated_in_cpp():
    from nlfs import _cpp as ext

    logits, target = make_inputs(4, 3)
    loss, grad = torch.empty(4, dtype=torch.float64), torch.empty(4, 3)
    full = ext.Program([0, 3, 9, 16], [-1, -1, 0, 2], [-1, -1, 1, -1], [0.0] * 4, 0, 0)
    no_y = ext.Program([3, 16], [-1, 0], [-1, -1], [0.0] * 2, 0, 0)
    other_reduction = ext.Program([3, 16], [-1, 0], [-1, -1], [0.0] * 2, 0, 1)
    args = (logits.data_ptr(), 0, target.data_ptr(), 0, 4, 3, 0, 0, loss.data_ptr(), grad.data_ptr())
    with pytest.raises(ValueError, match="both"):
        ext.run(full, *args, off=no_y)
    with pytest.raises(ValueError, match="must not read y"):
        ext.run(full, *args, off=full, on=no_y)
    with pytest.raises(ValueError, match="reduction"):
        ext.run(full, *args, off=no_y, on=other_reduction)
    with pytest.raises(ValueError, match="grad_scale"):
        ext.run(full, *args, off=no_y, on=no_y, grad_scale=float("nan"))
    with pytest.raises(ValueError, match="leaf p appears twice"):
        ext.Program([1, 1, 7], [-1, -1, 0], [-1, -1, 1], [0.0] * 3, 0, 0)
    ext.run(full, *args, off=no_y, on=no_y, grad_scale=0.5)  # well formed: runs
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_backward_returns_kernel_gradient_safely(reduction):
    """A plain loss.backward() takes the kernel's (already scaled) gradient without a copy; a retained
    graph, a second backward and an in-place zero_grad in between must still give the right sums."""
    logits, target = make_inputs(20, 7, torch.float64, seed=8)
    ref = logits.clone().requires_grad_(True)
    getattr(nlfs.Loss("Focal", backend="torch", reduction="none")(ref, target), reduction)().backward()
    z = logits.clone().requires_grad_(True)
    out = nlfs.Loss("Focal", backend="cpp", reduction=reduction)(z, target)
    torch.testing.assert_close(out, getattr(nlfs.Loss("Focal", backend="torch", reduction="none")(logits, target),
                                            reduction)(), rtol=1e-12, atol=1e-14)  # a float64 loss
    out.backward(retain_graph=True)
    torch.testing.assert_close(z.grad, ref.grad, rtol=1e-12, atol=1e-14)
    out.backward(retain_graph=True)
    torch.testing.assert_close(z.grad, 2 * ref.grad, rtol=1e-12, atol=1e-14)
    z.grad.zero_()
    out.backward()
    torch.testing.assert_close(z.grad, ref.grad, rtol=1e-12, atol=1e-14)
    # create_graph: the kernel has no second derivative, so asking for one is an error, not a
    # gradient silently missing its d/dz part
    v = torch.ones((), dtype=torch.float64, requires_grad=True)
    z2 = logits.clone().requires_grad_(True)
    out2 = nlfs.Loss("Focal", backend="cpp", reduction=reduction)(z2, target)
    with pytest.raises(RuntimeError, match="first derivatives only"):
        torch.autograd.grad(out2, z2, grad_outputs=v, create_graph=True)
    # through another layer: the gradient flows on, scaled by the upstream gradient
    w = torch.ones(7, dtype=torch.float64, requires_grad=True)
    (nlfs.Loss("Focal", backend="cpp", reduction=reduction)(logits * w, target) * 3).backward()
    assert w.grad is not None and torch.isfinite(w.grad).all()
    expected = (3 * ref.grad * logits).sum(0)
    torch.testing.assert_close(w.grad, expected, rtol=1e-10, atol=1e-12)


def test_noncontiguous_and_odd_inputs():
    spec = nlfs.losses.get("Focal")
    program = lower(spec.expr, spec.class_reduction)
    kernel = BACKEND.compile(program)
    logits, target = make_inputs(40, 11, torch.float64, seed=2)
    base = kernel(logits, target, catalogue_constants(spec, program))
    wide = torch.zeros(11, 40, dtype=torch.float64)
    wide.copy_(logits.t())
    got = kernel(wide.t(), target, catalogue_constants(spec, program).float())  # transposed view, fp32 constants
    assert torch.equal(base[0], got[0]) and torch.equal(base[1], got[1])
    # empty batch
    loss, grad = kernel(logits[:0], target[:0], catalogue_constants(spec, program))
    assert loss.shape == (0,) and grad.shape == (0, 11)
    # half precision logits come back in their dtype
    loss, grad = kernel(logits.half(), target, catalogue_constants(spec, program))
    assert grad.dtype == torch.float16 and torch.isfinite(grad).all()
    # a constant-only expression has zero gradient
    k2 = BACKEND.compile(lower(nlfs.parse("exp(2.0) + 1")))
    loss, grad = k2(logits, target, torch.zeros(0, dtype=torch.float64))
    assert torch.allclose(loss.double(), torch.full((40,), 11 * (np.exp(2.0) + 1), dtype=torch.float64))
    assert (grad == 0).all()


def _bad_programs():
    good = (Instr("y"), Instr("logp"), Instr("mul", (0, 1)), Instr("neg", (2,)))
    yield "unknown op", Program(good[:3] + (Instr("frobnicate", (2,)),), (), "class_sum")
    yield "forward reference", Program((Instr("y"), Instr("mul", (0, 1))), (), "class_sum")
    yield "self reference", Program((Instr("y"), Instr("neg", (1,))), (), "class_sum")
    yield "negative slot", Program((Instr("y"), Instr("neg", (-1,))), (), "class_sum")
    yield "arity", Program((Instr("y"), Instr("mul", (0,))), (), "class_sum")
    yield "leaf with args", Program((Instr("y"), Instr("p", (0,))), (), "class_sum")
    yield "const index", Program((Instr("const", (), 3),), ("a",), "class_sum")
    yield "const index negative", Program((Instr("const", (), -1),), ("a",), "class_sum")
    yield "const index not int", Program((Instr("const", (), 0.5),), ("a",), "class_sum")
    yield "num not finite", Program((Instr("num", (), float("nan")),), (), "class_sum")
    yield "empty", Program((), (), "class_sum")
    yield "reduction", Program(good, (), "median")


@pytest.mark.parametrize("why,program", list(_bad_programs()), ids=[w for w, _ in _bad_programs()])
def test_malformed_programs_rejected_in_python(why, program):
    with pytest.raises(ValueError):
        BACKEND.compile(program)


def test_malformed_programs_rejected_in_cpp():
    from nlfs import _cpp

    ok = _cpp.Program([0, 3, 9, 16], [-1, -1, 0, 2], [-1, -1, 1, -1], [0.0] * 4, 0, 0)
    assert len(ok) == 4
    cases = [
        ([99], [-1], [-1], [0.0], 0, 0),  # opcode out of range
        ([-1], [-1], [-1], [0.0], 0, 0),
        ([0, 9], [0, 1], [-1, 0], [0.0, 0.0], 0, 0),  # arg refers to itself
        ([0, 9], [-1, 0], [-1, 5], [0.0, 0.0], 0, 0),  # arg past the end
        ([0, 9], [-1, 0], [-1, -1], [0.0, 0.0], 0, 0),  # binary op missing its second arg
        ([0, 16], [-1, 0], [-1, 0], [0.0, 0.0], 0, 0),  # unary op with a second arg
        ([0], [3], [-1], [0.0], 0, 0),  # leaf with an argument
        ([6], [-1], [-1], [2.0], 2, 0),  # const index == n_consts
        ([6], [-1], [-1], [0.5], 2, 0),  # const index not integral
        ([6], [-1], [-1], [float("nan")], 2, 0),
        ([], [], [], [], 0, 0),  # empty
        ([0], [-1, -1], [-1], [0.0], 0, 0),  # ragged arrays
        ([0], [-1], [-1], [0.0], 0, 7),  # reduction code
        ([0], [-1], [-1], [0.0], -1, 0),
    ]
    for case in cases:
        with pytest.raises(ValueError):
            _cpp.Program(*case)
    logits, target = make_inputs(4, 3)
    loss, grad = torch.empty(4), torch.empty(4, 3)
    needs_const = _cpp.Program([6], [-1], [-1], [1.0], 2, 0)
    with pytest.raises(ValueError):  # fewer constants than the program needs
        _cpp.run(needs_const, logits.data_ptr(), 0, target.data_ptr(), 0, 4, 3, 0, 1, loss.data_ptr(),
                 grad.data_ptr())
    with pytest.raises(ValueError):  # bad dtype code
        _cpp.run(ok, logits.data_ptr(), 5, target.data_ptr(), 0, 4, 3, 0, 0, loss.data_ptr(), grad.data_ptr())


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", ["CE", "NGL", "Focal"])
def test_loss_module_gradients_flow(name, reduction):
    logits, target = make_inputs(50, 10, torch.float32, seed=4)
    grads = {}
    for backend in ("torch", "cpp"):
        z = logits.clone().requires_grad_(True)
        out = nlfs.Loss(name, backend=backend, reduction=reduction)(z, target)
        (out * torch.linspace(0.5, 1.5, out.numel()).reshape(out.shape)).sum().backward()
        grads[backend] = (out.detach(), z.grad)
    torch.testing.assert_close(grads["cpp"][0], grads["torch"][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grads["cpp"][1], grads["torch"][1], rtol=1e-4, atol=1e-6)


def test_auto_prefers_cpp_on_cpu():
    from nlfs.backends import available_backends, resolve_backend

    assert available_backends()["cpp"] == ""
    assert resolve_backend("auto", torch.device("cpu")).name == "cpp"


def test_digits_training_learns():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.int64)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(y), generator=g)
    tr, te = perm[:1400], perm[1400:]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nlfs.Loss("NGL", backend="cpp")
    for _ in range(8):
        for idx in tr[torch.randperm(len(tr), generator=g)].split(64):
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
    with torch.no_grad():
        acc = (model(x[te]).argmax(1) == y[te]).float().mean().item()
    assert acc > 0.8, acc


def test_fp32_compute_switch_and_fallback():
    """Float32 logits compute in float by default; off, they compute in double. Both meet the
    float32 criterion, and ill-conditioned rows (Baikal, probability targets) are recomputed in
    double by the float path, thread-count independently."""
    from nlfs import _cpp as ext

    assert cpp.get_fp32_compute()
    spec = nlfs.losses.get("Baikal")
    program = lower(spec.expr, spec.class_reduction)
    kernel = BACKEND.compile(program)
    logits, target = make_inputs(300, 40, torch.float32, prob_targets=True, seed=9)
    before_threads = cpp.get_num_threads()
    try:
        ext._fp32_redo()
        out = {}
        for t in (1, 2):
            cpp.set_num_threads(t)
            out[t] = kernel(logits, target, catalogue_constants(spec, program))
        assert ext._fp32_redo() > 0
        assert torch.equal(out[1][0], out[2][0]) and torch.equal(out[1][1], out[2][1])
        cpp.set_fp32_compute(False)
        for pt in (False, True):
            check_program("Baikal fp32 off", program, catalogue_constants(spec, program), 300, 40, prob_targets=pt,
                          dtypes=(torch.float32,))
    finally:
        cpp.set_fp32_compute(True)
        cpp.set_num_threads(before_threads)
