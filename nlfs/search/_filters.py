"""Cheap rejection filters, run in order before any training.

1. validity: finite loss and gradient on fixed probe logits, extreme ones included;
2. duplicate: the canonical form was seen before;
3. integrity: the NLFS paper's 2-class shape check, with the orientation flip; its normalised curve
   (the phenotype) within ``phenotype_tol`` of a known one is a duplicate too;
4. fingerprint: the gradient on a fixed random batch, rounded and hashed; equal fingerprints reuse
   a known fitness instead of training;
5. rejection test (EvoMAL): a few gradient steps with the loss on a fresh linear model must raise
   its accuracy on a training sample.

``known_twin`` uses the same canonical forms and fingerprints to name a known loss in disguise.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import torch

from ..backends import TorchKernel
from ..expr import Expr, lower, parse

STAGES = ("validity", "duplicate", "integrity", "fingerprint", "rejection")


@dataclass
class FilterOutcome:
    passed: bool
    stage: str = ""
    reason: str = ""
    sign: float = 1.0
    phenotype: np.ndarray | None = None
    fingerprint: str = ""


def _kernel(expr: Expr, class_reduction: str):
    return TorchKernel(lower(expr, class_reduction), compute_dtype=torch.float64)


_NO_CONSTANTS = torch.zeros(0, dtype=torch.float64)


def _probe_logits(c: int = 10) -> torch.Tensor:
    g = torch.Generator().manual_seed(1234)
    rows = [torch.randn(16, c, generator=g, dtype=torch.float64) * 3,
            torch.linspace(-1e4, 1e4, c, dtype=torch.float64)[None],
            torch.zeros(1, c, dtype=torch.float64),
            torch.tensor([[1e4] + [-1e4] * (c - 1)], dtype=torch.float64),
            torch.tensor([[-1e4] + [1e4] * (c - 1)], dtype=torch.float64)]
    return torch.cat(rows)


def loss_and_grad(expr: Expr, class_reduction: str, logits: torch.Tensor, target: torch.Tensor,
                  constants: torch.Tensor = _NO_CONSTANTS):
    z = logits.clone().requires_grad_(True)
    rows = _kernel(expr, class_reduction)(z, target, constants)
    (g,) = torch.autograd.grad(rows.sum(), z)
    return rows.detach(), g


def validity(expr: Expr, class_reduction: str, constants: torch.Tensor) -> FilterOutcome:
    z = _probe_logits()
    target = torch.arange(z.shape[0]) % z.shape[1]
    try:
        rows, g = loss_and_grad(expr, class_reduction, z, target, constants)
    except Exception as err:  # a broken candidate must never crash a search
        return FilterOutcome(False, "validity", f"evaluation raised {type(err).__name__}: {err}")
    if not torch.isfinite(rows).all() or not torch.isfinite(g).all():
        return FilterOutcome(False, "validity", "non-finite loss or gradient on probe logits")
    if g.abs().max() == 0:
        return FilterOutcome(False, "validity", "gradient is identically zero")
    return FilterOutcome(True)


def integrity_curve(expr: Expr, class_reduction: str, constants: torch.Tensor, points: int = 1000) -> np.ndarray:
    """Loss on the 2-class grid p = (q, 1-q), true class 1, q from ~0 (right) to ~1 (wrong)."""
    q = (torch.arange(points, dtype=torch.float64) + 0.5) / points
    z = torch.stack([torch.log(q), torch.log1p(-q)], dim=1)
    target = torch.ones(points, dtype=torch.long)
    rows = _kernel(expr, class_reduction)(z, target, constants)
    return rows.detach().numpy()


def integrity(expr: Expr, class_reduction: str, constants: torch.Tensor, flat_tol: float = 1e-9,
              max_flat: int = 10, max_turns: int = 2) -> FilterOutcome:
    """The NLFS paper's check: reject an extremum near q = 0.5 (indices 490-510), more than
    ``max_flat`` flat steps, an all-flat curve, or more than ``max_turns`` direction changes; flip
    the sign so the loss is lowest for the right prediction."""
    curve = integrity_curve(expr, class_reduction, constants)
    if not np.isfinite(curve).all():
        return FilterOutcome(False, "integrity", "non-finite loss on the 2-class grid")
    diffs = np.diff(curve)
    scale = max(1.0, float(np.abs(curve).max()))
    flat = np.abs(diffs) <= flat_tol * scale
    if flat.all():
        return FilterOutcome(False, "integrity", "flat loss curve")
    if int(flat.sum()) > max_flat:
        return FilterOutcome(False, "integrity", f"{int(flat.sum())} flat steps (> {max_flat})")
    signs = np.sign(diffs[~flat])
    turns = int((signs[1:] != signs[:-1]).sum())
    if turns > max_turns:
        return FilterOutcome(False, "integrity", f"{turns} direction changes (> {max_turns})")
    lo, hi = int(np.argmin(curve)), int(np.argmax(curve))
    if 490 <= lo <= 510 or 490 <= hi <= 510:
        return FilterOutcome(False, "integrity", "extremum near q = 0.5")
    sign = 1.0 if curve[-1] > curve[0] else -1.0
    oriented = sign * curve
    span = oriented.max() - oriented.min()
    phenotype = (oriented - oriented.min()) / span
    return FilterOutcome(True, sign=sign, phenotype=phenotype.astype(np.float32))


def phenotype_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a.astype(np.float64) - b) ** 2)))


def _probe_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed random batch (logits, targets) every gradient fingerprint is taken on."""
    g = torch.Generator().manual_seed(99)
    z = torch.randn(32, 10, generator=g, dtype=torch.float64) * 2
    return z, torch.randint(0, 10, (32,), generator=g)


