"""Exports of a loss: the readable formula (constants and scale shown), LaTeX that matplotlib's mathtext
renders, SymPy that evaluates to the loss, and standalone PyTorch source that, imported in a process
where nlfs cannot be imported, matches ``nlfs.Loss(..., backend="torch")`` in value and gradient."""

import random
import re
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest
import torch

import nlfs
from nlfs import formula, standalone_source, to_latex, to_sympy, to_torch_source
from nlfs.expr import OPS
from nlfs.expr._latex import SPELLING
from nlfs.expr._sympy import spellings
from nlfs.losses import LossSpec
from nlfs.spaces import GPSpace, NLFSSpace

CATALOGUE = nlfs.losses.names()
SCALED = LossSpec("scaled", nlfs.parse("exp(alpha - p) * y + max(p, 0.3) - sqrt(p - y)"), "element_mean",
                  types.MappingProxyType({"alpha": 0.7}), scale=0.25)


def _random_exprs(count, seed=5):
    """``count`` random expressions from each search space."""
    out = []
    for space in (NLFSSpace(), GPSpace()):
        rng = random.Random(seed)
        out += [space.random_expr(rng) for _ in range(count)]
    return out


def test_every_op_has_a_latex_and_a_sympy_spelling():
    assert set(SPELLING) == set(OPS)
    assert set(spellings()) == set(OPS)


def test_formula_shows_constants_and_scale():
    assert formula("NGL") == "exp(2.409 - p - p * y) - cos(cos(sin(p)))"
    assert formula("NGL", digits=None) == "exp(2.4092 - p - p * y) - cos(cos(sin(p)))"
    assert formula(SCALED) == "0.25 * (exp(0.7 - p) * y + max(p, 0.3) - sqrt(p - y))"
    loss = nlfs.Loss("NGL", constants={"alpha": 1.5})  # an nn.Module: its current constants
    assert formula(loss).startswith("exp(1.5 - p")
    loss.set_constants(alpha=-0.25)
    assert formula(loss).startswith("exp(-0.25 - p")


def test_latex_renders_with_mathtext():
    from matplotlib.mathtext import MathTextParser

    parser = MathTextParser("agg")
    texts = [to_latex(name) for name in CATALOGUE] + [to_latex(SCALED), to_latex(SCALED, digits=3)]
    texts += [to_latex(e) for e in _random_exprs(15)]
    for text in texts:
        parser.parse(f"${text}$", dpi=72)  # raises ValueError on anything mathtext cannot typeset
    assert to_latex("CE") == r"-y \log\left(p\right)"
    assert to_latex(SCALED).startswith(r"0.25 \left(e^{0.7 - p} y")
    assert r"\frac{1}{p + \epsilon}" in to_latex("pinv(p) + y")


def test_sympy_evaluates_to_the_loss():
    """Away from the protected domains (p in [0.05, 0.95]) the SymPy form is the loss."""
    import sympy

    from nlfs.plots import shape

    p = np.linspace(0.05, 0.95, 7)
    elementwise = nlfs.losses.elementwise()  # a loss over classes (NCE) has no one-class shape
    for loss in [*elementwise, SCALED, "plog(p - y) + pdiv(y, p) + aq(p, y) + sigmoid(p) * softplus(y)"]:
        expr = to_sympy(loss)
        spec = nlfs._export.resolve(loss)[0]
        syms = {s.name: s for s in expr.free_symbols}
        fn = sympy.lambdify([syms.get("y", sympy.Symbol("y")), syms.get("p", sympy.Symbol("p")),
                             syms.get("C", sympy.Symbol("C"))], expr, modules=["scipy", "numpy"])
        for y in (0.0, 1.0):
            got = np.broadcast_to(fn(y, p, 10.0), p.shape).astype(float)
            ref = shape(loss, p, y, num_classes=10)[0] * (10 if spec.class_reduction == "element_mean" else 1)
            np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12, err_msg=str(loss))
    assert str(to_sympy(SCALED)).startswith("0.25*") or "0.25" in str(to_sympy(SCALED))


# ---- standalone PyTorch --------------------------------------------------------------------------

_CHILD = textwrap.dedent("""
    import importlib.util, sys
    sys.modules["nlfs"] = None  # any `import nlfs` now raises ImportError
    import torch
    spec = importlib.util.spec_from_file_location("standalone", sys.argv[1])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cases = torch.load(sys.argv[2])
    out = {}
    for name, fn in mod.LOSSES.items():
        res = []
        for logits, target in cases:
            z = logits.clone().requires_grad_(True)
            loss = fn(z, target)
            loss.backward()
            res.append((loss.detach(), z.grad))
        out[name] = res
    torch.save(out, sys.argv[3])
""")


