"""Each catalogue loss against an independent NumPy float64 implementation written from its
published formula, gradcheck in float64, and the registration API."""

import json

import numpy as np
import pytest
import torch

import nlfs
from nlfs import losses

from .conftest import scaled


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _log_softmax(z):
    m = z.max(1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(1, keepdims=True))


# Written from the formulas in the papers/implementations, not from nlfs's expressions.
def ce(z, y):
    return -(y * _log_softmax(z)).sum(1)


def label_smoothed_ce(z, y, a=0.1):
    c = z.shape[1]
    return -(((1 - a) * y + a / c) * _log_softmax(z)).sum(1)


def focal(z, y, gamma=2.0):
    p = _softmax(z)
    return -(y * (1 - p) ** gamma * _log_softmax(z)).sum(1)


def poly1(z, y, epsilon=2.0):
    pt = (_softmax(z) * y).sum(1)
    return -(y * _log_softmax(z)).sum(1) + epsilon * (1 - pt)


def baikal(z, y):
    p = _softmax(z)
    return -(np.log(p + 1e-7) - y / (p + 1e-7)).sum(1)


def ngl(z, y, alpha=2.4092):
    p = _softmax(z)
    return (np.exp(alpha - p - p * y) - np.cos(np.cos(np.sin(p)))).mean(1)


def sce(z, y, a=0.1, b=1.0):
    p = _softmax(z)
    rce = -(p * np.log(np.clip(y, 1e-4, 1.0))).sum(1)
    return a * ce(z, y) + b * rce


def taylorglo(z, y, t):
    p = _softmax(z)
    t0, t1, t2, t3, t4, t5, t6, t7 = t
    f = (t2 * (y - t1) + t3 / 2 * (y - t1) ** 2 + t4 / 6 * (y - t1) ** 3 + t5 * (p - t0) * (y - t1)
         + t6 / 2 * (p - t0) * (y - t1) ** 2 + t7 / 2 * (p - t0) ** 2 * (y - t1))
    return f.sum(1)


def gce(z, y, q=0.7):
    return (y * (1 - _softmax(z) ** q) / q).sum(1)


def mae(z, y):
    return np.abs(y - _softmax(z)).sum(1)


def taylor_ce(z, y):
    u = 1 - _softmax(z)
    return (y * (u + u ** 2 / 2)).sum(1)


def nce_rce(z, y, a=1.0, b=1.0):
    logp = _log_softmax(z)
    rce = -(_softmax(z) * np.log(np.clip(y, 1e-4, 1.0))).sum(1)
    return a * (y * logp).sum(1) / logp.sum(1) + b * rce


THETA = [0.3, -0.2, 0.7, -1.1, 0.4, -0.9, 0.6, 0.25]
CASES = {
    "CE": (ce, {}),
    "LabelSmoothingCE": (label_smoothed_ce, {"a": 0.2}),
    "Focal": (focal, {"gamma": 2.0}),
    "Poly1": (poly1, {"epsilon": 1.5}),
    "Baikal": (baikal, {}),
    "NGL": (ngl, {"alpha": 2.4092}),
    "SCE": (sce, {"a": 0.1, "b": 1.0}),
    "TaylorGLO": (lambda z, y, **k: taylorglo(z, y, [k[f"t{i}"] for i in range(8)]),
                  {f"t{i}": v for i, v in enumerate(THETA)}),
    "GCE": (gce, {"q": 0.5}),
    "MAE": (mae, {}),
    "TaylorCE": (taylor_ce, {}),
    "NCEandRCE": (nce_rce, {"a": 1.0, "b": 0.5}),
}


