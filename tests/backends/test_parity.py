"""Drop-in parity with ``nn.CrossEntropyLoss`` on every backend: weight, ignore_index,
label_smoothing, (N, C, d1, ..., dk) inputs, the loss's dtype, gradcheck, empty batches, and losses
that do not read the prediction."""

import random

import pytest
import torch
import torch.nn.functional as F

import nlfs
from nlfs.backends import available_backends
from nlfs.spaces import get_space
from tests.conftest import require_backend, scaled

BACKENDS = ["torch", "cpp", "triton"]
CATALOGUE = nlfs.losses.names()


@pytest.fixture(params=BACKENDS)
def backend(request):
    require_backend(request.param)
    return request.param


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _grad(loss, z):
    (g,) = torch.autograd.grad(loss.sum(), z)
    return g


def _check_ce(backend, z, t, reduction="mean", **kw):
    """nlfs CE against nn.CrossEntropyLoss with the same arguments: value, dtype and gradient."""
    z1 = z.clone().requires_grad_(True)
    z2 = z.clone().requires_grad_(True)
    ours = nlfs.Loss("CE", backend=backend, reduction=reduction, **kw)(z1, t)
    theirs = torch.nn.CrossEntropyLoss(reduction=reduction, **kw)(z2, t)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    tol = dict(rtol=1e-11, atol=1e-13)
    torch.testing.assert_close(ours, theirs, **tol, equal_nan=True)
    torch.testing.assert_close(_grad(ours, z1), _grad(theirs, z2), **tol, equal_nan=True)


# ---- the loss's dtype, empty batches, losses that ignore the prediction -------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_ce_float64_tight_and_in_float64(backend, reduction):
    for n, c in [(1, 2), (7, 5), (33, 300)]:
        z = torch.randn(n, c, dtype=torch.float64) * 4
        _check_ce(backend, z, torch.randint(0, c, (n,)), reduction)
        _check_ce(backend, z, torch.softmax(torch.randn(n, c, dtype=torch.float64), 1), reduction)


def test_loss_dtype_is_the_logits_dtype(backend):
    for dtype in (torch.float32, torch.float64):
        z = torch.randn(4, 6, dtype=dtype)
        for reduction in ("mean", "none"):
            assert nlfs.Loss("NGL", backend=backend, reduction=reduction)(z, torch.tensor([0, 1, 2, 5])).dtype == dtype


def test_half_logits_give_a_half_loss_and_fp32_under_autocast():
    z = torch.randn(8, 10).to(torch.bfloat16)
    t = torch.randint(0, 10, (8,))
    m = nlfs.Loss("CE", backend="torch")
    assert m(z, t).dtype == F.cross_entropy(z, t).dtype == torch.bfloat16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert m(z, t).dtype == F.cross_entropy(z, t).dtype == torch.float32


def _gradcheck(name_or_expr, backend, c=4):
    z = torch.randn(3, c, dtype=torch.float64, requires_grad=True)
    for t in (torch.tensor([0, c - 1, 1]), torch.softmax(torch.randn(3, c, dtype=torch.float64), 1)):
        for reduction in ("mean", "none"):
            m = nlfs.Loss(name_or_expr, backend=backend, reduction=reduction)
            assert torch.autograd.gradcheck(lambda x, m=m, t=t: m(x, t), (z,), eps=1e-6, atol=1e-6, rtol=1e-4), \
                (name_or_expr, backend, reduction)


@pytest.mark.parametrize("name", CATALOGUE)
def test_gradcheck_catalogue(backend, name):
    _gradcheck(name, backend)


def _reads_prediction(e):
    return bool({"p", "z"} & set(e.leaves))


def test_gradcheck_random_expressions(backend):
    rng = random.Random(11)
    exprs = []
    while len(exprs) < scaled(4 if backend == "triton" else 12):
        e = get_space(("nlfs", "gp")[len(exprs) % 2]).random_expr(rng)
        # gradcheck's finite differences need a smooth loss near the probe: no kinks of abs/max/sign
        # or the protected floors at eps (where the table's derivative is one-sided)
        text = str(e)
        if _reads_prediction(e) and not any(k in text for k in ("abs", "max", "min", "sign", "p**", "aq")):
            exprs.append(e)
    for e in exprs:
        m = nlfs.Loss(e, backend="torch")
        z = torch.randn(3, 4, dtype=torch.float64)
        if not all(torch.isfinite(m(z, torch.tensor([0, 3, 1])).detach()).flatten()):
            continue
        _gradcheck(e, backend)


def test_empty_batch_is_nan_for_mean_as_torch(backend):
    z = torch.randn(0, 5, dtype=torch.float64, requires_grad=True)
    for t in (torch.zeros(0, dtype=torch.long), torch.zeros(0, 5, dtype=torch.float64)):
        for reduction in ("mean", "sum", "none"):
            ours = nlfs.Loss("CE", backend=backend, reduction=reduction)(z, t)
            theirs = F.cross_entropy(z, t, reduction=reduction)
            torch.testing.assert_close(ours, theirs, equal_nan=True)


