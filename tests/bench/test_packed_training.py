"""bench/packed_training.py: its plan (the quick run's order, CUDA graphs only on CUDA) and its argument
errors (one clear line, before any work)."""

from __future__ import annotations

import argparse

import pytest

from bench import packed_training


def _args(**kw):
    base = dict(amps=["bf16", "off"], compile=["eager", "compile", "cudagraphs"], regimes=["rung0", "target"],
                ks=[1, 4, 16, 64, 256], quick=False)
    base.update(kw)
    return argparse.Namespace(**base)


def test_quick_plan_times_bf16_rung0_first_and_compiles_only_the_sequential_run_and_k64():
    runs = packed_training.plan(_args(quick=True), "cuda")
    assert runs[0] == ("rung0", "bf16", "eager", [None, 1, 4, 16, 64, 256])
    assert runs[1] == ("rung0", "bf16", "cudagraphs", [None, 64])
    assert all(mode == "eager" for _, _, mode, _ in runs[2:])
    assert {(r, a) for r, a, m, _ in runs if m == "eager"} == {(r, a) for r in ("rung0", "target")
                                                               for a in ("bf16", "off")}


def test_full_plan_has_every_point_and_no_cuda_graphs_on_the_cpu():
    assert len(packed_training.plan(_args(), "cuda")) == 2 * 3 * 2
    cpu = packed_training.plan(_args(), "cpu")
    assert len(cpu) == 2 * 2 * 2 and all(mode != "cudagraphs" for _, _, mode, _ in cpu)


@pytest.mark.parametrize("argv, message", [(["--ks", "1,x"], "--ks: '1,x' is not"),
                                           (["--amps", "fp8"], "--amps: unknown fp8"),
                                           (["--compile", "jit"], "--compile: unknown jit")])
def test_bad_arguments_name_the_option(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        packed_training.main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err
