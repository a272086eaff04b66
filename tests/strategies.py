"""Hypothesis strategies for random expressions over the whole ops table."""

from hypothesis import strategies as st

from nlfs.expr import OPS, Expr

_UNARY = sorted(n for n, o in OPS.items() if o.arity == 1)
_BINARY = sorted(n for n, o in OPS.items() if o.arity == 2)

numbers = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
leaves = st.one_of(
    st.sampled_from(["y", "p", "z", "C"]).map(Expr.leaf),
    numbers.map(Expr.num),
    st.sampled_from(["alpha", "beta", "k_1"]).map(Expr.const),
)


def _extend(children):
    return st.one_of(
        st.tuples(st.sampled_from(_UNARY), children).map(lambda t: Expr(t[0], (t[1],))),
        st.tuples(st.sampled_from(_BINARY), children, children).map(lambda t: Expr(t[0], (t[1], t[2]))),
    )


expressions = st.recursive(leaves, _extend, max_leaves=12)
