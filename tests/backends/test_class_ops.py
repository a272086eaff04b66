"""Ops over a row's classes (``sum_classes``, NCE's denominator) on the fused backends.

Value and gradient wrt the logits against the torch autograd reference, on cpp and on triton (under
TRITON_INTERPRET=1 without a GPU): NCE+RCE, hand-written expressions (nested sums, a number summed over
the classes, named constants) and random expressions of both search spaces with sum_classes inserted
(nested too), under both class reductions, for index and probability targets, in float64 (tight) and
float32 (no less accurate than torch in float32). Shapes cover each kernel's layout: the C++ evaluator's
blocks of short rows and its whole long rows (more than its 256-class chunk), Triton's row tile and the
whole-row tile that replaces its column loop (over 4096 classes in the interpreter). Then the glue:
``backend="auto"`` picks a fused backend, nlfs.Loss's reductions and ignore_index, thread-count
independence, and the Triton kernel compiled ahead of time for sm_90 and sm_80 without a GPU.
"""

from __future__ import annotations

import random

import pytest
import torch

import nlfs
from nlfs.backends import available_backends, get_backend, resolve_backend
from nlfs.expr import Expr, lower, parse
from nlfs.spaces import GPSpace, NLFSSpace
from tests.backends.reference import assert_no_less_accurate, exact, make_inputs, random_constants, reference
from tests.conftest import require_backend

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FUSED = ["cpp", "triton"]
NCE_RCE = nlfs.losses.get("NCEandRCE")
HANDWRITTEN = [
    str(NCE_RCE.expr),
    "exp(-p) * y / sum_classes(p * p + y) + sin(z) * sum_classes(z)",
    "sum_classes(p * sum_classes(z * y)) * log(p) + sum_classes(2) * p",  # nested; 2 summed is 2C
    "a * sqrt(sum_classes(exp(z - b))) - y * z",  # constants
    "y * log(p) / sum_classes(sum_classes(log(p)) * p)",  # nested in a denominator
]
SHAPES = {"cpp": [(1, 2), (5, 7), (40, 33), (3, 300), (2, 1000)],
          "triton": [(1, 2), (5, 7), (40, 33), (3, 300), (2, 5000)]}


@pytest.fixture(params=FUSED)
def backend(request):
    require_backend(request.param)
    return request.param


@pytest.fixture(autouse=True)
def _kernel_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NLFS_CACHE_DIR", str(tmp_path / "nlfs_cache"))


def with_sum_classes(expr: Expr, rng: random.Random) -> Expr:
    """``expr`` with one to three random subtrees wrapped in sum_classes (a later one may land inside an
    earlier one: nested sums), and half the time one subtree times a named constant ``k``."""
    for _ in range(rng.randint(1, 3)):
        path, node = rng.choice(list(expr.positions()))
        expr = expr.replace_at(path, Expr.call("sum_classes", node))
    if rng.random() < 0.5:
        path, node = rng.choice(list(expr.positions()))
        expr = expr.replace_at(path, Expr.call("mul", Expr.const("k"), node))
    return expr


def random_programs(count: int, seed: int) -> list:
    rng = random.Random(seed)
    spaces = [NLFSSpace(), GPSpace()]
    out = []
    while len(out) < count:
        expr = with_sum_classes(spaces[len(out) % 2].random_expr(rng), rng)
        program = lower(expr, ("class_sum", "element_mean")[rng.random() < 0.3])
        if program.class_ops and {"p", "logp", "z"} & program.leaves:
            out.append(program)
    return out


def _device(kernel) -> str:
    """Where a kernel's inputs live: Triton's on the GPU when there is one (else its interpreter's CPU)."""
    return "cuda" if "triton" in type(kernel).__module__ and torch.cuda.is_available() else "cpu"


def check_f64(kernel, program, n, c, prob, seed, constants):
    """Float64 logits against float64 autograd. Nested sums over 1000 classes reach 1e6 times their terms,
    where summation order shows at 1e-9 (cos(sum(sum(sum(k p))))); Triton's float64 kernels also spell the
    table's literals as fp32 numbers (eps = 1e-7 becomes 1.0000000117e-7: log(y) at y = 0 is off by 1.2e-7)."""
    z, t = make_inputs(n, c, dtype=torch.float64, prob_targets=prob, seed=seed, device=_device(kernel))
    loss, grad = kernel(z, t, constants)
    ref_loss, ref_grad = exact(program, z, t, constants)
    tag = f"{program} [{n}x{c} {'prob' if prob else 'index'}]"
    tol = 2e-6 if "triton" in type(kernel).__module__ else 1e-7
    torch.testing.assert_close(loss.double(), ref_loss, rtol=tol, atol=tol, msg=tag + " loss")
    scale = ref_grad.abs().amax(dim=1, keepdim=True).clamp_min(1.0)  # cancellation in h - p*sum(h)
    torch.testing.assert_close(grad / scale, ref_grad / scale, rtol=tol, atol=tol, msg=tag + " grad")


