from nlfs.expr import Expr, parse


def test_size_depth_constants_leaves():
    e = parse("exp(alpha - p - p*y) - cos(cos(sin(p)))")
    assert e.depth == 4
    assert e.constants == ("alpha",)
    assert e.leaves == {"p", "y"}
    assert e.tree_size == 13 and e.size == 11  # p occurs three times, stored once


def test_positions_at_and_replace_at():
    e = parse("p * (y + 1)")
    paths = dict(e.positions())
    assert paths[(1, 0)] is Expr.leaf("y")
    e2 = e.replace_at((1, 0), parse("log(p)"))
    assert str(e2) == "p * (log(p) + 1)"
    assert e.at((1,)) is parse("y + 1")


def test_replace_and_substitute():
    e = parse("exp(a - p) + a*y")
    assert str(e.replace(Expr.const("a"), parse("2*p"))) == "exp(2 * p - p) + 2 * p * y"
    assert str(e.substitute({"a": 1.5})) == "exp(1.5 - p) + 1.5 * y"


def test_structural_hash_is_stable_text_hash():
    import hashlib

    e = parse("p*y")
    assert e.hash == hashlib.sha256(b"p * y").hexdigest()
