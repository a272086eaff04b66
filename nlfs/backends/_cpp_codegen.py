"""Generate ``csrc/ops_generated.h``: the C++ spelling of every op in the ops table.

The C++ backend never hand-writes an op's maths: this module evaluates each :class:`~nlfs.expr.Op`'s
``forward`` / ``partials`` with a :class:`~nlfs.expr._emit.SymMath` whose primitives are spelled in
C++ (``std::exp``, the Cephes Bessel functions of ``csrc/special.h``...), and writes one loop per op
(forward, partials, and the fused reverse-mode step) into a committed header. The ops over a row's
classes (``CLASS_OPS``: ``sum_classes``) get row loops instead (``forward_rows``/``backward_rows``): the
row sum of the argument S is formed first (in double), then the op's table maths, in which
``m.sum_classes(x)`` is spelled ``S``, runs at every class; backward sums the row's adjoints the same way
and hands that sum, times the op's partial, to every class of the row.

The loops are templates on the storage type ``T`` (``double`` for float64 logits, ``float`` for
float32 logits, so each SIMD vector holds twice the lanes and libmvec's ``expf``/``logf``... clones
are used). Each op computes in ``U``: ``T``, except the ops in :data:`F32_IN_DOUBLE`, which compute
in double even when ``T`` is float (loads widen, results narrow). Literals are spelled ``U(...)``.

    python -m nlfs.backends._cpp_codegen           # rewrite the header
    python -m nlfs.backends._cpp_codegen --check   # exit 1 if the committed header is stale

Opcode numbering (shared with ``nlfs.backends._cpp``): the leaves ``y p z logp C num const`` are
0..6, then the elementwise ops in table order, then the ops over classes.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from ..expr import CLASS_OPS, MAXV, OPS, SymMath, forward_src, partials_src

LEAF_CODES = ("y", "p", "z", "logp", "C", "num", "const")
TABLE = {**OPS, **CLASS_OPS}  # every op with an opcode, elementwise first
OP_NAMES = LEAF_CODES + tuple(TABLE)
OPCODE = {name: i for i, name in enumerate(OP_NAMES)}
N_LEAF = len(LEAF_CODES)

HEADER = Path(__file__).resolve().parents[2] / "csrc" / "ops_generated.h"

CPP_SPELLING = {
    "abs": "std::fabs({0})",
    "sign": "nl_sign({0})",
    "exp": "std::exp({0})",
    "log": "std::log({0})",
    "log1p": "std::log1p({0})",
    "sqrt": "std::sqrt({0})",
    "sin": "std::sin({0})",
    "cos": "std::cos({0})",
    "tanh": "std::tanh({0})",
    "sinh": "std::sinh({0})",
    "asinh": "std::asinh({0})",
    "atan": "std::atan({0})",
    "erf": "std::erf({0})",
    "erfc": "std::erfc({0})",
    "sigmoid": "nl_sigmoid({0})",
    "i0": "nl_i0({0})",
    "i0e": "nl_i0e({0})",
    "i1": "nl_i1({0})",
    "i1e": "nl_i1e({0})",
    "maximum": "nl_max({0}, {1})",
    "minimum": "nl_min({0}, {1})",
    "where": "(({0}) ? ({1}) : ({2}))",
    # only inside a class op's row loop (forward_rows/backward_rows), where S is the row sum of its argument
    "sum_classes": "U(S)",
}


# Ops whose float32 path computes in double (loads widen, results narrow), and whose partials
# recompute the op's value in double instead of reading the float-rounded one: the scaled Bessel
# partials i1e(x) - sign(x) i0e(x) and i0e(x) - i1e(x) (sign(x) + 1/x) cancel for large |x|, so a
# float-rounded value there loses all digits (tests/backends/test_cpp.py: bessel_i0e edge 2). (A
# double op inside the float loops does not vectorise: keep this set to what accuracy needs.)
# Every other op meets the "no less accurate than PyTorch in float32" criterion in float. Cephes
# Bessel functions are always evaluated in double (special.h widens and narrows).
F32_IN_DOUBLE: frozenset[str] = frozenset({"bessel_i0e", "bessel_i1e"})


def cpp_literal(v: float) -> str:
    s = repr(float(v))
    if s in ("inf", "-inf", "nan"):
        raise ValueError(f"cannot spell {s} as a C++ literal")
    if "." not in s and "e" not in s:
        s += ".0"
    return f"({s})" if s.startswith("-") else s


def cpp_math() -> SymMath:
    return SymMath(CPP_SPELLING, literal=lambda v: f"U({cpp_literal(v)})")


def _args(arity: int) -> list[str]:
    return ["x0", "x1"][:arity]


def _loads(arity: int) -> str:
    s = "const U x0 = U(a[i]);"
    if arity == 2:
        s += " const U x1 = U(b[i]);"
    return s


def _compute_type(op) -> str:
    return "double" if op.name in F32_IN_DOUBLE else "T"


def _out(op, m) -> str:
    """The op's unclamped value in the partials: the stored o[i], or for F32_IN_DOUBLE ops with a
    float T the value recomputed in double (the stored one is rounded to float)."""
    if op.name not in F32_IN_DOUBLE:
        return "const U out = U(o[i]);"
    src = forward_src(m, op.name, _args(op.arity))
    return f"const U out = sizeof(T) == sizeof(U) ? U(o[i]) : {src};"


def generate() -> str:
    m = cpp_math()
    table_digest = hashlib.sha256(
        "\n".join(f"{op.name}|{op.arity}|{op.bounded}|{op.over_classes}|{_compute_type(op)}|"
                  f"{forward_src(m, op.name, _args(op.arity))}|{partials_src(m, op.name, _args(op.arity), 'out')}"
                  for op in TABLE.values()).encode()
    ).hexdigest()[:16]
    out: list[str] = []
    w = out.append
    w("// GENERATED by `python -m nlfs.backends._cpp_codegen` from nlfs/expr/_ops.py -- DO NOT EDIT.")
    w("// The ops table is the single source of truth; a test fails when this file is stale.")
    w("#pragma once")
    w("#include <algorithm>")
    w("#include <cmath>")
    w("#include <cstdint>")
    w('#include "special.h"')
    w("")
    w("namespace nlfs_gen {")
    w("")
    w(f'constexpr const char* TABLE_DIGEST = "{table_digest}";')
    w(f"constexpr int N_LEAF = {N_LEAF};  // opcodes 0..{N_LEAF - 1}: " + " ".join(LEAF_CODES))
    w(f"constexpr int N_OPCODES = {len(OP_NAMES)};")
    w(f"constexpr double MAXV = {cpp_literal(MAXV)};")
    w("static const char* const OP_NAMES[N_OPCODES] = {")
    w("    " + ", ".join(f'"{n}"' for n in OP_NAMES) + "};")
    w("static const int OP_ARITY[N_OPCODES] = {")
    w("    " + ", ".join(["0"] * N_LEAF + [str(op.arity) for op in TABLE.values()]) + "};")
    w("// bounded: the op's value cannot leave [-MAXV, MAXV]; leaves count as bounded.")
    w("static const bool OP_BOUNDED[N_OPCODES] = {")
    w("    " + ", ".join(["true"] * N_LEAF + ["true" if op.bounded else "false" for op in TABLE.values()]) + "};")
    w("// over classes: the op's value at a class depends on the whole row (forward_rows/backward_rows).")
    w("static const bool OP_OVER_CLASSES[N_OPCODES] = {")
    w("    " + ", ".join(["false"] * N_LEAF + ["true" if op.over_classes else "false" for op in TABLE.values()]) + "};")
    w("")
    w("// Clamp to [-MAXV, MAXV] (node values and adjoints); MAXV = 1e10 is exact in float.")
    w("template <typename U>")
    w("inline U nl_clamp_maxv(U x) { return x < U(-MAXV) ? U(-MAXV) : (x > U(MAXV) ? U(MAXV) : x); }")
    w("")
    # ---- forward ----
    w("// o[i] = op(a[i], b[i]) (unclamped value); b is ignored by unary ops. For ops that are not")
    w("// bounded the same loop also writes the clamped value v[i] (v is unused for bounded ops).")
    w("// T: the storage type; U: the op's compute type (T, or double for F32_IN_DOUBLE ops).")
    w("template <typename T>")
    w("inline void forward(int op, int n, const T* __restrict a, const T* __restrict b,")
    w("                    T* __restrict o, T* __restrict v) {")
    w("  (void)b; (void)v;")
    w("  switch (op) {")
    for op in OPS.values():
        code = OPCODE[op.name]
        src = forward_src(m, op.name, _args(op.arity))
        w(f"    case {code}: {{  // {op.name}: {op.doc}")
        w(f"      using U = {_compute_type(op)};")
        if op.bounded:
            w(f"      for (int i = 0; i < n; ++i) {{ {_loads(op.arity)} o[i] = T({src}); }}")
        else:
            w(f"      for (int i = 0; i < n; ++i) {{ {_loads(op.arity)} const U r = {src}; o[i] = T(r); "
              "v[i] = T(nl_clamp_maxv(r)); }")
        w("      return;")
        w("    }")
    _end_switch(w)
    # ---- partials ----
    w("// pa[i], pb[i] = d op / d a, d op / d b at (a[i], b[i]), given the unclamped value o[i].")
    w("template <typename T>")
    w("inline void partials(int op, int n, const T* __restrict a, const T* __restrict b,")
    w("                     const T* __restrict o, T* __restrict pa, T* __restrict pb) {")
    w("  (void)b; (void)pb;")
    w("  switch (op) {")
    for op in OPS.values():
        code = OPCODE[op.name]
        parts = partials_src(m, op.name, _args(op.arity), "out")
        w(f"    case {code}: {{  // {op.name}")
        w(f"      using U = {_compute_type(op)};")
        body = f"{_loads(op.arity)} {_out(op, m)} (void)out; pa[i] = T({parts[0]});"
        if op.arity == 2:
            body += f" pb[i] = T({parts[1]});"
        w(f"      for (int i = 0; i < n; ++i) {{ {body} }}")
        w("      return;")
        w("    }")
    _end_switch(w)
    # ---- reverse-mode step ----
    w("// Reverse-mode step of one instruction: ga[i] += gi * d op / d a (likewise gb), where gi is the")
    w("// adjoint g[i] clamped to +-MAXV. A non-bounded op's output clamp passes gradient only")
    w("// where its unclamped value o[i] lies inside [-MAXV, MAXV]. ga and gb may alias (op(x, x)).")
    w("template <typename T>")
    w("inline void backward(int op, int n, const T* __restrict a, const T* __restrict b,")
    w("                     const T* __restrict o, const T* __restrict g, T* ga, T* gb) {")
    w("  (void)b; (void)gb;")
    w("  switch (op) {")
    for op in OPS.values():
        code = OPCODE[op.name]
        parts = partials_src(m, op.name, _args(op.arity), "out")
        w(f"    case {code}: {{  // {op.name}")
        w(f"      using U = {_compute_type(op)};")
        body = (f"{_loads(op.arity)} {_out(op, m)} (void)out; "
                "const U gi = nl_clamp_maxv(U(g[i]));")
        if op.bounded:
            body += f" ga[i] += T(gi * ({parts[0]}));"
            if op.arity == 2:
                body += f" gb[i] += T(gi * ({parts[1]}));"
        else:
            body += " const bool ok = std::fabs(out) <= U(MAXV);"
            body += f" ga[i] += ok ? T(gi * ({parts[0]})) : T(0);"
            if op.arity == 2:
                body += f" gb[i] += ok ? T(gi * ({parts[1]})) : T(0);"
        w(f"      for (int i = 0; i < n; ++i) {{ {body} }}")
        w("      return;")
        w("    }")
    _end_switch(w)
    _row_loops(w, m)
    w("}  // namespace nlfs_gen")
    return "\n".join(out) + "\n"


def _end_switch(w) -> None:
    """Close a generated ``switch (op)`` function: unknown opcodes do nothing."""
    w("    default:")
    w("      return;")
    w("  }")
    w("}")
    w("")


def _row_loops(w, m) -> None:
    """forward_rows/backward_rows: the ops over classes, on n elements laid out as rows of ``stride``
    elements of which the first ``c`` are the row's classes (the rest padding, given the row's value and
    no adjoint)."""
    head = ("      for (int64_t r0 = 0; r0 < n; r0 += stride) {\n"
            "        const int64_t end = std::min<int64_t>(r0 + stride, n), last = std::min<int64_t>(r0 + c, n);")
    row_sum = ("        double S = 0.0;  // the row sum of the argument, in double\n"
               "        for (int64_t i = r0; i < last; ++i) S += static_cast<double>(a[i]);")
    w("// o[i] = op over the row of a[i] (unclamped value); v[i] the clamped value for ops that are not bounded.")
    w("template <typename T>")
    w("inline void forward_rows(int op, int64_t n, int64_t stride, int64_t c, const T* __restrict a,")
    w("                         T* __restrict o, T* __restrict v) {")
    w("  (void)v;")
    w("  switch (op) {")
    for op in CLASS_OPS.values():
        src = forward_src(m, op.name, _args(op.arity))
        w(f"    case {OPCODE[op.name]}: {{  // {op.name}: {op.doc}")
        w("      using U = T;")
        w(head)
        w(row_sum)
        store = "o[i] = T(r);" if op.bounded else "o[i] = T(r); v[i] = T(nl_clamp_maxv(r));"
        w(f"        for (int64_t i = r0; i < end; ++i) {{ const U x0 = U(a[i]); (void)x0; const U r = {src}; "
          f"{store} }}")
        w("      }")
        w("      return;")
        w("    }")
    _end_switch(w)
    w("// Reverse-mode step: every class j of a row gets ga[j] += G * d op / d a at a[j], where G is the sum over")
    w("// the row's classes of the adjoint g[i] clamped to +-MAXV (0 where a non-bounded op's unclamped")
    w("// value o[i] left [-MAXV, MAXV]), summed in double.")
    w("template <typename T>")
    w("inline void backward_rows(int op, int64_t n, int64_t stride, int64_t c, const T* __restrict a,")
    w("                          const T* __restrict o, const T* __restrict g, T* __restrict ga) {")
    w("  switch (op) {")
    for op in CLASS_OPS.values():
        part = partials_src(m, op.name, _args(op.arity), "out")[0]
        w(f"    case {OPCODE[op.name]}: {{  // {op.name}")
        w("      using U = T;")
        w("      for (int64_t r0 = 0; r0 < n; r0 += stride) {")
        w("        const int64_t last = std::min<int64_t>(r0 + c, n);")
        if "U(S)" in part:
            w(row_sum)
        ok = "" if op.bounded else "std::fabs(U(o[i])) <= U(MAXV) ? "
        tail = "" if op.bounded else " : 0.0"
        w("        double G = 0.0;")
        w(f"        for (int64_t i = r0; i < last; ++i) G += {ok}static_cast<double>(nl_clamp_maxv(U(g[i]))){tail};")
        w(f"        for (int64_t i = r0; i < last; ++i) {{ const U x0 = U(a[i]); const U out = U(o[i]); (void)x0; "
          f"(void)out; ga[i] += T(U(G) * ({part})); }}")
        w("      }")
        w("      return;")
        w("    }")
    _end_switch(w)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the committed header is stale")
    ap.add_argument("--path", type=Path, default=HEADER)
    ns = ap.parse_args(argv)
    text = generate()
    if ns.check:
        current = ns.path.read_text() if ns.path.exists() else ""
        if current != text:
            print(f"{ns.path} is stale: run `python -m nlfs.backends._cpp_codegen`", file=sys.stderr)
            return 1
        print(f"{ns.path} is up to date")
        return 0
    ns.path.parent.mkdir(parents=True, exist_ok=True)
    ns.path.write_text(text)
    print(f"wrote {ns.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
