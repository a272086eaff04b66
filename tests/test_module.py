import random

import pytest
import torch
import torch.nn.functional as F

import nlfs
from nlfs.spaces import get_space

from .conftest import scaled


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ce_matches_nn_cross_entropy_value_and_gradient(reduction, dtype):
    for n, c in [(1, 2), (16, 10), (5, 1000)]:
        z = (torch.randn(n, c, dtype=dtype) * 5).requires_grad_(True)
        t = torch.randint(0, c, (n,))
        ours = nlfs.Loss("CE", backend="torch", reduction=reduction)(z, t)
        (g1,) = torch.autograd.grad(ours.sum(), z)
        theirs = torch.nn.CrossEntropyLoss(reduction=reduction)(z, t)
        (g2,) = torch.autograd.grad(theirs.sum(), z)
        tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(ours, theirs, **tol)
        torch.testing.assert_close(g1, g2, **tol)


def test_ce_with_probability_targets_matches_torch():
    z = torch.randn(6, 9, dtype=torch.float64)
    y = torch.softmax(torch.randn(6, 9, dtype=torch.float64), 1)
    torch.testing.assert_close(nlfs.Loss("CE", backend="torch")(z, y), F.cross_entropy(z, y))


def test_ce_is_exact_for_confidently_wrong_logits():
    z = torch.tensor([[60.0, -60.0]], dtype=torch.float64)
    t = torch.tensor([1])
    torch.testing.assert_close(nlfs.Loss("CE", backend="torch")(z, t), F.cross_entropy(z, t))


def test_half_precision_logits_get_fp32_maths_and_their_own_grad_dtype():
    z = torch.randn(8, 10).to(torch.bfloat16).requires_grad_(True)
    t = torch.randint(0, 10, (8,))
    loss = nlfs.Loss("NGL", backend="torch")(z, t)
    assert loss.dtype == torch.bfloat16  # the logits' dtype, as F.cross_entropy (fp32 maths inside)
    loss.backward()
    assert z.grad.dtype == torch.bfloat16


@pytest.mark.parametrize("logits, target, err, match", [
    (torch.randn(4), torch.tensor([0, 1, 2, 3]), ValueError, "2-D"),
    (torch.randn(4, 3), torch.tensor([0, 1, 2]), ValueError, "3 entries for 4 rows"),
    (torch.randn(4, 3), torch.tensor([0, 1, 2, 3]), ValueError, "class 3 is out of range for 3 classes"),
    (torch.randn(4, 3), torch.tensor([0, -1, 2, 1]), ValueError, "class -1 is out of range"),
    (torch.randn(4, 3), torch.rand(4, 2), ValueError, r"shape \(4, 3\)"),
    (torch.randn(4, 3), torch.tensor([0.0, 1.0, 2.0, 1.0]), TypeError, "must be integers"),
    (torch.randint(0, 3, (4, 3)), torch.tensor([0, 1, 2, 1]), TypeError, "floating point"),
    (torch.randn(4, 3), torch.zeros(4, 3, 2), ValueError, "class indices or"),
])
def test_invalid_inputs_raise_clear_errors(logits, target, err, match):
    with pytest.raises(err, match=match):
        nlfs.Loss("CE", backend="torch")(logits, target)


def test_nan_logits_rejected_when_checking():
    z = torch.randn(3, 4)
    z[1, 2] = float("nan")
    t = torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="NaN"):
        nlfs.Loss("CE", backend="torch", check_finite=True)(z, t)


def test_constants_missing_unknown_and_set_in_place():
    with pytest.raises(ValueError, match="no value for constants"):
        nlfs.Loss("exp(k*p)*y", backend="torch")
    with pytest.raises(ValueError, match="does not occur"):
        nlfs.Loss("NGL", backend="torch", constants={"beta": 1.0})
    m = nlfs.Loss("NGL", backend="torch", constants={"alpha": 0.0})
    z, t = torch.randn(5, 10, dtype=torch.float64), torch.randint(0, 10, (5,))
    before = m(z, t)
    m.set_constants(alpha=2.4092)
    torch.testing.assert_close(m(z, t), nlfs.Loss("NGL", backend="torch")(z, t))
    assert not torch.allclose(before, m(z, t))


def test_unknown_backend_and_bad_reduction():
    with pytest.raises(ValueError, match="unknown backend"):
        nlfs.Loss("CE", backend="nope")(torch.randn(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="reduction"):
        nlfs.Loss("CE", reduction="avg")


def test_an_unknown_backend_is_refused_at_construction_as_at_the_first_call():
    message = "unknown backend 'cuda'; choose one of torch, cpp, triton or 'auto'"
    with pytest.raises(ValueError, match=message) as at_call:
        nlfs.backends.resolve_backend("cuda", torch.device("cpu"))
    with pytest.raises(ValueError) as at_init:
        nlfs.Loss("CE", backend="cuda")  # no call: CE has no ops over classes, so no backend is resolved
    assert str(at_init.value) == str(at_call.value)


def test_auto_backend_works_on_cpu():
    z = torch.randn(4, 5, requires_grad=True)
    t = torch.tensor([0, 1, 2, 3])
    nlfs.Loss("Focal", backend="auto")(z, t).backward()
    torch.testing.assert_close(
        z.grad, torch.autograd.grad(nlfs.Loss("Focal", backend="torch")(z, t), z)[0], rtol=1e-5, atol=1e-6)


def _extreme_logits(c, dtype):
    rows = [torch.linspace(-1e4, 1e4, c), torch.full((c,), 1e4), torch.zeros(c),
            torch.tensor([1e4] + [-1e4] * (c - 1)), torch.tensor([-1e4] + [1e4] * (c - 1)),
            torch.randn(c) * 30]
    return torch.stack(rows).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_protected_rules_keep_catalogue_and_random_losses_finite(dtype):
    c = 5
    exprs = [nlfs.losses.get(n) for n in nlfs.losses.names()]
    rng = random.Random(3)
    for space in ("nlfs", "gp"):
        exprs += [get_space(space).random_expr(rng) for _ in range(scaled(150))]
    exprs += [nlfs.parse(s) for s in ["exp(exp(exp(1/p)))*y", "pdiv(y, p - 1e-7)", "log(0*p)*y",
                                      "sqrt(-p)*y", "(p-1)**-3*y", "bessel_i1(1/(p+1e-30))*y",
                                      "exp(z)*y", "sinh(z)*z*y"]]
    z0 = _extreme_logits(c, dtype)
    targets = [torch.tensor([0, 1, 2, 3, 4, 0]), torch.softmax(torch.randn(6, c, dtype=dtype), 1)]
    for e in exprs:
        m = nlfs.Loss(e, backend="torch")
        for t in targets:
            z = z0.clone().requires_grad_(True)
            loss = m(z, t)
            (g,) = torch.autograd.grad(loss, z)
            assert torch.isfinite(loss) and torch.isfinite(g).all(), f"non-finite for {getattr(e, 'expr', e)}"