def fingerprint(expr: Expr, class_reduction: str, constants: torch.Tensor, sign: float = 1.0,
                digits: int = 5, normalise: bool = False) -> str:
    """Hash of the gradient on a fixed random batch, rounded to ``digits`` significant digits;
    ``normalise``: divided by its mean magnitude first (losses equal up to a factor print alike)."""
    z, target = _probe_batch()
    _, grad = loss_and_grad(expr, class_reduction, z, target, constants)
    arr = (sign * grad).numpy()
    if normalise:
        mag = float(np.abs(arr).mean())
        arr = arr / mag if mag > 0 and np.isfinite(mag) else arr
    rounded = np.array([float(f"{v:.{digits - 1}e}") for v in arr.ravel()]) + 0.0  # -0.0 -> 0.0
    return hashlib.sha256(rounded.tobytes()).hexdigest()[:32]


def rejection_test(expr: Expr, class_reduction: str, constants: torch.Tensor, sign: float, x: torch.Tensor,
                   y: torch.Tensor, steps: int = 20, lr: float = 0.5, min_gain: float = 0.02,
                   seed: int = 0) -> FilterOutcome:
    """EvoMAL's rejection protocol: train a fresh linear model on a sample for ``steps`` SGD steps
    with the candidate loss; reject when training accuracy did not rise by ``min_gain``."""
    torch.manual_seed(seed)
    feats = x.reshape(x.shape[0], -1).double()
    feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-6)
    classes = int(y.max()) + 1
    w = torch.zeros(feats.shape[1], classes, dtype=torch.float64, requires_grad=True)
    kernel = _kernel(expr, class_reduction)

    def acc():
        return float(((feats @ w).argmax(1) == y).double().mean())

    start = acc()
    opt = torch.optim.SGD([w], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = sign * kernel(feats @ w, y, constants).mean()
        if not torch.isfinite(loss):
            return FilterOutcome(False, "rejection", "non-finite loss during the rejection test")
        loss.backward()
        opt.step()
    end = acc()
    if end < start + min_gain:
        return FilterOutcome(False, "rejection", f"accuracy {start:.3f} -> {end:.3f} after {steps} steps")
    return FilterOutcome(True, reason=f"accuracy {start:.3f} -> {end:.3f}")


def cheap_filters(expr: Expr, class_reduction: str, x: torch.Tensor, y: torch.Tensor,
                  constants: torch.Tensor = _NO_CONSTANTS) -> tuple[FilterOutcome, Expr]:
    """Validity, integrity and the rejection test on one expression, outside a run (no memory of
    duplicates): -> (outcome, the oriented expression to train)."""
    out = validity(expr, class_reduction, constants)
    if not out.passed:
        return out, expr
    out = integrity(expr, class_reduction, constants)
    if not out.passed:
        return out, expr
    oriented = expr if out.sign > 0 else Expr("neg", (expr,))
    rej = rejection_test(oriented, class_reduction, constants, 1.0, x, y)
    return (rej if not rej.passed else out), oriented


_TWINS: dict = {}  # (normalise, seed losses) -> {canonical text or fingerprint: name}
WARM_START = "warm start "  # how known_twin names a warm start that is not a catalogue loss


def _probe_gradient(expr: Expr, class_reduction: str) -> np.ndarray | None:
    """The loss's gradient on the fingerprint's probe batch, divided by its mean magnitude (None where
    it is not finite or vanishes)."""
    z, target = _probe_batch()
    try:
        _, grad = loss_and_grad(expr, class_reduction, z, target, torch.zeros(0, dtype=torch.float64))
    except Exception:  # noqa: BLE001 - a loss the probe cannot take matches nothing
        return None
    arr = grad.numpy().ravel()
    mag = float(np.abs(arr).mean())
    return arr / mag if np.isfinite(arr).all() and mag > 0 else None


def known_family(expression: str, constants: dict | None = None, class_reduction: str = "class_sum",
                 tol: float = 1e-6) -> tuple[str, dict] | None:
    """The catalogue loss that, at constants of its own other than its published ones, has this loss's
    gradient up to a positive factor on the fingerprint's probe batch (``-(y * sqrt(p))`` is GCE at
    q = 0.5): ``(name, fitted constants)``, or None. ``known_twin`` matches catalogue losses at their
    published constants only; this fits them (Nelder-Mead from the published constants and from half
    and twice them), which takes seconds: for reports on a few losses, not for the search loop."""
    key = (expression, json.dumps(constants or {}, sort_keys=True), class_reduction, tol)
    if key not in _FAMILIES:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # thousands of tiny evaluations: more threads only add their overhead
        try:
            _FAMILIES[key] = _fit_family(expression, constants, class_reduction, tol)
        finally:
            torch.set_num_threads(threads)
    return _FAMILIES[key]


def family_record(expression: str, constants: dict | None = None, class_reduction: str = "class_sum") -> dict | None:
    """``known_family``'s answer as reports and files store it: ``{"loss": name, "constants": {...}}``,
    or None."""
    found = known_family(expression, constants, class_reduction)
    return None if found is None else {"loss": found[0], "constants": found[1]}


def family_text(family: dict | None) -> str:
    """A family as reports store it, ``{"loss": name, "constants": {...}}`` (``known_family``'s answer),
    in words: 'GCE (q 0.5)'; '' for None."""
    if not family:
        return ""
    return f"{family['loss']} ({', '.join(f'{k} {float(v):.4g}' for k, v in family['constants'].items())})"


_FAMILIES: dict = {}  # known_family's answers: a report asks again for the same loss


def _fit_family(expression: str, constants: dict | None, class_reduction: str, tol: float):
    from scipy.optimize import minimize

    from .. import losses

    mine = _probe_gradient(parse(expression).substitute(dict(constants or {})), class_reduction)
    if mine is None:
        return None
    for name in losses.BUILTIN:
        spec = losses.get(name)
        names = list(dict(spec.constants))
        if not names:
            continue
        start = np.array([float(v) for v in dict(spec.constants).values()])

        def distance(x, spec=spec, names=names):
            theirs = _probe_gradient(spec.expr.substitute(dict(zip(names, map(float, x)))), spec.class_reduction)
            return 1e9 if theirs is None else float(np.linalg.norm(theirs - mine) / np.linalg.norm(mine))

        for x0 in (start, start / 2, start * 2):
            fit = minimize(distance, x0, method="Nelder-Mead", options={"xatol": 1e-9, "fatol": tol / 10,
                                                                         "maxiter": 400})
            if fit.fun < tol:
                return name, {k: round(float(v), 6) for k, v in zip(names, fit.x)}
    return None


def known_twin(r: dict, normalise: bool, seed_losses=()) -> str | None:
    """The known loss a row is in disguise (same canonical form, or the same gradient fingerprint on
    the fixed probe batch, up to a factor when the run rescaled gradients): a catalogue loss at its
    own constants (its name), or one of the run's ``seed_losses`` (warm starts, e.g. a baseline at
    constants tuned for this task: ``WARM_START + text`` unless the text is a catalogue name)."""
    from .. import losses

    def add(table, name, spec):
        expr = spec.expr.substitute(dict(spec.constants))
        table.setdefault(str(expr.canonical()), name)
        try:
            table.setdefault(fingerprint(expr, spec.class_reduction, torch.zeros(0, dtype=torch.float64),
                                         normalise=normalise), name)
        except Exception:  # noqa: BLE001 - a loss the probe cannot take is just not matched
            pass

    # what each name means now (a run's registered losses may join the catalogue after a first look)
    key = (normalise, tuple(seed_losses), tuple(str(losses.get(t).expr) if losses.is_registered(t) else ""
                                                for t in seed_losses))
    if key not in _TWINS:
        table = {}
        for name in losses.BUILTIN:
            add(table, name, losses.get(name))
        for text in seed_losses:
            try:
                spec = losses.resolve_spec(text)
            except (ValueError, KeyError):
                continue
            add(table, text if text in losses.names() else WARM_START + text, spec)
        _TWINS[key] = table
    table = _TWINS[key]
    if r.get("canonical") in table:
        return table[r["canonical"]]
    try:
        expr = parse(r["expression"]).substitute(dict(r.get("constants") or {}))
        return table.get(str(expr.canonical())) or table.get(
            fingerprint(expr, "class_sum", torch.zeros(0, dtype=torch.float64), normalise=normalise))
    except Exception:  # noqa: BLE001
        return None
