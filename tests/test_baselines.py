"""The noisy-label baselines of the catalogue (GCE, MAE, Taylor-CE, SCE, NCE+RCE, label smoothing) against
references written here in plain torch from each paper's formula (logits and class-index targets in,
mean over the batch, no nlfs code): loss value and gradient wrt the logits, at the catalogue's default
constants, on every backend that runs here (triton under TRITON_INTERPRET=1 without a GPU). NCE sums
over the classes inside the loss (``sum_classes``): the fused backends evaluate it whole rows at a time,
and ``backend="auto"`` picks them for it as for any other loss."""

import pytest
import torch
import torch.nn.functional as F

import nlfs
from tests.conftest import require_backend

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BACKENDS = ["torch", "cpp", "triton"]


def _pt(z, t):
    return torch.softmax(z, 1).gather(1, t[:, None])[:, 0]


# Written from the papers, per sample, then the batch mean the catalogue's class_sum reduction uses.
def gce(z, t, q=0.7):  # Zhang & Sabuncu 2018, eq. (6): (1 - f_j(x)^q) / q
    return ((1 - _pt(z, t) ** q) / q).mean()


def mae(z, t):  # Ghosh et al. 2017: ||e_j - f(x)||_1 = 2 - 2 f_j(x)
    return (F.one_hot(t, z.shape[1]).to(z.dtype) - torch.softmax(z, 1)).abs().sum(1).mean()


def taylor_ce(z, t, order=2):  # Feng et al. 2020: sum_{i=1..t} (1 - p_t)^i / i
    u = 1 - _pt(z, t)
    return sum(u ** i / i for i in range(1, order + 1)).mean()


def sce(z, t, a=0.1, b=1.0):  # Wang et al. 2019: a*CE + b*RCE, log 0 := ln(1e-4) as in the official code
    p = torch.softmax(z, 1)
    y = F.one_hot(t, z.shape[1]).to(z.dtype).clamp(1e-4, 1.0)
    rce = -(p * torch.log(y)).sum(1)
    return (a * F.cross_entropy(z, t, reduction="none") + b * rce).mean()


def nce_rce(z, t, a=1.0, b=1.0):  # Ma et al. 2020: a*NCE + b*RCE, NCE = -log p_t / sum_k(-log p_k)
    logp = F.log_softmax(z, 1)
    nce = -logp.gather(1, t[:, None])[:, 0] / (-logp.sum(1))
    y = F.one_hot(t, z.shape[1]).to(z.dtype).clamp(1e-4, 1.0)
    rce = -(torch.softmax(z, 1) * torch.log(y)).sum(1)
    return (a * nce + b * rce).mean()


def label_smoothing(z, t, a=0.1):  # Szegedy et al. 2016, as torch's own label_smoothing
    return F.cross_entropy(z, t, label_smoothing=a)


REFERENCES = {"GCE": gce, "MAE": mae, "TaylorCE": taylor_ce, "SCE": sce, "NCEandRCE": nce_rce,
              "LabelSmoothingCE": label_smoothing}
DEFAULTS = {"GCE": {"q": 0.7}, "MAE": {}, "TaylorCE": {}, "SCE": {"a": 0.1, "b": 1.0},
            "NCEandRCE": {"a": 1.0, "b": 1.0}, "LabelSmoothingCE": {"a": 0.1}}


@pytest.fixture(params=BACKENDS)
def backend(request):
    require_backend(request.param)
    return request.param


def _value_and_grad(fn, z, t):
    z = z.clone().requires_grad_(True)
    loss = fn(z, t)
    (g,) = torch.autograd.grad(loss, z)
    return loss.detach(), g


