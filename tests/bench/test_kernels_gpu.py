"""bench/kernels_gpu.py: the target report's arithmetic, and the script end to end (smoke, on CPU
under TRITON_INTERPRET=1 without a GPU)."""

from __future__ import annotations

import csv
import os

import pytest
import torch

from bench import kernels_gpu

pytest.importorskip("triton")


def _row(loss, prov, b, c, ms, pct=0.0):
    return dict(loss=loss, provider=prov, batch=b, classes=c, median_ms=ms, pct_copy_bw=pct)


def test_target_report_pass_and_fail():
    rows = [
        _row("CE", "triton", 8192, 1000, 0.030, pct=80.0), _row("CE", "eager", 8192, 1000, 0.120),
        _row("CE", "compile", 8192, 1000, 0.031), _row("CE", "native", 8192, 1000, 0.026),
        _row("NGL", "triton", 4096, 32768, 1.0, pct=65.0), _row("NGL", "eager", 4096, 32768, 2.0),
        _row("NGL", "compile", 4096, 32768, 0.9),
        _row("NGL", "triton", 128, 10, 0.01, pct=1.0),  # not a target shape: not reported
    ]
    lines = kernels_gpu.target_report(rows)
    assert len(lines) == 2
    ce = next(x for x in lines if x.startswith("- CE"))
    assert "80% of copy bandwidth (>= 70%) PASS" in ce and "4.00x eager (>= 3x) PASS" in ce
    assert "0.97x torch.compile's time (<= 1) PASS" in ce
    assert "1.15x native cross_entropy's time (<= 1.2) PASS" in ce
    ngl = next(x for x in lines if x.startswith("- NGL"))
    assert "65% of copy bandwidth (>= 70%) FAIL" in ngl and "2.00x eager (>= 3x) FAIL" in ngl
    assert "1.11x torch.compile's time (<= 1) FAIL" in ngl and "native" not in ngl


@pytest.mark.skipif(torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") != "1",
                    reason="the smoke run is the CPU interpreter's")
def test_smoke_run_writes_one_schema(tmp_path, monkeypatch):
    monkeypatch.setenv("NLFS_CACHE_DIR", str(tmp_path / "cache"))
    rows = kernels_gpu.main(["--smoke", "--losses", "CE", "--out", str(tmp_path)])
    provs = {r["provider"] for r in rows}
    assert provs == {"triton", "triton-ept8", "triton-general", "triton-kernel", "eager", "native", "plain"}
    # "triton-general" only where the backend specialised: CE's column loop (5000 classes), not its tile
    assert {(r["batch"], r["classes"]) for r in rows if r["provider"] == "triton-general"} == {(3, 5000)}
    with open(tmp_path / "kernels_gpu_smoke_float32.csv") as fh:
        got = list(csv.DictReader(fh))
    assert len(got) == len(rows) == 2 * len(provs) - 1
    assert {r["notes"] for r in got if r["provider"] == "triton-kernel"} == {"smoke, TRITON_INTERPRET=1"}
    assert all(float(r["median_ms"]) > 0 and float(r["gbps"]) > 0 for r in got)
    assert {r["notes"] for r in got} == {"smoke, TRITON_INTERPRET=1"}
    assert (tmp_path / "kernels_gpu_smoke_float32.md").read_text().startswith("# Loss kernel microbenchmark")


@pytest.mark.skipif(torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") != "1",
                    reason="the smoke run is the CPU interpreter's")
def test_a_failing_provider_is_a_row_not_a_crash(tmp_path, monkeypatch):
    monkeypatch.setenv("NLFS_CACHE_DIR", str(tmp_path / "cache"))

    def boom(*args, **kwargs):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", boom)
    rows = kernels_gpu.main(["--smoke", "--losses", "CE", "--out", str(tmp_path)])
    native = [r for r in rows if r["provider"] == "native"]
    assert len(native) == 2 and all(r["notes"].startswith("failed: RuntimeError: out of memory") for r in native)
    assert all("median_ms" not in r for r in native)
    assert all(r["median_ms"] > 0 for r in rows if r["provider"] != "native")
    assert kernels_gpu.target_report(rows) == []  # smoke shapes are not target shapes
