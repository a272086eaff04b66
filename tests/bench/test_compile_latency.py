"""bench/compile_latency.py end to end: a cold compile per candidate and variant, ahead of time for
sm_90 when there is no GPU (a subprocess: the test process runs Triton's interpreter)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

from nlfs.backends._triton_aot import aot_available  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not aot_available()[0], reason="triton cannot compile for NVIDIA targets here")
def test_compile_latency_rows(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["CUDA_VISIBLE_DEVICES"] = ""  # the AOT path, also on a GPU machine
    res = subprocess.run([sys.executable, "-m", "bench.compile_latency", "--random", "1", "--elems-per-thread",
                          "4,8", "--out", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    with open(tmp_path / "compile_latency_cpu_256x10_bf16.csv") as fh:
        rows = list(csv.DictReader(fh))
    import nlfs

    assert len(rows) == 2 * (len(nlfs.losses.elementwise()) + 2)  # catalogue + 1 per space, two variants
    assert not any(r["error"] for r in rows)
    for r in rows:
        # cold: a real compile takes ~0.1 s or more, a Triton cache hit ~1 ms
        assert float(r["compile_s"]) > 0.03 and float(r["total_s"]) >= float(r["compile_s"])
        assert int(r["num_warps"]) == {"4": 16, "8": 8}[r["elems_per_thread"]]  # (256, 10): 2048 elements
    ngl = {r["elems_per_thread"]: r for r in rows if r["loss"] == "NGL"}
    # fewer elements per thread: less code to compile
    assert int(ngl["4"]["ptx_lines"]) < int(ngl["8"]["ptx_lines"])
    md = (tmp_path / "compile_latency_cpu_256x10_bf16.md").read_text()
    k = len(nlfs.losses.elementwise())
    assert f"4 elements/thread, catalogue: {k}/{k} compiled" in md