def test_catalogue_defaults_are_the_papers():
    for name, consts in DEFAULTS.items():
        assert dict(nlfs.losses.get(name).constants) == consts, name
        assert nlfs.losses.get(name).class_reduction == "class_sum", name
        assert nlfs.losses.get(name).source, name


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_baseline_matches_paper_reference(name, backend):
    g = torch.Generator().manual_seed(3)
    ref = REFERENCES[name]
    for n, c in [(1, 2), (9, 10), (40, 100)]:
        z = torch.randn(n, c, dtype=torch.float64, generator=g) * 3
        t = torch.randint(0, c, (n,), generator=g)
        want, want_grad = _value_and_grad(ref, z, t)
        got, got_grad = _value_and_grad(nlfs.Loss(name, backend=backend), z, t)
        tol = dict(rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(got.to(torch.float64), want, **tol, msg=f"{name} loss on {backend}")
        torch.testing.assert_close(got_grad, want_grad, **tol, msg=f"{name} gradient on {backend}")


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_baseline_float32_close_to_reference(name, backend):
    z = torch.randn(64, 10) * 2
    t = torch.randint(0, 10, (64,))
    want, want_grad = _value_and_grad(REFERENCES[name], z.double(), t)
    got, got_grad = _value_and_grad(nlfs.Loss(name, backend=backend), z, t)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_grad.double(), want_grad, rtol=1e-4, atol=1e-6)


def test_gce_at_other_q_and_its_limits():
    """q is a tunable constant; q -> 0 approaches CE and q = 1 is 1 - p_t (half of MAE)."""
    z = torch.randn(8, 5, dtype=torch.float64)
    t = torch.randint(0, 5, (8,))
    for q in (0.3, 1.0):
        torch.testing.assert_close(nlfs.Loss("GCE", backend="torch", constants={"q": q})(z, t), gce(z, t, q))
    torch.testing.assert_close(nlfs.Loss("GCE", backend="torch", constants={"q": 1.0})(z, t),
                               nlfs.Loss("MAE", backend="torch")(z, t) / 2)
    torch.testing.assert_close(nlfs.Loss("GCE", backend="torch", constants={"q": 1e-6})(z, t),
                               F.cross_entropy(z, t), rtol=1e-4, atol=1e-5)


def test_label_smoothing_eps_is_a_tunable_constant():
    """nlfs.tune tunes a loss's named constants: label smoothing's eps is one (``a``), and a value other
    than the default is the loss with that smoothing."""
    from nlfs.tune import _spec_of

    spec, start = _spec_of("LabelSmoothingCE", {"a": 0.25})
    assert start == {"a": 0.25} and spec.expr.constants == ("a",)
    z = torch.randn(6, 7, dtype=torch.float64)
    t = torch.randint(0, 7, (6,))
    torch.testing.assert_close(nlfs.Loss("LabelSmoothingCE", backend="cpp", constants={"a": 0.25})(z, t),
                               label_smoothing(z, t, 0.25))


def test_auto_runs_a_loss_over_classes_on_the_fused_backend():
    z = torch.randn(5, 4, dtype=torch.float64)
    t = torch.randint(0, 4, (5,))
    module = nlfs.Loss("NCE+RCE")  # an alias
    fused = not nlfs.backends.available_backends()["cpp"]
    assert module.kernel_for(z.device)[0].name == ("cpp" if fused else "torch")
    torch.testing.assert_close(module(z, t), nce_rce(z, t))
    if fused:  # an elementwise loss gets the same fused kernel
        assert nlfs.Loss("CE").kernel_for(z.device)[0].name == "cpp"


def test_nce_alone_from_sum_classes_matches_its_paper(backend):
    """NCE (Ma et al. 2020, eq. 2) written with sum_classes, for probability targets too: sum_k y_k log p_k
    over sum_k log p_k; value and gradient."""
    for n, c in [(6, 5), (3, 300)]:  # 300 classes: the C++ evaluator's whole rows past its chunk
        z = torch.randn(n, c, dtype=torch.float64) * 2
        y = torch.softmax(torch.randn(n, c, dtype=torch.float64), 1)
        module = nlfs.Loss("-y * log(p) / sum_classes(-log(p))", backend=backend, reduction="none")

        def paper(z):
            logp = F.log_softmax(z, 1)
            return (y * logp).sum(1) / logp.sum(1)

        got, got_grad = _value_and_grad(lambda z, t: module(z, t).sum(), z, y)
        want, want_grad = _value_and_grad(lambda z, t: paper(z).sum(), z, y)
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(got_grad, want_grad, rtol=1e-9, atol=1e-12)
