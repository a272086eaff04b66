import pickle

import pytest
from hypothesis import given, settings

import nlfs
from nlfs.expr import Expr, ExprSyntaxError, parse

from ..strategies import expressions


@settings(max_examples=400, deadline=None)
@given(expressions)
def test_print_parse_round_trip(e):
    text = str(e)
    assert parse(text) is e, text


@settings(max_examples=200, deadline=None)
@given(expressions)
def test_pickle_round_trip_preserves_identity(e):
    assert pickle.loads(pickle.dumps(e)) is e


@pytest.mark.parametrize("text, expected", [
    ("-y*log(p)", "mul(neg(y), log(p))"),
    ("-2**x", "neg(pow(2, x))"),
    ("-2*x", "mul(-2, x)"),
    ("a**b**c", "pow(a, pow(b, c))"),
    ("x**2", "square(x)"),
    ("x**-1", "pow(x, -1)"),
    ("a - b - c", "sub(sub(a, b), c)"),
    ("a / b * c", "mul(div(a, b), c)"),
    ("--p", "neg(neg(p))"),
    ("ln(p)", "log(p)"),
    ("1e-7 + p", "add(1e-07, p)"),
])
def test_precedence_follows_python(text, expected):
    def show(e):
        if e.op == "num":
            return nlfs.expr._printer.format_number(e.value)
        if e.op == "const":
            return e.value
        if not e.args:
            return e.op
        return f"{e.op}({', '.join(show(a) for a in e.args)})"

    assert show(parse(text)) == expected


@pytest.mark.parametrize("text, token, position", [
    ("log(p", "end of input", 5),
    ("p + * y", "*", 4),
    ("lgo(p)", "lgo", 0),
    ("p $ y", "$", 2),
    ("max(p)", "max", 0),
    ("(p + y))", ")", 7),
    ("", "end of input", 0),
    ("exp + p", "exp", 0),
    ("p y", "y", 2),
    ("1e999 * p", "1e999", 0),
])
def test_malformed_strings_name_token_and_position(text, token, position):
    with pytest.raises(ValueError) as info:
        parse(text)
    err = info.value
    assert isinstance(err, ExprSyntaxError)
    assert err.token == token and err.position == position
    assert f"position {position}" in str(err) and repr(token) in str(err)


def test_shared_subexpressions_are_one_node():
    e = parse("exp(p*y) + sin(exp(p*y))")
    assert e.args[0] is e.args[1].args[0]
    assert e.size == 6 and e.tree_size == 10


def test_expressions_are_immutable_values():
    e = parse("p + y")
    with pytest.raises(AttributeError):
        e.op = "mul"
    assert {e: 1}[parse("p+y")] == 1
    assert Expr.leaf("p") + Expr.leaf("y") is e
