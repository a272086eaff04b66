"""The worker side of a search: the rejection test and training of one candidate at one rung, a pure
function of its payload (picklable for process pools and Ray) and of what the executor shipped to
this process once (``install_shared``: a user's fitness function)."""

from __future__ import annotations

import dataclasses
import statistics
import time
import types

import torch

from ..expr import parse
from . import _filters as F

SHARED: dict = {}  # what the executor gave this process once: {"fitness": f}
INSTALLS = [0]  # how many times this process received it (once per worker: see tests/test_discover.py)


def install_shared(objects: dict | None) -> None:
    """Make ``objects`` (e.g. ``{"fitness": f}``) what this process's payloads refer to by name."""
    SHARED.clear()
    SHARED.update(objects or {})
    INSTALLS[0] += 1


def evaluate_payload(payload: dict) -> dict:
    """Rejection test then one training per seed; never raises (a failure is a result with a reason).

    ``payload``: ``expression``, ``constants``, ``class_reduction`` (``reduction`` in older payloads),
    ``train`` (a TrainConfig dict), ``seeds`` (default: the train config's own seed), ``rejection`` (run
    the rejection test first),
    ``name``, ``scale`` (the loss's fixed factor, default 1). Instead of ``expression`` and
    ``class_reduction``, ``loss`` may give any loss ``nlfs.train`` accepts (a catalogue name, an expression,
    a ``LossSpec``; in this process also a callable), with ``constants`` overriding its own (no
    rejection test). With ``fitness`` true, the installed fitness function scores the loss instead of
    ``nlfs.train``: ``f(nlfs.Loss, seed, budget)`` for each seed, ``budget`` the payload's (no
    ``train``; the rejection test uses a fixed synthetic sample).

    The result's ``per_seed`` lists ``{seed, acc, diverged, reason, grad_scale_factor,
    order_digest}``; ``fitness`` is the mean accuracy (None when a seed failed)."""
    start = time.perf_counter()
    try:
        return _evaluate(payload, start)
    except Exception as err:  # noqa: BLE001 - a candidate must never crash the search
        return {"status": "error", "reason": f"{type(err).__name__}: {err}", "fitness": None,
                "wall_time": time.perf_counter() - start}


def grad_scale_factor_of(per_seed: list[dict]) -> float | None:
    """The factor the trainer put on the loss in the first seed's training (``TrainConfig.grad_scale="ce"``
    measures it; 1 without), from a result's ``per_seed``; None without seeds. Results stored before
    the rename call it ``grad_scale``."""
    if not per_seed:
        return None
    first = per_seed[0]
    return first.get("grad_scale_factor", first.get("grad_scale"))


def _evaluate(payload: dict, start: float) -> dict:
    from ..losses import LossSpec, stored_class_reduction
    from ..train import TrainConfig

    fitness = payload.get("fitness", False)
    cfg = None if fitness else TrainConfig(**payload["train"])
    if "loss" in payload and not fitness:
        return _train_seeds(payload["loss"], payload.get("constants") or None, cfg, payload, start)
    expr = parse(payload["expression"])
    constants = payload.get("constants") or {}
    consts = torch.tensor([constants[k] for k in expr.constants], dtype=torch.float64)
    class_reduction = stored_class_reduction(payload)
    if payload.get("rejection", True):
        x, y = synthetic_sample() if fitness else rejection_sample(cfg)
        out = F.rejection_test(expr, class_reduction, consts, 1.0, x, y)
        if not out.passed:
            return {"status": "rejected:rejection", "stage": "rejection", "reason": out.reason,
                    "fitness": None, "wall_time": time.perf_counter() - start}
    spec = LossSpec(payload.get("name", str(expr)), expr, class_reduction,
                    types.MappingProxyType(dict(constants)), scale=float(payload.get("scale") or 1.0))
    if fitness:
        return _score_seeds(spec, payload, start)
    return _train_seeds(spec, None, cfg, payload, start)


def _score_seeds(spec, payload: dict, start: float) -> dict:
    """The user's fitness function on each seed at the payload's budget; a score that is not a
    finite number fails the candidate (as a diverged training does)."""
    import math

    from .._module import Loss

    f = SHARED.get("fitness")
    if f is None:
        raise RuntimeError("this process holds no fitness function (the executor was made without one)")
    budget, per_seed = float(payload["budget"]), []
    for seed in payload["seeds"]:
        t0 = time.perf_counter()
        score = f(Loss(spec, backend=payload.get("backend", "auto")), seed, budget)
        try:
            score = float(score)
        except (TypeError, ValueError):
            raise TypeError(f"the fitness function returned {type(score).__name__} {score!r}, not a number") from None
        bad = not math.isfinite(score)
        per_seed.append({"seed": seed, "acc": score, "diverged": bad,
                         "reason": f"the fitness function returned {score}" if bad else "",
                         "grad_scale_factor": spec.scale, "order_digest": None, "seconds": time.perf_counter() - t0})
        if bad:
            break
    failed = next((s for s in per_seed if s["diverged"]), None)
    return {"status": "diverged" if failed else "ok", "reason": failed["reason"] if failed else "",
            "fitness": None if failed else statistics.fmean(s["acc"] for s in per_seed), "per_seed": per_seed,
            "result": {"fitness_function": getattr(f, "__qualname__", repr(f)), "budget": budget},
            "wall_time": time.perf_counter() - start}


def _train_seeds(loss, constants, cfg, payload: dict, start: float) -> dict:
    from ..train import train

    per_seed, first = [], None
    for seed in payload.get("seeds") or [cfg.seed]:
        result = train(loss, dataclasses.replace(cfg, seed=seed), constants=constants)
        first = first or result
        per_seed.append({"seed": seed, "acc": result.best_val_acc, "diverged": result.diverged,
                         "reason": result.reason, "grad_scale_factor": result.grad_scale_factor,
                         "order_digest": result.order_digest})
        if result.diverged:
            first = result
            break  # one failed seed fails the candidate: the rest would be wasted
    failed = next((s for s in per_seed if s["diverged"]), None)
    return {"status": "diverged" if failed else "ok", "reason": failed["reason"] if failed else first.reason,
            "fitness": None if failed else statistics.fmean(s["acc"] for s in per_seed),
            "per_seed": per_seed, "result": first.to_dict(), "wall_time": time.perf_counter() - start}


_SAMPLES: dict = {}


def synthetic_sample(n: int = 512, features: int = 16, classes: int = 10):
    """The rejection test's sample when the search holds no data of its own (a fitness function's):
    seeded Gaussian classes a linear model separates, so a loss that can train one passes."""
    hit = _SAMPLES.get("synthetic")
    if hit is None:
        g = torch.Generator().manual_seed(0)
        y = torch.arange(n) % classes
        centres = 2.0 * torch.randn(classes, features, generator=g)
        hit = _SAMPLES["synthetic"] = (centres[y] + torch.randn(n, features, generator=g), y)
    return hit


def rejection_sample(cfg, n: int = 512):
    """A fixed sample of the training split (never validation or test) for the rejection test."""
    from ..data import load_dataset, make_splits

    r = cfg.resolved()
    key = (r.dataset, r.data_root, r.val_size, r.train_size, r.split_seed)
    hit = _SAMPLES.get(key)
    if hit is None:
        ds = load_dataset(r.dataset, r.data_root, resize=r.resize)
        sp = make_splits(ds, r.val_size, r.train_size, seed=r.split_seed, include_test=False)
        idx = sp.train[:n].cpu()
        hit = (sp.images.cpu()[idx].float() / 255.0, sp.labels.cpu()[idx])
        _SAMPLES[key] = hit
    return hit
