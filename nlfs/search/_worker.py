"""The worker side of a search: the rejection test and training of one candidate at one rung, a pure
function of its payload (picklable for process pools and Ray)."""

from __future__ import annotations

import dataclasses
import statistics
import time
import types

import torch

from ..expr import parse
from . import _filters as F


def evaluate_payload(payload: dict) -> dict:
    """Rejection test then one training per seed; never raises (a failure is a result with a reason).

    ``payload``: ``expression``, ``constants``, ``class_reduction`` (``reduction`` in older payloads),
    ``train`` (a TrainConfig dict), ``seeds`` (default: the train config's own seed), ``rejection`` (run
    the rejection test first),
    ``name``, ``scale`` (the loss's fixed factor, default 1). Instead of ``expression`` and
    ``class_reduction``, ``loss`` may give any loss ``nlfs.train`` accepts (a catalogue name, an expression,
    a ``LossSpec``; in this process also a callable), with ``constants`` overriding its own (no
    rejection test). The result's ``per_seed`` lists ``{seed, acc, diverged, reason, grad_scale_factor,
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

    cfg = TrainConfig(**payload["train"])
    if "loss" in payload:
        return _train_seeds(payload["loss"], payload.get("constants") or None, cfg, payload, start)
    expr = parse(payload["expression"])
    constants = payload.get("constants") or {}
    consts = torch.tensor([constants[k] for k in expr.constants], dtype=torch.float64)
    class_reduction = stored_class_reduction(payload)
    if payload.get("rejection", True):
        x, y = rejection_sample(cfg)
        out = F.rejection_test(expr, class_reduction, consts, 1.0, x, y)
        if not out.passed:
            return {"status": "rejected:rejection", "stage": "rejection", "reason": out.reason,
                    "fitness": None, "wall_time": time.perf_counter() - start}
    spec = LossSpec(payload.get("name", str(expr)), expr, class_reduction,
                    types.MappingProxyType(dict(constants)), scale=float(payload.get("scale") or 1.0))
    return _train_seeds(spec, None, cfg, payload, start)


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