@pytest.mark.parametrize("text", ["exp(y) + 1", "y*C", "2.5", "alpha*y"])
def test_a_loss_that_does_not_read_the_prediction_is_refused(backend, text):
    with pytest.raises(ValueError, match="does not read the prediction"):
        nlfs.Loss(text, backend=backend, constants={"alpha": 1.0} if "alpha" in text else None)


# ---- weight, ignore_index, label_smoothing, N-d -------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_ignore_index_skips_rows(backend, reduction):
    n, c = 9, 6
    z = torch.randn(n, c, dtype=torch.float64) * 3
    t = torch.randint(0, c, (n,))
    t[[1, 4, 5]] = -100
    _check_ce(backend, z, t, reduction)
    t2 = t.clone()
    t2[t2 == -100] = 3
    t2[0] = 3
    _check_ce(backend, z, t2, reduction, ignore_index=3)
    _check_ce(backend, z, torch.full((n,), -100), reduction)  # every row ignored: mean is nan


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_weight_and_label_smoothing_as_torch(backend, reduction):
    n, c = 11, 7
    z = torch.randn(n, c, dtype=torch.float64) * 3
    t = torch.randint(0, c, (n,))
    t[2] = -100
    w = torch.rand(c, dtype=torch.float64) + 0.1
    y = torch.softmax(torch.randn(n, c, dtype=torch.float64), 1)
    for kw in (dict(weight=w), dict(label_smoothing=0.2), dict(weight=w, label_smoothing=0.15)):
        _check_ce(backend, z, t, reduction, **kw)
        _check_ce(backend, z, y, reduction, **kw)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_nd_inputs_as_segmentation(backend, reduction):
    z = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    t = torch.randint(0, 5, (2, 3, 4))
    t[0, 1, 2] = -100
    _check_ce(backend, z, t, reduction)
    _check_ce(backend, z, t, reduction, weight=torch.rand(5, dtype=torch.float64) + 0.5, label_smoothing=0.1)
    _check_ce(backend, z, torch.softmax(torch.randn(2, 5, 3, 4, dtype=torch.float64), 1), reduction)
    _check_ce(backend, torch.randn(3, 4, 6, dtype=torch.float64), torch.randint(0, 4, (3, 6)), reduction)


def test_general_expression_weights_are_defined_per_class_term():
    """For any expression: class-index targets weight the row by weight[target]; probability targets
    (or label smoothing) weight each class's term; backends agree."""
    n, c = 6, 5
    z = torch.randn(n, c, dtype=torch.float64)
    t = torch.randint(0, c, (n,))
    w = torch.rand(c, dtype=torch.float64) + 0.1
    rows = nlfs.Loss("NGL", backend="torch", reduction="none")(z, t)
    ours = nlfs.Loss("NGL", backend="torch", weight=w)(z, t)
    torch.testing.assert_close(ours, (rows * w[t]).sum() / w[t].sum())
    y = torch.softmax(torch.randn(n, c, dtype=torch.float64), 1)
    f = torch.exp(2.4092 - torch.softmax(z, 1) * (1 + y)) - torch.cos(torch.cos(torch.sin(torch.softmax(z, 1))))
    torch.testing.assert_close(nlfs.Loss("NGL", backend="torch", weight=w)(z, y), (f * w).mean(1).mean())
    for b in ("cpp", "triton"):
        if available_backends()[b]:
            continue
        for target in (t, y):
            torch.testing.assert_close(nlfs.Loss("NGL", backend=b, weight=w)(z, target),
                                       nlfs.Loss("NGL", backend="torch", weight=w)(z, target))


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="label_smoothing"):
        nlfs.Loss("CE", label_smoothing=1.5)
    with pytest.raises(ValueError, match="weight"):
        nlfs.Loss("CE", weight=torch.ones(2, 2))
    with pytest.raises(ValueError, match="weight has 3 entries for 4 classes"):
        nlfs.Loss("CE", backend="torch", weight=torch.ones(3))(torch.randn(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="target must be"):
        nlfs.Loss("CE", backend="torch")(torch.randn(2, 4, 3), torch.randint(0, 4, (2, 4)))
    with pytest.raises(ValueError, match="out of range"):  # not the ignore_index: still an error
        nlfs.Loss("CE", backend="cpp" if not available_backends()["cpp"] else "torch")(
            torch.randn(2, 4), torch.tensor([0, -1]))


def test_triton_out_of_range_target_is_a_nan_row_not_a_count():
    require_backend("triton")
    z = torch.randn(3, 5)
    loss = nlfs.Loss("CE", backend="triton", reduction="none", check_finite=False)
    k = loss.kernel_for(z.device)[1]
    rows, grad = k(z, torch.tensor([0, 7, -100]), loss.constants)
    assert torch.isfinite(rows[0]) and torch.isnan(rows[1]) and rows[2] == 0
    assert torch.isnan(grad[1]).all() and (grad[2] == 0).all()