def check_f32(kernel, program, n, c, prob, seed, constants, slack=1.0):
    """No less accurate than the torch backend computing in float32 (tests/backends/reference.py), its
    error counted ``slack`` times."""
    z, t = make_inputs(n, c, dtype=torch.float32, prob_targets=prob, seed=seed, device=_device(kernel))
    loss, grad = kernel(z, t, constants)
    ref_loss, ref_grad = exact(program, z, t, constants)
    t_loss, t_grad = reference(program, z, t, constants, compute_dtype="input")
    t_loss = ref_loss + slack * (t_loss.double() - ref_loss)
    t_grad = ref_grad + slack * (t_grad.double() - ref_grad)
    tag = f"{program} [{n}x{c} float32 {'prob' if prob else 'index'}]"
    assert_no_less_accurate(tag + " loss", loss, t_loss, ref_loss, 2e-5, 2e-5)
    scale = ref_grad.abs().amax(dim=1, keepdim=True).clamp_min(1.0)
    assert_no_less_accurate(tag + " grad", grad / scale, t_grad / scale, ref_grad / scale, 2e-5, 2e-5)


@pytest.mark.parametrize("reduction", ["class_sum", "element_mean"])
@pytest.mark.parametrize("text", HANDWRITTEN)
def test_handwritten_match_autograd(backend, text, reduction):
    program = lower(parse(text), reduction)
    kernel = get_backend(backend).compile(program)
    nce = text == HANDWRITTEN[0]  # at the paper's a = b = 1
    constants = torch.tensor([1.0, 1.0], dtype=torch.float64) if nce else random_constants(program, 1)
    for j, (n, c) in enumerate(SHAPES[backend]):
        for prob in (False, True):
            check_f64(kernel, program, n, c, prob, j, constants)
            check_f32(kernel, program, n, c, prob, j, constants)


def _fp32_only_in_triton() -> frozenset[str]:
    """Ops whose Triton spelling calls nlfs.kernels.special (fp32-accurate polynomials, kernels/special.py)."""
    from nlfs.backends._triton import SPELLING
    from nlfs.expr import OPS, SymMath, forward_src, partials_src

    m = SymMath(SPELLING)
    out = set()
    for name, spec in OPS.items():
        args = ["a", "b"][:spec.arity]
        src = forward_src(m, name, args) + " ".join(partials_src(m, name, args, "o"))
        if "nlfs_" in src.replace("nlfs_sign(", ""):
            out.add(name)
    return frozenset(out)


def check_random(backend, kernel, program, n, c, prob, seed, constants):
    """Float64, tight. The C++ evaluator computes a program over classes in double, so its float32 is
    checked too. (Random expressions in float32 put row sums such as sum_classes(p) = 1 at rounding
    boundaries, where any summation order may flip a branch; the float32 kernels are checked on the
    hand-written expressions.)"""
    check_f64(kernel, program, n, c, prob, seed, constants)
    if backend == "cpp":
        check_f32(kernel, program, n, c, prob, seed, constants)


def random_programs_for(backend: str, count: int, seed: int) -> list:
    """``random_programs``; for triton only those its float64 kernel computes to float64 accuracy (no op of
    nlfs.kernels.special, which is fp32-accurate)."""
    if backend == "cpp":
        return random_programs(count, seed)
    fp32_only = _fp32_only_in_triton()
    programs = [p for p in random_programs(4 * count, seed) if not {i.op for i in p.instrs} & fp32_only]
    assert len(programs) >= count
    return programs[:count]


def test_random_expressions_with_sum_classes_match_autograd(backend):
    shapes = SHAPES[backend][:3] if backend == "triton" else SHAPES[backend]  # the interpreter is slow
    for i, program in enumerate(random_programs_for(backend, 24, seed=7)):
        kernel = get_backend(backend).compile(program)
        constants = random_constants(program, i)
        for j, (n, c) in enumerate(shapes):
            check_random(backend, kernel, program, n, c, (i + j) % 2 == 1, i, constants)


def test_random_expressions_on_long_rows(backend):
    """The layouts that hold one long row: the C++ evaluator's whole row past its chunk, Triton's whole-row
    tile where an elementwise program would take the column loop."""
    n, c = (3, 300) if backend == "cpp" else (2, 5000)
    for i, program in enumerate(random_programs_for(backend, 4, seed=11)):
        kernel = get_backend(backend).compile(program)
        check_random(backend, kernel, program, n, c, i % 2 == 1, i, random_constants(program, i))


def test_loss_module_reductions_and_ignore_index(backend):
    """nlfs.Loss over NCE+RCE: every reduction, ignore_index and class weights as on the torch backend."""
    z = torch.randn(9, 6, dtype=torch.float64) * 2
    t = torch.tensor([0, 5, -100, 2, 2, 1, -100, 3, 4])
    for reduction in ("mean", "sum", "none"):
        for kw in ({}, {"weight": torch.rand(6, dtype=torch.float64) + 0.5}):
            za, zb = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
            got = nlfs.Loss("NCEandRCE", backend=backend, reduction=reduction, **kw)(za, t)
            want = nlfs.Loss("NCEandRCE", backend="torch", reduction=reduction, **kw)(zb, t)
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
            got.sum().backward()
            want.sum().backward()
            torch.testing.assert_close(za.grad, zb.grad, rtol=1e-10, atol=1e-12)


