import pytest
import torch

from nlfs.expr import parse
from nlfs.search import _filters as F

NONE = torch.zeros(0, dtype=torch.float64)


def test_validity_rejects_zero_gradient_and_passes_ce():
    assert not F.validity(parse("sign(p) * y"), "class_sum", NONE).passed
    assert not F.validity(parse("y * 3"), "class_sum", NONE).passed
    assert F.validity(parse("-y * log(p)"), "class_sum", NONE).passed


def test_validity_reports_exceptions_as_rejections():
    out = F.validity(parse("k * p * y"), "class_sum", NONE)  # constant without a value
    assert not out.passed and out.stage == "validity" and "raised" in out.reason


def test_integrity_flips_orientation():
    out = F.integrity(parse("p * y"), "class_sum", NONE)  # rewards the true class when negated
    assert out.passed and out.sign == -1.0
    out = F.integrity(parse("-y * log(p)"), "class_sum", NONE)
    assert out.passed and out.sign == 1.0
    assert abs(out.phenotype[0]) < 1e-6 and abs(out.phenotype[-1] - 1) < 1e-6


def test_integrity_rejects_the_papers_bad_shapes():
    assert "q = 0.5" in F.integrity(parse("(p - 0.5)**2 * y"), "class_sum", NONE).reason
    assert "direction changes" in F.integrity(parse("sin(40 * p) * y"), "class_sum", NONE).reason
    assert "flat" in F.integrity(parse("max(p, 2) * y"), "class_sum", NONE).reason
    assert "flat steps" in F.integrity(parse("max(p, 0.3) * y"), "class_sum", NONE).reason


def test_phenotype_distance_finds_rescaled_equivalents():
    a = F.integrity(parse("-y * log(p)"), "class_sum", NONE).phenotype
    b = F.integrity(parse("-3 * y * log(p) + 1"), "class_sum", NONE).phenotype
    c = F.integrity(parse("p * y"), "class_sum", NONE).phenotype
    assert F.phenotype_distance(a, b) < 1e-6
    assert F.phenotype_distance(a, c) > 0.01


def test_fingerprint_identifies_equal_gradients_only():
    f = lambda s: F.fingerprint(parse(s), "class_sum", NONE)
    assert f("-y * log(p)") == f("-log(p) * y + 0 * p + 3")
    assert f("-y * log(p)") != f("-2 * y * log(p)")
    assert f("-y * log(p)") != f("-y * log(p + 0.01)")


def test_rejection_test_rejects_a_loss_that_unlearns():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 4
    x = torch.randn(200, 6, generator=g) + torch.nn.functional.one_hot(y, 6).float() * 3
    good = F.rejection_test(parse("-y * log(p)"), "class_sum", NONE, 1.0, x, y)
    bad = F.rejection_test(parse("p * y"), "class_sum", NONE, 1.0, x, y)
    assert good.passed
    assert not bad.passed and bad.stage == "rejection"


def test_known_family_finds_a_catalogue_loss_at_other_constants():
    from nlfs.search import known_family

    name, consts = known_family("-(y * sqrt(p))")  # (1 - p^q) / q at q = 0.5, up to a factor and a constant
    assert name == "GCE" and consts["q"] == pytest.approx(0.5, abs=1e-4)
    name, consts = known_family("-(1 - p) ** g * y * log(p)", {"g": 1.5})
    assert name == "Focal" and consts["gamma"] == pytest.approx(1.5, abs=1e-4)
    assert known_family("y * sqrt(p)") is None  # the same shape ascended: not the same loss
    assert known_family("-y * log(p) + 0.3 * p * y")[0] == "Poly1"  # eps -0.3, as a search found it
    assert known_family("-y * log(p) + 0.3 * y * sin(3 * p)") is None  # no catalogue loss at any constants
