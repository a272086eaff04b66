"""Generated Triton kernels compile for real GPUs, checked without one.

The interpreter (``TRITON_INTERPRET=1``, what CI runs) accepts code the compiler rejects and has no
bf16, so every catalogue kernel is also compiled ahead of time for sm_90 (H100) and sm_80 (A100), in
every template (row tile for small C, wide tile, column loop) and logits dtype, through
``nlfs.backends._triton_aot`` (Triton's bundled ptxas; no driver). ``NLFS_TEST_SCALE`` sizes the
random sample (``scaled(20)`` per search space).
"""

from __future__ import annotations

import dataclasses
import os
import random
from pathlib import Path

import pytest
import torch

import nlfs
from nlfs.spaces import GPSpace, NLFSSpace
from tests.conftest import require_backend, scaled, unavailable

require_backend("triton", module=True)  # a skip, or a failure under CI's NLFS_REQUIRE_BACKENDS

from nlfs.backends._triton import TritonBackend  # noqa: E402
from nlfs.backends._triton_aot import (  # noqa: E402
    GRAD_SCALE,
    AotJob,
    aot_available,
    compile_for_target,
    compile_jobs,
)

ok, why = aot_available()
if not ok:
    unavailable(why, module=True)

TRIG = ("sin", "cos")  # libdevice's sinf/cosf keep a local array for huge arguments (stack, not spills)
# row tile, wide tile, column loop; 1024 and 32768 classes are multiples of 16, where the JIT knows
# the strides are too (vectorised loads and stores: another kernel)
SHAPES = [(257, 10), (257, 10), (64, 1000), (64, 1024), (5, 4099), (4, 32768)]
DTYPES = [torch.float32, torch.bfloat16, torch.float32, torch.bfloat16, torch.float32, torch.bfloat16]


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    root = tmp_path_factory.mktemp("aot")
    saved = {k: os.environ.get(k) for k in ("NLFS_CACHE_DIR", "TRITON_CACHE_DIR")}
    os.environ["NLFS_CACHE_DIR"] = str(root / "nlfs")
    os.environ["TRITON_CACHE_DIR"] = str(root / "triton")  # compile for real, not from a cache
    yield root
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _kernel(program):
    return TritonBackend().compile(program)


@pytest.fixture(scope="module")
def catalogue_results(caches):
    jobs, names = [], []
    for name in nlfs.losses.elementwise():  # NCE+RCE's whole-row tile: tests/backends/test_class_ops.py
        spec = nlfs.losses.get(name)
        kernel = _kernel(nlfs.lower(spec.expr, spec.class_reduction))
        for (n, c), dtype in zip(SHAPES, DTYPES, strict=True):
            jobs.append(AotJob.for_kernel(kernel, n, c, dtype))
            names.append(name)
        jobs.append(AotJob.for_kernel(kernel, 257, 10, torch.float16, index_targets=False))
        jobs.append(AotJob.for_kernel(kernel, 64, 1000, torch.bfloat16, arch=80))
        # both forms for index targets, whatever the launch would pick
        for n, c in [(257, 10), (5, 4099)]:
            job = AotJob.for_kernel(kernel, n, c, torch.bfloat16)
            jobs.append(dataclasses.replace(job, specialised=not job.specialised))
        names += [name] * 4
    return list(zip(names, compile_jobs(jobs, timeout=1800), strict=True))


def test_catalogue_compiles_for_h100_and_a100(catalogue_results):
    failed = [(n, r.job, r.error) for n, r in catalogue_results if r.error]
    assert not failed, failed[:3]
    templates = {(r.kernel, r.job.dtype, r.job.arch, r.job.index_targets) for _, r in catalogue_results}
    assert {k for k, *_ in templates} == {"nlfs_tile_kernel", "nlfs_loop_kernel"}
    assert ("nlfs_tile_kernel", "fp16", 90, False) in templates
    assert ("nlfs_tile_kernel", "bf16", 80, True) in templates
    forms = {(r.kernel, r.job.specialised) for _, r in catalogue_results if r.job.index_targets}
    assert forms == {(k, s) for k in ("nlfs_tile_kernel", "nlfs_loop_kernel") for s in (True, False)}
    for name, r in catalogue_results:
        assert r.compile_s > 0 and r.ptx_lines > 100 and 0 < r.registers <= 255, (name, r)


def test_catalogue_tile_kernels_do_not_spill(catalogue_results):
    """The row-tile kernels are straight-line code, so any local memory would be a register spill;
    the only exception is libdevice's sin/cos, whose slow path (huge arguments) keeps a local array.
    At 4 elements per thread (launch_config) every catalogue body fits in 96 registers. (The column
    loop kernels may save a register or two around their loops, which ptxas places outside them.)"""
    tiles = [(name, r) for name, r in catalogue_results if r.kernel == "nlfs_tile_kernel"]
    assert len(tiles) >= 5 * len(nlfs.losses.elementwise())
    from nlfs.backends._triton import _SPECIALISED_TILE_MIN_C

    found = set(nlfs.losses.found())

    for name, r in tiles:
        text = nlfs.losses.get(name).text
        # a specialised tile below _SPECIALISED_TILE_MIN_C classes is compiled only because the
        # fixture forces both forms; no launch uses it (SCE's keeps 8 bytes of stack there with this
        # ptxas, at 40 registers: not register pressure)
        never_launched = r.job.specialised and r.job.c < _SPECIALISED_TILE_MIN_C
        if not any(f"{t}(" in text for t in TRIG) and not never_launched:
            # a found loss is a machine-made body: ptxas may keep one saved register in local memory
            # (FoundFM1's bf16 row tile: one STL/LDL pair at 64 registers); published losses keep none
            assert r.stack_bytes <= (8 if name in found else 0), (name, r)
        assert r.registers <= 96, (name, r)


