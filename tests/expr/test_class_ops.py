"""Ops over a row's classes (``class_sum``, which NCE needs): the language reads, prints and keeps them
(never folded into a number), the torch backend evaluates them with autograd's gradient, and the fused
backends refuse them with one clear line while ``backend="auto"`` picks torch."""

import pytest
import torch

import nlfs
from nlfs.backends import available_backends, get_backend, resolve_backend
from nlfs.expr import CLASS_OPS, OPS, Expr, lower, parse, simplify


def test_class_sum_reads_prints_and_is_not_folded():
    e = parse("y * log(p) / class_sum(log(p)) + class_sum(2)")
    assert parse(str(e)) == e
    assert "class_sum(2)" in str(e.canonical())  # 2 summed over C classes is 2*C, not 2
    assert "class_sum" in str(simplify(parse("class_sum(1 + 1) * p")))
    assert "class_sum" in CLASS_OPS and "class_sum" not in OPS  # the fused kernels' table stays elementwise
    assert lower(e).class_ops == {"class_sum"} and not lower(parse("-y * log(p)")).class_ops
    with pytest.raises(ValueError, match="reserved"):
        Expr.const("class_sum")


def test_class_sum_value_and_gradient_match_autograd():
    text = "exp(-p) * y / class_sum(p * p + y) + sin(z) * class_sum(z)"
    g = torch.Generator().manual_seed(0)
    for n, c in [(1, 2), (5, 7)]:
        z = torch.randn(n, c, dtype=torch.float64, generator=g)
        t = torch.randint(0, c, (n,), generator=g)
        y = torch.nn.functional.one_hot(t, c).double()

        def reference(z):
            p = torch.softmax(z, 1)
            f = torch.exp(-p) * y / (p * p + y).sum(1, keepdim=True) + torch.sin(z) * z.sum(1, keepdim=True)
            return f.sum(1).mean()

        za, zb = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
        got, want = nlfs.Loss(text, backend="torch")(za, t), reference(zb)
        got.backward()
        want.backward()
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(za.grad, zb.grad, rtol=1e-12, atol=1e-12)
        zc = z.clone().requires_grad_(True)
        assert torch.autograd.gradcheck(lambda x: nlfs.Loss(text, backend="torch")(x, t), (zc,))


@pytest.mark.parametrize("name", ["cpp", "triton"])
def test_fused_backends_refuse_and_auto_picks_torch(name):
    if available_backends()[name]:
        pytest.skip(available_backends()[name])
    program = lower(parse("-y * log(p) / class_sum(-log(p))"))
    backend = get_backend(name)
    assert "class_sum" in backend.refuses(program) and not backend.refuses(lower(parse("-y * log(p)")))
    with pytest.raises(ValueError, match=f"the {name} backend computes elementwise losses only"):
        backend.compile(program)
    with pytest.raises(ValueError, match="class_sum sums over classes"):
        resolve_backend(name, torch.device("cpu"), program)
    device = torch.device("cuda" if name == "triton" and torch.cuda.is_available() else "cpu")
    assert resolve_backend("auto", device, program).name == "torch"