def test_auto_picks_a_fused_backend_for_sum_classes():
    require_backend("cpp")
    program = lower(parse("-y * log(p) / sum_classes(-log(p))"))
    for name in FUSED:
        if not available_backends()[name]:
            assert not get_backend(name).refuses(program)
    assert resolve_backend("auto", torch.device("cpu"), program).name == "cpp"
    module = nlfs.Loss("NCE+RCE")
    z = torch.randn(5, 4, dtype=torch.float64)
    assert module.kernel_for(z.device)[0].name == "cpp"


def test_a_backend_that_does_not_lower_class_ops_still_refuses_them():
    from nlfs.backends._cpp import CppBackend

    class Elementwise(CppBackend):
        lowers_class_ops = False

    program = lower(parse("-y * log(p) / sum_classes(-log(p))"))
    assert "sum_classes" in Elementwise().refuses(program)
    assert not Elementwise().refuses(lower(parse("-y * log(p)")))


# ---- C++ specifics ------------------------------------------------------------------------------


def test_cpp_threads_do_not_change_results():
    require_backend("cpp")
    from nlfs.backends import cpp_threads

    kernel = get_backend("cpp").compile(lower(parse(HANDWRITTEN[2])))
    z, t = make_inputs(3000, 40, dtype=torch.float32, seed=3)  # enough work for the thread pool
    before = cpp_threads(load=True)
    try:
        cpp_threads(1)
        one = kernel(z, t, torch.zeros(0, dtype=torch.float64))
        cpp_threads(3)
        three = kernel(z, t, torch.zeros(0, dtype=torch.float64))
    finally:
        cpp_threads(before)
    assert torch.equal(one[0], three[0]) and torch.equal(one[1], three[1])


def test_cpp_does_not_specialise_a_program_over_classes():
    """Its value at one class reads the y of the others: one program at every class, and the evaluator
    refuses an off/on split of it."""
    require_backend("cpp")
    from nlfs import _cpp

    program = lower(parse(HANDWRITTEN[0]))
    kernel = get_backend("cpp").compile(program)
    assert kernel._off is None and kernel._on is None
    z = torch.randn(2, 3, dtype=torch.float64)
    loss, grad = torch.empty(2, dtype=torch.float64), torch.empty(2, 3, dtype=torch.float64)
    t = torch.tensor([0, 2])
    consts = torch.ones(2, dtype=torch.float64)
    other = kernel._compile(_cpp, lower(parse("-log(p)")))
    with pytest.raises(ValueError, match="over classes cannot be split"):
        _cpp.run(kernel._handle, z.data_ptr(), 1, t.data_ptr(), 0, 2, 3, consts.data_ptr(), 2, loss.data_ptr(),
                 grad.data_ptr(), other, other)


# ---- Triton specifics ---------------------------------------------------------------------------


def test_triton_launches_whole_rows_and_never_specialises():
    require_backend("triton")
    from nlfs.backends._triton import launch_config

    cfg = launch_config(5, 5000, "gpu", whole_rows=True)
    assert cfg.kernel == "nlfs_tile_kernel" and cfg.blocks == {"BLOCK_R": 1, "BLOCK_C": 8192}
    assert launch_config(5, 5000, "gpu").kernel == "nlfs_loop_kernel"
    with pytest.raises(ValueError, match="sums over classes within one tile"):
        launch_config(1, (1 << 20) + 1, "gpu", whole_rows=True)
    kernel = get_backend("triton").compile(lower(parse(HANDWRITTEN[0])))
    assert kernel.whole_rows and not kernel.specialised("nlfs_loop_kernel", 4, 8192)
    source = open(kernel.source_path).read()
    assert "tl.sum(tl.where(mask, " in source and "mask = tl.arange(0, z.shape[1])[None, :] < cf" in source


def test_triton_kernel_compiles_for_h100_and_a100_without_a_gpu(tmp_path, monkeypatch):
    require_backend("triton")
    from nlfs.backends._triton_aot import AotJob, aot_available, compile_jobs

    ok, why = aot_available()
    if not ok:
        pytest.skip(why)
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "triton"))  # compile for real
    nce = get_backend("triton").compile(lower(parse(HANDWRITTEN[0])))
    nested = get_backend("triton").compile(lower(parse(HANDWRITTEN[2]), "element_mean"))
    jobs = [AotJob.for_kernel(nce, 257, 10, torch.float32, arch=90),
            AotJob.for_kernel(nce, 64, 1000, torch.bfloat16, arch=80),
            AotJob.for_kernel(nce, 5, 4099, torch.float32, arch=90, index_targets=False),
            AotJob.for_kernel(nested, 64, 100, torch.float16, arch=80)]
    results = compile_jobs(jobs, timeout=900)
    assert not [r.error for r in results if r.error]
    assert {r.kernel for r in results} == {"nlfs_tile_kernel"}  # whole rows, also at 4099 classes
    assert results[2].blocks == {"BLOCK_R": 1, "BLOCK_C": 8192} and not any(r.job.specialised for r in results)
    assert all(0 < r.registers <= 255 for r in results)
