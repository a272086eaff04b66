"""Ops over a row's classes (``sum_classes``, which NCE needs): the language reads, prints and keeps them
(never folded into a number), the torch backend evaluates them with autograd's gradient, and the fused
backends lower them too (``backend="auto"`` picks them; tests/backends/test_class_ops.py checks their
values and gradients)."""

import pytest
import torch

import nlfs
from nlfs.backends import available_backends, get_backend, resolve_backend
from nlfs.expr import CLASS_OPS, OPS, Expr, lower, parse, simplify


def test_sum_classes_reads_prints_and_is_not_folded():
    e = parse("y * log(p) / sum_classes(log(p)) + sum_classes(2)")
    assert parse(str(e)) == e
    assert "sum_classes(2)" in str(e.canonical())  # 2 summed over C classes is 2*C, not 2
    assert "sum_classes" in str(simplify(parse("sum_classes(1 + 1) * p")))
    assert "sum_classes" in CLASS_OPS and "sum_classes" not in OPS  # the fused kernels' table stays elementwise
    assert lower(e).class_ops == {"sum_classes"} and not lower(parse("-y * log(p)")).class_ops
    with pytest.raises(ValueError, match="reserved"):
        Expr.const("sum_classes")


def test_sum_classes_value_and_gradient_match_autograd():
    text = "exp(-p) * y / sum_classes(p * p + y) + sin(z) * sum_classes(z)"
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
def test_fused_backends_lower_it_and_auto_picks_them(name):
    if available_backends()[name]:
        pytest.skip(available_backends()[name])
    program = lower(parse("-y * log(p) / sum_classes(-log(p))"))
    backend = get_backend(name)
    assert not backend.refuses(program) and not backend.refuses(lower(parse("-y * log(p)")))
    assert backend.compile(program).program is program
    assert resolve_backend(name, torch.device("cpu"), program).name == name
    device = torch.device("cuda" if name == "triton" and torch.cuda.is_available() else "cpu")
    first_fused = "triton" if device.type == "cuda" else ("torch" if available_backends()["cpp"] else "cpp")
    assert resolve_backend("auto", device, program).name == first_fused
