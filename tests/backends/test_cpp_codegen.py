"""The generated C++ op code: header freshness, and each op's generated loops against the ops table
evaluated in float64 with NumPy/SciPy (so the C++ spelling of every primitive is checked)."""

import numpy as np
import pytest

from nlfs.backends import _cpp_codegen as cg
from nlfs.expr import OPS
from nlfs.expr._math import NumpyMath
from tests.conftest import require_backend

require_backend("cpp", module=True)  # a skip, or a failure under CI's NLFS_REQUIRE_BACKENDS
import nlfs.backends._cpp as cpp  # noqa: E402

NM = NumpyMath()


def test_committed_header_is_up_to_date():
    assert cg.HEADER.read_text() == cg.generate(), (
        "csrc/ops_generated.h is stale: run `python -m nlfs.backends._cpp_codegen` and rebuild")


def test_check_cli(tmp_path, capsys):
    assert cg.main(["--check"]) == 0
    stale = tmp_path / "ops_generated.h"
    stale.write_text("// old\n")
    assert cg.main(["--check", "--path", str(stale)]) == 1
    assert cg.main(["--path", str(stale)]) == 0
    assert stale.read_text() == cg.generate()


def test_built_extension_matches_table():
    from nlfs import _cpp

    assert tuple(_cpp.op_names()) == cg.OP_NAMES
    assert _cpp.op_arity()[cg.N_LEAF:] == [cg.TABLE[n].arity for n in cg.OP_NAMES[cg.N_LEAF:]]
    assert _cpp.op_bounded()[cg.N_LEAF:] == [cg.TABLE[n].bounded for n in cg.OP_NAMES[cg.N_LEAF:]]


def test_literals():
    assert cg.cpp_literal(1.0) == "1.0"
    assert cg.cpp_literal(-1e-07) == "(-1e-07)"
    assert float(cg.cpp_literal(23.025850929940457)) == 23.025850929940457
    with pytest.raises(ValueError):
        cg.cpp_literal(float("inf"))


def _points(arity):
    rng = np.random.default_rng(1)
    edge = np.array([0.0, -0.0, 1e-8, -1e-8, 1e-7, -1e-7, 1e-6, -1e-6, 5e-7, 1.0, -1.0, 8.0, -8.0, 23.0,
                     24.0, -24.0, 100.0, -100.0, 1e5, -1e5, 2e3, 1e10, -1e10])
    x = np.concatenate([edge, rng.normal(0, 3, 300), rng.normal(0, 30, 100)])
    if arity == 1:
        return [x]
    a = np.concatenate([np.repeat(edge, len(edge)), rng.normal(0, 3, 400), rng.normal(0, 30, 100)])
    b = np.concatenate([np.tile(edge, len(edge)), rng.normal(0, 3, 400), rng.normal(0, 30, 100)])
    return [a, b]


def _close(name, got, want, rtol=1e-12, atol=1e-300):
    got = np.broadcast_to(np.asarray(got, dtype=np.float64), np.shape(want))
    want = np.asarray(want, dtype=np.float64)
    bad = ~((np.abs(got - want) <= atol + rtol * np.abs(want)) | (got == want))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise AssertionError(f"{name}: {int(bad.sum())} mismatches; first got {got[i]!r} want {want[i]!r}")


@pytest.mark.parametrize("name", sorted(OPS))
def test_generated_forward_and_partials_match_table(name):
    op = OPS[name]
    args = _points(op.arity)
    with np.errstate(all="ignore"):
        want = np.asarray(op.forward(NM, *args), dtype=np.float64)
        want_parts = op.partials(NM, *args, want)
    got = cpp.op_forward(name, *args)
    _close(f"{name} forward", got, np.broadcast_to(want, got.shape))
    got_parts = cpp.op_partials(name, *args)
    for i, (g, w) in enumerate(zip(got_parts, want_parts, strict=True)):
        # partials such as 1 - tanh(x)**2 cancel O(1) terms: 1 ulp of the forward is 1e-16 absolute
        w = np.broadcast_to(np.asarray(w, dtype=np.float64), g.shape)
        _close(f"{name} partial {i}", g, w, atol=1e-14)


@pytest.mark.parametrize("fn", ["i0", "i0e", "i1", "i1e"])
def test_bessel_against_scipy(fn):
    """Cephes expansions: documented peak relative error ~2e-15; checked here to 1e-14 relative."""
    from scipy import special as sp

    rng = np.random.default_rng(2)
    x = np.concatenate([np.linspace(-30, 30, 6001), rng.uniform(-700, 700, 4000), [0.0, 8.0, -8.0, 1e-300]])
    if fn.endswith("e"):
        x = np.concatenate([x, [1e3, -1e5, 1e10, 1e100, -1e300, 1.7e308]])
    got = cpp.special(fn, x)
    want = getattr(sp, fn)(x)
    assert np.isfinite(got).all()
    _close(fn, got, want, rtol=1e-14, atol=1e-320)


def test_ops_over_classes_are_generated_as_row_loops():
    """Every op of CLASS_OPS gets an opcode after the elementwise ops, the OP_OVER_CLASSES flag, and a case in
    the generated row loops (forward_rows/backward_rows), whose row sum is the table's ``m.sum_classes``;
    the per-element entry points refuse them."""
    from nlfs import _cpp
    from nlfs.expr import CLASS_OPS

    text = cg.generate()
    rows = text[text.index("inline void forward_rows"):]
    back = text[text.index("inline void backward_rows"):]
    for name in CLASS_OPS:
        code = cg.OPCODE[name]
        assert code >= cg.N_LEAF + len(OPS)
        assert f"case {code}: {{  // {name}" in rows and f"case {code}: {{  // {name}" in back
    assert "const U r = U(S);" in rows  # sum_classes: the row sum S, at every class
    flags = text[text.index("OP_OVER_CLASSES[N_OPCODES]"):].split("};")[0]
    assert flags.count("true") == len(CLASS_OPS)
    a = np.ones(4)
    with pytest.raises(ValueError, match="not an elementwise table op"):
        _cpp.op_forward(cg.OPCODE["sum_classes"], a, a)