def test_every_catalogue_loss_has_a_numpy_reference():
    assert sorted(CASES) == sorted(losses.BUILTIN)
    assert set(losses.BUILTIN) <= set(losses.names())


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("prob_targets", [False, True])
def test_catalogue_matches_independent_numpy(name, prob_targets):
    fn, consts = CASES[name]
    rng = np.random.default_rng(1)
    for n, c in [(1, 2), (7, 10), (33, 100)]:
        z = rng.standard_normal((n, c)) * 3
        if prob_targets:
            y = _softmax(rng.standard_normal((n, c)) * 2)
            target = torch.tensor(y)
        else:
            idx = rng.integers(0, c, n)
            y = np.eye(c)[idx]
            target = torch.tensor(idx)
        module = nlfs.Loss(name, backend="torch", reduction="none", constants=consts)
        got = module(torch.tensor(z), target).numpy()
        np.testing.assert_allclose(got, fn(z, y, **consts), rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("name", sorted(CASES))
def test_catalogue_gradcheck_float64(name):
    _, consts = CASES[name]
    module = nlfs.Loss(name, backend="torch", constants=consts)
    z = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    for target in (torch.tensor([0, 3, 4, 1]), torch.softmax(torch.randn(4, 5, dtype=torch.float64), 1)):
        assert torch.autograd.gradcheck(lambda x: module(x, target), (z,), eps=1e-6, atol=1e-6)


def test_register_by_string_with_reduction():
    spec = losses.register("MyLoss_test", "exp(-k*p) * y", class_reduction="element_mean",
                           constants={"k": 3.0}, source="unit test")
    assert losses.get("myloss-test") is spec
    m = nlfs.Loss("MyLoss_test", backend="torch", reduction="none")
    z = torch.randn(3, 4, dtype=torch.float64)
    t = torch.tensor([0, 1, 2])
    p = torch.softmax(z, 1)
    expected = (torch.exp(-3 * p) * torch.nn.functional.one_hot(t, 4)).mean(1)
    torch.testing.assert_close(m(z, t), expected)
    with pytest.raises(ValueError, match="already registered"):
        losses.register("MyLoss_test", "p*y")
    with pytest.raises(ValueError, match="no default value"):
        losses.register("Other_test", "k*p*y")


def test_unknown_loss_name_lists_known():
    with pytest.raises(KeyError, match="NGL"):
        losses.get("NotALoss")


def _random_exprs(space, n, seed):
    import random

    rng = random.Random(seed)
    return [space.random_expr(rng) for _ in range(n)]


@pytest.mark.parametrize("space_name", ["nlfs", "gp"])
def test_gradcheck_random_expressions_from_each_space(space_name):
    from nlfs.spaces import get_space

    space = get_space(space_name)
    exprs = _random_exprs(space, scaled(200), seed=11)
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(3, 4, dtype=torch.float64, generator=g) * 2
    target = torch.tensor([0, 3, 1])
    checked = 0
    for e in exprs:
        module = nlfs.Loss(e, backend="torch")
        # Kinks of protected ops (|x| = eps, clamps, ties) are measure zero: when finite differences
        # straddle one, retry at a perturbed point instead of loosening the check. Round-off in
        # the finite differences grows with the loss value, so atol scales with it.
        for attempt in range(3):
            zz = (z0 + 0.05 * attempt * torch.randn(z0.shape, dtype=torch.float64, generator=g))
            scale = max(1.0, float(module(zz, target).abs()))
            zz.requires_grad_(True)
            try:
                ok = torch.autograd.gradcheck(lambda x: module(x, target), (zz,), eps=1e-6,
                                              atol=1e-6 * scale, rtol=1e-4, raise_exception=False)
            except RuntimeError:
                ok = False
            if ok:
                break
        assert ok, f"gradcheck failed for {e}"
        checked += 1
    assert checked == len(exprs)


def _check_found(name):
    import torch

    spec = nlfs.losses.get(name)
    z = torch.randn(16, 10, dtype=torch.float64)
    t = torch.randint(0, 10, (16,))
    soft = torch.softmax(torch.randn(16, 10, dtype=torch.float64), 1)
    ref = nlfs.Loss(name, backend="torch")
    for backend in ("cpp", "torch"):
        for target in (t, soft):
            za, zb = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
            a, b = nlfs.Loss(name, backend=backend)(za, target), ref(zb, target)
            a.backward()
            b.backward()
            assert torch.allclose(a, b, rtol=1e-9, atol=1e-12) and torch.allclose(za.grad, zb.grad, rtol=1e-8,
                                                                                     atol=1e-12)
    return spec


@pytest.mark.parametrize("name", nlfs.losses.found() or ["(none found yet)"])
def test_shipped_found_losses_build_on_every_cpu_backend(name):
    if name == "(none found yet)":
        assert json.loads(nlfs.losses.FOUND_FILE.read_text()) == []  # nothing listed, nothing lost
        return
    spec = _check_found(name)
    prov = nlfs.losses.provenance(name)
    assert prov.get("search_run") and prov.get("results") and spec.source


def test_found_losses_carry_constants_scale_and_provenance(tmp_path):
    path = tmp_path / "found.json"
    path.write_text(json.dumps([{"name": "test_found_a", "expression": "-y * log(p) + c * y * (1 - p)",
                                 "constants": {"c": 0.7}, "scale": 2.5,
                                 "provenance": {"search_run": "runs/x", "results": "bench/results/y.md"}}]))
    try:
        assert nlfs.losses.load_found(path) == ["test_found_a"]
        assert "test_found_a" in nlfs.losses.found()
        spec = _check_found("test_found_a")
        assert spec.scale == 2.5 and dict(spec.constants) == {"c": 0.7} and "runs/x" in spec.source
        import torch

        z, t = torch.randn(8, 10, dtype=torch.float64), torch.randint(0, 10, (8,))
        plain = nlfs.Loss("-y * log(p) + 0.7 * y * (1 - p)", backend="torch")(z, t)
        assert nlfs.Loss("test_found_a", backend="cpp")(z, t).item() == pytest.approx(2.5 * plain.item())
        assert nlfs.losses.provenance("test_found_a")["results"] == "bench/results/y.md"
    finally:
        nlfs.losses._FOUND.pop("test_found_a", None)


def test_loss_spec_pickles_with_constants_and_scale():
    # worker processes (transfer --workers, spawn) receive specs by pickle
    import pickle
    from types import MappingProxyType

    spec = losses.LossSpec("w", nlfs.parse("-y * log(p) * c0"), "element_mean",
                                MappingProxyType({"c0": 1.5}), "src", 0.25)
    back = pickle.loads(pickle.dumps(spec))
    assert back == spec and isinstance(back.constants, MappingProxyType) and back.scale == 0.25


def test_register_refuses_a_different_loss_under_a_taken_name():
    """Two exports under one name no longer replace each other silently (issue #24); the same loss again
    is fine, and overwrite=True is how one asks."""
    try:
        first = losses.register("test_taken#1", "-y * log(p) * c", constants={"c": 2.0}, scale=0.5)
        assert losses.register("test_taken#1", "-y * log(p) * c", constants={"c": 2.0}, scale=0.5) is first
        for other in (dict(constants={"c": 3.0}, scale=0.5), dict(constants={"c": 2.0}, scale=1.0),
                      dict(constants={"c": 2.0}, scale=0.5, class_reduction="element_mean")):
            with pytest.raises(ValueError, match="different loss named 'test_taken#1'"):
                losses.register("test_taken#1", "-y * log(p) * c", **other)
        assert losses.register("test_taken#1", "p * y", overwrite=True).text == "p * y"
        assert nlfs.Loss("test_taken#1").spec.text == "p * y"  # the label itself is the registered name
    finally:
        losses._CATALOGUE.pop(losses._key("test_taken#1"), None)


@pytest.mark.parametrize("name,hint", [("NGLL", "NGL"), ("Poyl1", "Poly1"), ("focall", "Focal")])
def test_unknown_loss_names_suggest_the_closest(name, hint):
    with pytest.raises(ValueError, match=f"unknown loss '{name}'; did you mean {hint}"):
        nlfs.Loss(name)
    with pytest.raises(KeyError, match=f"unknown loss '{name}'; did you mean {hint}"):
        losses.get(name)
    from nlfs.search import SearchConfig
    from nlfs.search._config import check_search
    from nlfs.train import ConfigError

    with pytest.raises(ConfigError, match=f"did you mean {hint}"):  # --seed-losses NGLL
        check_search(SearchConfig(algorithm="gp", space="gp", seed_losses=(name,)))
    assert nlfs.Loss("p").spec.text == "p" and nlfs.Loss("-y*log(p)").spec.text == "-y * log(p)"


def test_catalogue_names_ignore_surrounding_whitespace():
    assert nlfs.Loss("Focal ").spec is losses.get("Focal") and nlfs.Loss(" Focal ").spec.name == "Focal"
    assert losses.get("\tNGL\n").name == "NGL" and losses.is_registered(" CE ")
    with pytest.raises(ValueError, match="^unknown loss 'NGLL '; did you mean NGL"):  # the name as given
        nlfs.Loss("NGLL ")


def test_names_of_a_found_loss():
    assert losses.loss_label("disc-nlfs", 1603) == "disc-nlfs#1603"
    assert losses.loss_label("r", 7, tuned=True) == "r#7-tuned"
    assert losses.python_name("disc-nlfs#1603") == "disc_nlfs_1603"
    assert losses.python_name("20261206_110838#200") == "loss_20261206_110838_200"
    assert losses.python_name("r#7-tuned").isidentifier()


def test_losses_files_of_every_tool_are_read(tmp_path):
    """finalists.json (found_losses format), elimination.json and tuned.json give the same entries;
    anything else is one clear line, not a KeyError."""
    run = tmp_path / "myrun"
    run.mkdir()
    (run / "elimination.json").write_text(json.dumps({"survivors": [
        {"label": "myrun#4", "expression": "-y * log(p) * c0", "constants": {"c0": 1.5}, "reduction": "class_sum",
         "scale": 0.25}]}))
    (run / "tuned.json").write_text(json.dumps([
        {"id": 4, "name": "myrun#4", "tuned_name": "myrun#4-tuned", "expression": "-y * log(p) * c0",
         "best_constants": {"c0": 1.7}, "initial_constants": {"c0": 1.5}, "scale": 0.3},
        {"id": 5, "name": "myrun#5", "expression": "p", "best_constants": None, "nothing_to_tune": True}]))
    (run / "bad.json").write_text(json.dumps({"rounds": []}))
    got = losses.read_losses_file(run / "elimination.json")
    assert [(e["name"], e["constants"], e["scale"]) for e in got] == [("myrun#4", {"c0": 1.5}, 0.25)]
    got = losses.read_losses_file(run / "tuned.json")
    assert [(e["name"], e["constants"], e["scale"]) for e in got] == [("myrun#4-tuned", {"c0": 1.7}, 0.3)]
    with pytest.raises(ValueError, match="is not a list of losses") as err:
        losses.read_losses_file(run / "bad.json")
    assert "\n" not in str(err.value)


def test_overwriting_an_alias_gives_the_name_the_new_loss_and_leaves_the_published_one():
    """``register("poly", ..., overwrite=True)``: "poly" was Poly-1's alias; now it names the new loss,
    and Poly1 stays as published."""
    from nlfs import losses

    published = losses.get("Poly1")
    try:
        with pytest.raises(ValueError, match="a different loss named 'poly'"):
            losses.register("poly", "-y * log(p) + 5 * y * (1 - p)")
        mine = losses.register("poly", "-y * log(p) + 5 * y * (1 - p)", overwrite=True)
        assert losses.get("poly") is mine and losses.get("Poly1") is published
        assert losses.get("poly_1") is published
    finally:
        losses._CATALOGUE.pop("poly", None)
        losses._ALIASES["poly"] = "poly1"