def standalone_cases(c=6, seed=0):
    """Logits in float64 and float32 (with rows that saturate the softmax), index and probability targets."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    for dtype in (torch.float64, torch.float32):
        logits = (torch.randn(7, c, generator=g, dtype=torch.float64) * 3).to(dtype)
        logits[0, 0], logits[1, 1] = 40.0, -40.0
        cases.append((logits, torch.randint(0, c, (7,), generator=g)))
        cases.append((logits, torch.softmax(torch.randn(7, c, generator=g) * 2, 1).to(dtype)))
    return cases


def run_in_process(path, cases, monkeypatch):
    """As ``run_standalone``, in this process with every nlfs import made to fail (cheaper than a
    process that imports torch again)."""
    import importlib.util

    with monkeypatch.context() as m:
        m.setitem(sys.modules, "nlfs", None)
        spec = importlib.util.spec_from_file_location("standalone_under_test", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        out = {}
        for name, fn in mod.LOSSES.items():
            out[name] = []
            for logits, target in cases:
                z = logits.clone().requires_grad_(True)
                loss = fn(z, target)
                loss.backward()
                out[name].append((loss.detach(), z.grad))
    return out


def run_standalone(path, tmp_path, cases):
    """Import the standalone file in a fresh process where nlfs cannot be imported; return, for each
    loss of its LOSSES, (loss, d loss / d logits) per case."""
    torch.save(cases, tmp_path / "cases.pt")
    (tmp_path / "child.py").write_text(_CHILD)
    proc = subprocess.run([sys.executable, str(tmp_path / "child.py"), str(path), str(tmp_path / "cases.pt"),
                           str(tmp_path / "out.pt")], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return torch.load(tmp_path / "out.pt")


def assert_matches_loss(name, loss, results, cases):
    ref_loss = nlfs.Loss(loss, backend="torch")
    for (logits, target), (value, grad) in zip(cases, results):
        z = logits.clone().requires_grad_(True)
        ref = ref_loss(z, target)
        ref.backward()
        tol = 1e-10 if logits.dtype == torch.float64 else 2e-5
        assert value.dtype == ref.dtype, name
        torch.testing.assert_close(value, ref.detach(), rtol=tol, atol=tol, msg=f"{name}: value")
        scale = max(1.0, float(z.grad.abs().max()))
        torch.testing.assert_close(grad, z.grad, rtol=tol, atol=tol * scale, msg=f"{name}: gradient")


def test_standalone_matches_nlfs_loss_without_nlfs(tmp_path, monkeypatch):
    losses = {name: name for name in CATALOGUE}
    losses["scaled"] = SCALED
    losses.update({f"random_{i}": e for i, e in enumerate(_random_exprs(5))})
    path = tmp_path / "standalone.py"
    path.write_text(standalone_source(losses))
    text = path.read_text()
    assert not re.search(r"^\s*(import|from)\s+nlfs", text, re.M)
    cases = standalone_cases()
    results = run_in_process(path, cases, monkeypatch)  # the search report's test runs one in a fresh process
    assert set(results) == set(losses)
    for name, loss in losses.items():
        assert_matches_loss(name, loss, results[name], cases)


def test_to_torch_source_is_one_loss(tmp_path):
    src = to_torch_source(SCALED)
    ns = {}
    exec(compile(src, "<standalone>", "exec"), ns)
    assert list(ns["LOSSES"]) == ["scaled"]
    assert "0.25 * (exp(0.7 - p) * y" in src  # the formula, scale included, in the docstring
    fn = ns["LOSSES"]["scaled"]
    logits, target = torch.randn(4, 5, dtype=torch.float64), torch.tensor([0, 1, 2, 4])
    rows = fn(logits, target, reduction="none")
    ref = nlfs.Loss(SCALED, backend="torch", reduction="none")(logits, target)
    torch.testing.assert_close(rows, ref, rtol=1e-12, atol=1e-12)


def test_unsubstituted_constants_are_refused():
    from nlfs._standalone import module_source

    with pytest.raises(ValueError, match="constant 'alpha'"):
        module_source([("x", nlfs.parse("alpha * p"), "class_sum", "")])


def test_module_options_are_not_silently_dropped():
    with pytest.raises(ValueError, match="label_smoothing"):
        nlfs.Loss("NGL", label_smoothing=0.1).to_torch_source()
    with pytest.raises(ValueError, match="weight"):
        nlfs.Loss("CE", weight=torch.ones(3)).to_torch_source()
    assert "def NGL(" in nlfs.Loss("NGL").to_torch_source()


def test_export_and_module_do_not_import_each_other():
    """nlfs._module uses nlfs._export (Loss.to_latex...); nlfs._export knows a Loss by what it carries."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(nlfs._export.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "_module" not in imported and "nlfs._module" not in imported
    loss = nlfs.Loss("Focal", constants={"gamma": 3.0})
    assert "3" in nlfs.formula(loss)  # an nlfs.Loss still exports with its own constants


def test_an_exported_scale_is_not_rescaled_twice():
    """A candidate trained with grad_scale="ce" was multiplied by a measured factor; its export carries
    that factor as a fixed scale. Trained again with grad_scale="ce", the trainer measures the exported
    (already scaled) loss: the factor it adds is 1, so the loss trains at the same total scale."""
    import dataclasses

    from nlfs.train import rescale_to_ce

    z, t = torch.randn(64, 10, dtype=torch.float64), torch.randint(0, 10, (64,))
    found = nlfs.Loss("-y * log(p) * 0.2 + 0.1 * (1 - p) * y", backend="torch")
    trained, factor = rescale_to_ce(found, z, t)
    assert factor != pytest.approx(1.0)
    exported = nlfs.Loss(dataclasses.replace(found.spec, scale=factor), backend="torch")
    again, extra = rescale_to_ce(exported, z, t)
    assert extra == pytest.approx(1.0) and again.spec.scale == pytest.approx(trained.spec.scale)
    assert exported(z, t).item() == pytest.approx(trained(z, t).item())


def test_an_unknown_or_missing_constant_is_named_as_nlfs_Loss_names_it():
    import nlfs

    for make in (lambda c: nlfs.Loss("Focal", constants=c), lambda c: nlfs.formula("Focal", c)):
        with pytest.raises(ValueError, match="constant 'gama' does not occur"):
            make({"gama": 3.0})
    with pytest.raises(ValueError, match=r"no value for constants \['k'\]"):
        nlfs.formula("-y * log(p) * k")
    assert "3" in nlfs.formula("Focal", {"gamma": 3.0})
