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

# Which validation accuracy a training scores: the best over its evaluations (the checkpoint that early
# stopping on the validation split keeps) or the final model's (the one shipped without early stopping;
# under label noise a loss can peak early and then fit the noise).
SCORES = ("best", "final")

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
    the rejection test first), ``name``, ``scale`` (the loss's fixed factor, default 1), ``score``
    (``SCORES``, default best). Instead of ``expression`` and
    ``class_reduction``, ``loss`` may give any loss ``nlfs.train`` accepts (a catalogue name, an expression,
    a ``LossSpec``; in this process also a callable), with ``constants`` overriding its own (no
    rejection test). With ``fitness`` true, the installed fitness function scores the loss instead of
    ``nlfs.train``: ``f(nlfs.Loss, seed, budget)`` for each seed, ``budget`` the payload's (no
    ``train``; the rejection test uses a fixed synthetic sample).

    The result's ``per_seed`` lists ``{seed, acc, diverged, reason, grad_scale_factor,
    order_digest}``; ``fitness`` is the mean accuracy (None when a seed failed); ``wall_time`` and
    ``cpu_time`` are the seconds it took, in wall-clock time and in this process's CPU time (which
    other work sharing the cores does not inflate; a pack's members each get an equal share).

    ``{"pack": [payload, ...]}`` (see :func:`packable` and ``make_executor(pack=K)``) evaluates members
    that share one ``train`` dict and ``seeds`` in one packed network (``nlfs.train.train_grid``): each
    member's rejection test, then one packed training per seed; -> ``{"pack": [result, ...]}``, each
    member's result as it would be alone (to float tolerance). A pack that cannot train as one (a loss
    that raises, a configuration ``train_packed`` refuses) trains its members one at a time."""
    cpu = time.process_time()
    if "pack" in payload:
        members = _evaluate_pack(payload["pack"])
        share = (time.process_time() - cpu) / max(1, len(members))
        return {"pack": [{**m, "cpu_time": share} for m in members]}
    start = time.perf_counter()
    try:
        out = _evaluate(payload, start)
    except Exception as err:  # noqa: BLE001 - a candidate must never crash the search
        out = _error(err, start)
    return {**out, "cpu_time": time.process_time() - cpu}


def training_payload(expression: str, constants: dict | None, class_reduction: str, train: dict, *,
                     seeds: list | None = None, rejection: bool = False, score: str = "best",
                     name: str | None = None, scale: float | None = None) -> dict:
    """The payload that trains ``expression`` (with ``constants``) under ``train`` (a TrainConfig dict)
    on ``seeds`` (default: the config's own seed), scoring each by ``score`` (``SCORES``), the loss
    times a fixed ``scale`` when given: the one
    place a search, TaylorGLO and tuning write a training job, so every job carries every field."""
    payload = {"expression": expression, "constants": dict(constants or {}), "class_reduction": class_reduction,
               "train": train, "rejection": rejection, "score": score}
    if seeds is not None:
        payload["seeds"] = list(seeds)
    if name is not None:
        payload["name"] = name
    if scale is not None:
        payload["scale"] = scale
    return payload


def split_by_seed(payload: dict) -> list[dict]:
    """``payload`` as one payload per seed, in its ``seeds`` order, so that one job's seeds can train
    on several workers at once; :func:`merge_by_seed` joins their results into the one ``payload``
    gives. A pack, or a payload with fewer than two seeds, stays whole."""
    seeds = payload.get("seeds") or []
    if "pack" in payload or len(seeds) < 2:
        return [payload]
    return [{**payload, "seeds": [seed]} for seed in seeds]


def merge_by_seed(results: list[dict]) -> dict:
    """The result of a payload from its :func:`split_by_seed` parts' results (in seed order), as the
    whole payload gives it: its seeds up to the first that failed (the whole payload stops there) and
    that one's status and record, else every seed, their mean accuracy and the first seed's record;
    wall and CPU time summed over every part (the compute spent, a seed trained after a failed one
    included; None where a part has none)."""
    if len(results) == 1:
        return results[0]
    spent = {key: None if any(r.get(key) is None for r in results) else sum(r[key] for r in results)
             for key in ("wall_time", "cpu_time")}
    per_seed = []
    for part in results:
        per_seed += part.get("per_seed") or []
        if part["status"] != "ok":  # diverged (its seeds so far), rejected or an error: the whole stops here
            return {**part, **spent, **({"per_seed": per_seed} if "per_seed" in part else {})}
    return {**results[0], **spent, "per_seed": per_seed, "fitness": statistics.fmean(s["acc"] for s in per_seed)}


def _error(err: Exception, start: float) -> dict:
    return {"status": "error", "reason": f"{type(err).__name__}: {err}", "fitness": None,
            "wall_time": time.perf_counter() - start}


def packable(payload: dict) -> bool:
    """Whether ``payload`` may train in a pack: an nlfs training (not a fitness function's score) of
    the surrogate CNN over whole schedules, with seeds that set data order and init together (no
    ``init_seed``) and a precision without a shared loss scaler (``train_packed``'s limits)."""
    train = payload.get("train")
    if payload.get("fitness") or "pack" in payload or not isinstance(train, dict):
        return False
    if train.get("model", "surrogate") != "surrogate" or train.get("init_seed") is not None:
        return False
    if train.get("amp") == "fp16":
        return False
    return not (train.get("start_step") or train.get("stop_step") is not None
                or train.get("stop_epoch") is not None or train.get("save_checkpoint"))


def grad_scale_factor_of(per_seed: list[dict]) -> float | None:
    """The factor the trainer put on the loss in the first seed's training (``TrainConfig.grad_scale="ce"``
    measures it; 1 without), from a result's ``per_seed``; None without seeds. Results stored before
    the rename call it ``grad_scale``."""
    if not per_seed:
        return None
    first = per_seed[0]
    return first.get("grad_scale_factor", first.get("grad_scale"))


def trained_scale(out: dict, fixed: float = 1.0) -> float | None:
    """The factor a training (``out``: a worker's result) put on the loss: its ``fixed`` scale times the
    factor the trainer measured with ``grad_scale="ce"`` (1 without); None when the result holds no
    seed. Training the loss again at this fixed scale reproduces it: nothing is rescaled twice."""
    factor = grad_scale_factor_of(out.get("per_seed") or [])
    return None if factor is None else float(fixed) * float(factor)


def _evaluate(payload: dict, start: float) -> dict:
    prepared = _prepare(payload, start)
    if isinstance(prepared, dict):
        return prepared  # rejected, or scored by the fitness function
    loss, constants, cfg = prepared
    return _train_seeds(loss, constants, cfg, payload, start)


def _prepare(payload: dict, start: float):
    """``(loss, constants, TrainConfig)`` to train, or the candidate's result when it ends here
    (rejected by the rejection test, or scored by the fitness function)."""
    from ..losses import LossSpec, stored_class_reduction
    from ..train import TrainConfig

    score = payload.get("score", "best")
    if score not in SCORES:  # before any training: a bad job must not cost one
        raise ValueError(f"score must be one of {', '.join(SCORES)}, got {score!r}")
    fitness = payload.get("fitness", False)
    cfg = None if fitness else TrainConfig(**payload["train"])
    if "loss" in payload and not fitness:
        return payload["loss"], payload.get("constants") or None, cfg
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
    return spec, None, cfg


def _evaluate_pack(payloads: list[dict]) -> list[dict]:
    """The members' results (``evaluate_payload``'s, in order): rejection tests one by one, then the
    survivors' seeds in one ``train_grid`` of one pack; a grid that raises is trained member by member
    (each failure then costs only its own candidate, as unpacked)."""
    from ..train import train_grid

    results: list[dict | None] = [None] * len(payloads)
    todo, starts = [], [time.perf_counter()] * len(payloads)
    for i, payload in enumerate(payloads):
        starts[i] = time.perf_counter()
        try:
            prepared = _prepare(payload, starts[i])
        except Exception as err:  # noqa: BLE001 - a candidate must never crash the search
            results[i] = _error(err, starts[i])
            continue
        if isinstance(prepared, dict):
            results[i] = prepared
        else:
            todo.append((i, prepared, time.perf_counter() - starts[i]))
    if not todo:
        return results
    cfg = todo[0][1][2]
    seeds = payloads[todo[0][0]].get("seeds") or [cfg.seed]
    try:
        grid = train_grid([loss for _, (loss, _, _), _ in todo], cfg, seeds=seeds,
                          constants=[c for _, (_, c, _), _ in todo], pack=len(todo))
    except Exception:  # noqa: BLE001 - one member's failure must not fail the others
        for i, (loss, constants, cfg), _ in todo:
            try:
                results[i] = _train_seeds(loss, constants, cfg, payloads[i], starts[i])
            except Exception as err:  # noqa: BLE001
                results[i] = _error(err, starts[i])
        return results
    for (i, _, screen_time), trained in zip(todo, grid):
        results[i] = _seeds_result(seeds, trained, screen_time + sum(r.wall_time for r in trained),
                                   payloads[i].get("score", "best"))
    return results


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

    seeds, trained = payload.get("seeds") or [cfg.seed], []
    for seed in seeds:
        trained.append(train(loss, dataclasses.replace(cfg, seed=seed), constants=constants))
        if trained[-1].diverged:
            break  # one failed seed fails the candidate: the rest would be wasted
    return _seeds_result(seeds, trained, time.perf_counter() - start, payload.get("score", "best"))


def _seeds_result(seeds: list, trained: list, wall_time: float, score: str = "best") -> dict:
    """A candidate's result from its trainings, one per seed in ``seeds`` order (the last one
    diverged, or none did). ``score``: which validation accuracy a seed scores (``SCORES``, checked
    by ``_prepare``)."""
    per_seed = [{"seed": seed, "acc": r.best_val_acc if score == "best" else r.val_acc, "diverged": r.diverged,
                 "reason": r.reason, "grad_scale_factor": r.grad_scale_factor, "order_digest": r.order_digest}
                for seed, r in zip(seeds, trained)]
    failed = trained[-1] if trained[-1].diverged else None
    shown = failed or trained[0]  # the failed training's record explains the failure
    return {"status": "diverged" if failed else "ok", "reason": shown.reason,
            "fitness": None if failed else statistics.fmean(s["acc"] for s in per_seed),
            "per_seed": per_seed, "result": shown.to_dict(), "wall_time": wall_time}


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