def test_launch_config_matches_the_jit():
    """The AOT job compiles the template and block sizes a launch picks."""
    from nlfs.backends._triton import launch_config

    assert launch_config(257, 10).kernel == "nlfs_tile_kernel"
    assert launch_config(257, 10).blocks == {"BLOCK_R": 128, "BLOCK_C": 16}
    # on a GPU the tile does not shrink for small batches (one compile for every batch size)
    assert launch_config(1, 2).blocks == {"BLOCK_R": 1024, "BLOCK_C": 2}
    assert launch_config(5, 10).blocks == launch_config(4096, 10).blocks
    assert launch_config(1, 2, "interp").blocks == {"BLOCK_R": 1, "BLOCK_C": 2}
    assert launch_config(64, 1000).blocks == {"BLOCK_R": 2, "BLOCK_C": 1024}
    assert launch_config(5, 4099).kernel == "nlfs_loop_kernel"
    assert launch_config(5, 4099).grid == (5,)
    assert launch_config(300, 10).grid == (3,)
    # warps: block elements / (32 * elements per thread), between 1 and 16
    assert launch_config(257, 10, elems_per_thread=4).num_warps == 16
    assert launch_config(257, 10, elems_per_thread=8).num_warps == 8
    assert launch_config(1, 2, elems_per_thread=4).num_warps == 16
    assert launch_config(1, 5000, elems_per_thread=4).num_warps == 16
    assert launch_config(1, 5000, "interp", elems_per_thread=4).num_warps == 16
    with pytest.raises(ValueError, match="power of two"):
        launch_config(1, 2, elems_per_thread=3)


@pytest.mark.parametrize("space", [NLFSSpace(), GPSpace()], ids=["nlfs", "gp"])
def test_random_candidates_compile(caches, space):
    rng = random.Random(5)
    kernels = [_kernel(nlfs.lower(space.random_expr(rng))) for _ in range(scaled(20))]
    dtypes = [torch.bfloat16, torch.float16, torch.float32]
    results = compile_jobs([AotJob.for_kernel(k, 257, 10, dtypes[i % 3]) for i, k in enumerate(kernels)],
                           timeout=1800)
    failed = [(k.program, r.error) for k, r in zip(kernels, results, strict=True) if r.error]
    assert not failed, failed[:3]


def test_grad_scale_kernel_compiles(caches):
    """Backward's in-place scaling (a branch on a value loaded on the device) in every logits dtype."""
    jobs = [AotJob(GRAD_SCALE, False, 0, 0, dtype, arch=arch) for dtype in ("fp32", "fp16", "bf16")
            for arch in (80, 90)]
    for r in compile_jobs(jobs, timeout=600):
        assert not r.error and r.kernel == "nlfs_scale_grad_kernel" and r.registers > 0, r
        assert r.stack_bytes == 0


def test_compile_errors_are_reported_per_job(caches, tmp_path):
    """A kernel the compiler rejects comes back as that job's error; the other jobs still compile."""
    good = _kernel(nlfs.lower(nlfs.parse("-y * log(p)")))
    src = Path(good.source_path).read_text()
    assert "    return f, g_p, g_logp, g_z\n" in src
    bad = tmp_path / "nlfs_k_broken.py"
    bad.write_text(src.replace("    return f, g_p, g_logp, g_z\n", "    return f, g_p, g_logp, g_zz\n"))
    jobs = [AotJob(str(bad), False, 257, 10), AotJob.for_kernel(good, 257, 10)]
    broken, fine = compile_jobs(jobs, timeout=600)
    assert "g_zz" in broken.error and broken.registers == 0, broken
    assert not fine.error and fine.registers > 0


def test_a_crashing_compiler_process_loses_one_job(caches, tmp_path):
    """If the compiler process dies (an LLVM abort, say), the batch is retried job by job: the job
    that kills it is reported, the others compile."""
    from nlfs.backends._triton_aot import _process_can_compile

    if _process_can_compile():
        pytest.skip("this process compiles itself: there is no subprocess to crash")
    good = _kernel(nlfs.lower(nlfs.parse("-y * log(p)")))
    bad = tmp_path / "nlfs_k_crash.py"
    bad.write_text("import os\nos._exit(3)\n")
    jobs = [AotJob.for_kernel(good, 257, 10), AotJob(str(bad), False, 257, 10), AotJob.for_kernel(good, 5, 4099)]
    first, crashed, third = compile_jobs(jobs, timeout=600)
    assert "exit 3" in crashed.error and crashed.registers == 0
    assert not first.error and not third.error and first.registers > 0 and third.registers > 0


def test_compile_for_target_single(caches):
    kernel = _kernel(nlfs.lower(nlfs.parse("-y * log(p) + 0.5 * (1 - p) ** 2")))
    r = compile_for_target(kernel, 1, 2, torch.bfloat16, arch=80)
    assert not r.error and r.job.arch == 80 and r.blocks == {"BLOCK_R": 1024, "BLOCK_C": 2}
    with pytest.raises(ValueError, match="dtype"):
        compile_for_target(kernel, 1, 2, torch.float64)
