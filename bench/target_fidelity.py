"""Fidelity against the target regime: does screening rank losses the way the training a user runs does?

The fidelity study (``bench/fidelity.py``) judged its screening levels against a "final" of 320 steps,
itself far from a real training. Here every loss of that study, and losses whose standing is known to
depend on training length (the found losses FoundFM1-3, label smoothing with a >= 0.3, MAE, GCE), is
trained in the target regime: the whole training split for CE's plateau length (``--epochs``, from
``bench/target_curve.py``), 3 seeds, each loss on CE's gradient scale (``grad_scale="ce"``, the search's
default). The added losses are also trained at the study's screening levels, so every proxy is
compared with the target over the same losses.

    python -m bench.target_fidelity --epochs 8                 # resumable: rerun to continue
    python -m bench.target_fidelity --epochs 8 --shard 1/2     # a second process takes every other job
    python -m bench.target_fidelity --report-only

Writes bench/results/target_fidelity_<dataset>_trainings.csv (a row per training, appended as it
finishes) and _curves.jsonl (each training's validation accuracy per epoch). The report (``report``:
target_fidelity_<dataset>.md, and .csv with a row per loss) covers every proxy: the screening levels and
the old 320-step final, the proxies ``bench/target_proxies.py`` trains, and the learning-curve proxies
read off the target's own curves. Per proxy: Spearman and Kendall with bootstrap intervals, over all
losses and over the CE-like ones, seconds per candidate, and how often "beats CE at the proxy" agrees
with "beats CE in the target" (paired over seeds); and the cheapest proxy that ranks CE-like losses at
Spearman >= 0.8.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import warnings
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._schema import append_row, dataset_stem, machine_name, read_rows, today, write_csv  # noqa: E402
from bench.fidelity import LEVELS, STUDY_FORMAT, TRAIN_COLUMNS, correlations, interleaved  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
VARIANT = "ce"
TARGET_SEEDS = 3
# A loss found CE-like on its first TARGET_SEEDS target seeds gets more: among CE-like losses the target's
# differences are of the order of its seed noise, and the default rungs are chosen on them.
CE_LIKE_SEEDS = 5
NAMED_GROUPS = ("catalogue", "found", "length-dependent", "readme-search")  # the losses the study must hold
# Losses added to the study's 40: the shipped found losses and their sibling, published losses whose
# standing changes with training length (strong smoothing, the robust losses of noisy-label training),
# and the best losses of default README searches (bench/results/search_before_after_target_*.md: the
# search before the target regime, whose proxy leads were largest, and today's, with and without its
# target stage): what the search picks is what its proxies must rank. Appended: ids stay stable.
EXTRAS = [
    dict(group="found", name="FoundFM1", expression="FoundFM1"),
    dict(group="found", name="FoundFM2",
         expression="p - 0.4116 * (tanh(-y * log(p) + 1 * (min(p, 0.308) * log(min(0.308, 0.4116)))) * log(p))"),
    dict(group="found", name="FoundFM3", expression="FoundFM3"),
    dict(group="length-dependent", name="LS a=0.3", expression="LabelSmoothingCE", constants={"a": 0.3}),
    dict(group="length-dependent", name="LS a=0.5", expression="LabelSmoothingCE", constants={"a": 0.5}),
    dict(group="length-dependent", name="MAE", expression="abs(y - p)"),
    dict(group="length-dependent", name="GCE q=0.7", expression="y * (1 - p ** 0.7) / 0.7"),
    dict(group="readme-search", name="README before#167",
         expression="-(-y * log(y) - ((1 - p + y) * (1 - p) - p - p + y) * ((1 - p + y) * (1 - p) - p))"),
    dict(group="readme-search", name="README before#153",
         expression="-(-y * log(y) - (1 - p + y) * ((1 - p + y) * (1 - p) - p))"),
    dict(group="readme-search", name="README now#57",
         expression="-y * log(p) + 0.4116 * (-y * log(p)) + (1 - p) * y * (1 - p) + 0.1896 * cos(p)"),
    dict(group="readme-search", name="README now-no-target#172",
         expression="-y * log(p) + 2 * y * (1 - p) + 0.1896 * cos(p) + aq(-1 * p, p)"),
]
PROXIES = ("s16", "s32", "s64", "s64x3", "final")


def losses_for(dataset: str, results: Path = RESULTS) -> list[dict]:
    base = json.loads((results / f"fidelity_{dataset_stem(dataset)}_losses.json").read_text())
    start = max(d["id"] for d in base) + 1
    return base + [dict(d, id=start + i) for i, d in enumerate(EXTRAS)]


def target_spec(epochs: int) -> dict:
    return dict(train_size=None, epochs=epochs, val_size=5000)


def jobs(losses: list[dict], epochs: int, base_ids: set, screened: dict | None = None,
         ce_like: frozenset = frozenset()) -> list[tuple]:
    """The added losses' screening levels first (cheap), then the target, loss by loss (CE first, each
    loss's seeds together). Without ``screened`` the groups are interleaved, so any prefix is a fair
    sample; with it (loss id -> accuracy at the study's final) the CE-like losses come first (the
    default rungs are chosen on them), then the named ones (catalogue, found, length-dependent: the
    losses the study must hold), then the rest, each part highest there first; all run in the end.
    A loss in ``ce_like`` (known CE-like from its first seeds) has CE_LIKE_SEEDS target seeds."""
    out = []
    for d in losses:
        if d["id"] in base_ids:
            continue
        for level in ("s16", "s32", "s64", "s64x3", "final"):
            first = 1 if level == "s64x3" else 0
            for seed in range(first, LEVELS[level]["seeds"]):
                out.append((d, level, seed))
    order = interleaved(losses)
    if screened:
        rank = {d["id"]: k for k, d in enumerate(order)}
        order = sorted(order, key=lambda d: (d["id"] not in ce_like, d.get("group") not in NAMED_GROUPS,
                                             -screened.get(d["id"], -1.0), rank[d["id"]]))
    ce = [d for d in order if d["expression"] == "CE"]
    for d in ce + [d for d in order if d["expression"] != "CE"]:
        for seed in range(CE_LIKE_SEEDS if d["id"] in ce_like else TARGET_SEEDS):
            out.append((d, f"target{epochs}", seed))
    return out


def in_shard(key: tuple, i: int, n: int) -> bool:
    """Whether job ``key`` (loss id, level, seed) is shard ``i`` of ``n``'s: by a hash of the key alone, so
    a job keeps its shard however the list around it grows (a loss found CE-like gains seeds)."""
    return zlib.crc32("|".join(map(str, key)).encode()) % n == i


def train_one(loss: dict, level: str, seed: int, dataset: str, epochs: int) -> dict:
    import torch

    from nlfs.train import TrainConfig, train

    torch.set_num_threads(1)
    if level.startswith("target"):
        spec, layout = target_spec(epochs), None  # the target trains as a user would (channels_last)
    else:
        spec, layout = {k: v for k, v in LEVELS[level].items() if k != "seeds"}, STUDY_FORMAT
    t0 = time.perf_counter()
    r = train(loss["expression"], TrainConfig(dataset=dataset, seed=seed, evaluate_test=False,
                                              grad_scale=VARIANT, channels_last=layout, **spec),
              constants=loss.get("constants"))
    return dict(loss_id=loss["id"], variant=VARIANT, level=level, seed=seed,
                acc=0.0 if r.diverged else r.best_val_acc, diverged=int(r.diverged),
                grad_scale=r.grad_scale_factor, wall_s=time.perf_counter() - t0, reason=r.reason[:120],
                history=[[int(s), float(a)] for s, a in r.history])


# ------------------------------------------------------------------------------------------------ proxies
# The proxies bench/target_proxies.py trains for the same losses (every loss on CE's gradient scale, as in
# the target), PROXY_SEEDS seeds each; "<name> x1" is its seed 0 alone. The learning-curve proxies need no
# training of their own: they read the target trainings' validation accuracy per epoch (the curves file).
PROXY_SEEDS = 3
SUBSET = 8192
SUBSET_EPOCHS = 8  # CE's plateau on SUBSET images (bench/results/target_proxies_fashion_mnist_costs.md)
CE_LIKE_PP = 1.0  # a loss is CE-like when its target accuracy is within this of CE's (CE included)
CHOSEN_SPEARMAN, CHOSEN_MIN_N = 0.8, 10  # the default rungs' criterion, and the CE-like losses it needs
FINDS_AUC, FINDS_MIN_OTHERS = 0.9, 5  # the second fallback: telling CE-like losses from the rest
# The CE-like losses the default rungs are decided on: the 14 whose 5 target seeds and every trained proxy's
# one-seed reading were in on DECIDED_DATE, fixed then so that CE-like losses found later (NGL was the
# next) check the decision rather than move it.
DECIDED_DATE = "2026-12-06"
DECIDED_ON = frozenset({"CE", "LabelSmoothingCE", "Poly1", "near-ce-0", "near-ce-3", "near-ce-6", "near-ce-10",
                        "near-ce-11", "random-gp-0", "FoundFM1", "FoundFM2", "FoundFM3", "LS a=0.3", "LS a=0.5"})


def late_epoch(epochs: int) -> int:
    """Where the late-phase proxy's CE checkpoint is taken: three quarters of the target's epochs."""
    return max(1, epochs * 3 // 4)


def trained_proxies(epochs: int) -> dict[str, dict]:
    """name -> the TrainConfig fields of the proxy (``start_epoch``: the late-phase proxy's start, from
    CE's checkpoint at that epoch of the target's schedule), for a target of ``epochs``."""
    study = dict(val_size=2000, channels_last=STUDY_FORMAT)  # the study's rungs, longer
    target = target_spec(epochs)
    return {"s128": dict(train_size=4096, epochs=4, **study),
            "s256": dict(train_size=4096, epochs=8, **study),
            "e1": dict(target, epochs=1),
            f"sub{SUBSET // 1024}k": dict(target, train_size=SUBSET, epochs=SUBSET_EPOCHS),
            "res14": dict(target, resize=(14, 14)),
            "narrow": dict(target, model="surrogate-narrow"),
            f"late{late_epoch(epochs)}": dict(target, start_epoch=late_epoch(epochs))}


def _epochs(n: int) -> str:
    return f"{n} epoch{'' if n == 1 else 's'}"


def describe(spec: dict, epochs: int) -> str:
    size = "all images" if spec.get("train_size") is None else f"{spec['train_size']:,} images"
    text = f"{size} x {_epochs(spec['epochs'])}"
    if "resize" in spec:
        text += f" at {spec['resize'][0]}x{spec['resize'][1]}"
    if "model" in spec:
        text += f", {spec['model']}"
    if "start_epoch" in spec:
        text = (f"CE to epoch {spec['start_epoch']} of the target (one checkpoint per seed, shared), the candidate "
                f"for the last {_epochs(epochs - spec['start_epoch'])}")
    return text


def checkpoint_level(proxy: str) -> str:
    """The trainings CSV's level of a late-phase proxy's CE checkpoints (one per seed)."""
    return f"{proxy}-ce-checkpoint"


def curve_epochs(epochs: int) -> tuple[list[int], list[int]]:
    """The epochs read off the target's curve (accuracy after k epochs), and those fitted from (k >= 3)."""
    ks = [k for k in (1, 2, 4, 6) if k < epochs]
    return ks, [k for k in ks if k >= 3]


def extrapolate(points: list[tuple[float, float]], at: float) -> float:
    """``a - b * k**-c`` fitted to (epoch k, accuracy) points, at epoch ``at``; the last point if the fit fails."""
    import numpy as np
    from scipy.optimize import OptimizeWarning, curve_fit

    e, acc = np.array(points, dtype=float).T
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)  # an exact fit has no covariance: not a failure
            (a, b, c), _ = curve_fit(lambda x, a, b, c: a - b * x ** -c, e, acc, maxfev=5000,
                                     p0=(acc[-1], max(acc[-1] - acc[0], 1e-3), 1.0),
                                     bounds=([0, 0, 0.05], [1, 1, 5]))
    except (RuntimeError, ValueError):
        return float(acc[-1])
    return float(a - b * at ** -c)


def _read_curves(path: Path, target: str) -> dict:
    """{(loss_id, seed): [(epoch, accuracy), ...]} of the target trainings (the first record of each)."""
    out: dict = {}
    if path.exists():
        for line in path.read_text().splitlines():
            c = json.loads(line)
            if c["level"] == target and c["history"]:
                out.setdefault((int(c["loss_id"]), int(c["seed"])), c["history"])
    return out


def per_seed(rows: list[dict]) -> dict:
    """{level: {loss_id: {seed: acc}}} for the ce variant (the first row of a training counts); s64x3
    is s64's seed 0 and its own seeds."""
    acc: dict = {}
    for r in rows:
        if r["variant"] != VARIANT:
            continue
        for lv in [r["level"]] + (["s64x3"] if r["level"] == "s64" else []):
            acc.setdefault(lv, {}).setdefault(int(r["loss_id"]), {}).setdefault(int(r["seed"]), float(r["acc"]))
    return acc


def target_means(by_loss: dict) -> dict:
    """{loss_id: target accuracy}: the mean of a loss's CE_LIKE_SEEDS seeds when it has them all, else of
    its first TARGET_SEEDS (losses with fewer are left out)."""
    five, three = _means(by_loss, range(CE_LIKE_SEEDS)), _means(by_loss, range(TARGET_SEEDS))
    return {i: five.get(i, v) for i, v in three.items()}


def ce_like_ids(truth: dict, ce_id: int) -> set:
    """The CE-like losses of ``truth`` (CE included): within CE_LIKE_PP of CE's target accuracy."""
    return {i for i, v in truth.items() if ce_id in truth and abs(v - truth[ce_id]) <= CE_LIKE_PP / 100}


def _means(by_loss: dict, seeds) -> dict:
    """{loss_id: mean over ``seeds``} for the losses that have all of them."""
    return {i: statistics.fmean(d[s] for s in seeds) for i, d in by_loss.items() if all(s in d for s in seeds)}


def proxies(rows: list[dict], proxy_rows: list[dict], curves: dict, epochs: int, alone: dict | None = None) -> dict:
    """name -> {"values": {loss_id: mean accuracy}, "cost": seconds per candidate, "what": description},
    every proxy the study compares, and the target itself (name ``target<epochs>``). A training's seconds
    are ``alone[level]`` (measured on its own) where known, else the median wall time of the study's
    trainings at that level (taken while the machine was shared: comparable only roughly)."""
    target = f"target{epochs}"
    acc = per_seed(rows) | per_seed(proxy_rows)
    walls: dict = {}
    for r in rows + proxy_rows:
        walls.setdefault(r["level"], []).append(float(r["wall_s"]))

    def wall(level):
        if alone and level in alone:
            return float(alone[level])
        return statistics.median(walls[level]) if level in walls else float("nan")

    out = {}
    for lv in PROXIES:  # the study's screening levels and its final
        spec = LEVELS[lv]
        out[lv] = dict(values=_means(acc.get(lv, {}), range(spec["seeds"])),
                       cost=wall("s64" if lv == "s64x3" else lv) * spec["seeds"],
                       what=f"{spec['train_size']:,} images x {_epochs(spec['epochs'])} "
                            f"({spec['train_size'] // 128 * spec['epochs']} steps), the study's")
    for name, spec in trained_proxies(epochs).items():
        what = describe(spec, epochs)
        if checkpoint_level(name) in walls:
            what += f"; the checkpoint took {wall(checkpoint_level(name)):.0f} s per seed"
        for seeds, label in ((range(1), f"{name} x1"), (range(PROXY_SEEDS), name)):
            out[label] = dict(values=_means(acc.get(name, {}), seeds), cost=wall(name) * len(seeds), what=what)
    ks, fits = curve_epochs(epochs)
    for k in ks:
        by_loss: dict = {}
        fitted: dict = {}
        for (i, seed), hist in curves.items():
            if len(hist) >= k:
                by_loss.setdefault(i, {})[seed] = hist[k - 1][1]
                fitted.setdefault(i, {})[seed] = extrapolate([(e + 1, a) for e, (_, a) in enumerate(hist[:k])], epochs)
            elif len(hist) < epochs:  # the training diverged before epoch k: the curve has said so by then
                by_loss.setdefault(i, {})[seed] = fitted.setdefault(i, {})[seed] = 0.0
        cost = wall(target) * TARGET_SEEDS * k / epochs
        out[f"curve e{k}"] = dict(values=_means(by_loss, range(TARGET_SEEDS)), cost=cost,
                                 what=f"the target's accuracy after {k} of its {epochs} epochs")
        if k in fits:
            out[f"fit e{k}"] = dict(values=_means(fitted, range(TARGET_SEEDS)), cost=cost,
                                   what=f"a - b k^-c fitted to the target's first {k} epochs, at epoch {epochs}")
    out[target] = dict(values=target_means(acc.get(target, {})), cost=wall(target) * TARGET_SEEDS,
                       what="the target itself")
    return out


def _corr(values: dict, truth: dict, ids=None) -> dict:
    pairs = {(i, VARIANT): {"p": v, "final": truth[i]} for i, v in values.items()
             if i in truth and (ids is None or i in ids)}
    return correlations(pairs, VARIANT, "p")


def _ci(c: dict, name: str) -> str:
    if name not in c:
        return "-"
    return f"{c[name]:.2f} [{c[name + '_lo']:.2f}, {c[name + '_hi']:.2f}]"


def spearman_brown(r: float, k: int) -> float:
    """The reliability of a mean of ``k`` measurements whose single ones correlate at ``r`` (-1 where r is
    at or below -1/(k-1), where the formula turns and means nothing)."""
    if k > 1 and r <= -1 / (k - 1):
        return -1.0
    return max(-1.0, min(1.0, k * r / (1 + (k - 1) * r)))


def target_reliability(by_loss: dict, ids, seeds: int = TARGET_SEEDS, boot: int = 1000) -> dict:
    """How well the target ranks the losses ``ids`` against itself: the Spearman of one seed's accuracies
    with another's (mean over seed pairs), ``r1``; stepped up to the mean of ``seeds`` seeds, ``rk``, the
    Spearman a re-run of the target on fresh seeds would reach, with a bootstrap interval over losses.
    A proxy is judged against a noisy target: one whose own noise is independent of the target's reaches
    at most about sqrt(rk) (classical test theory; Spearman-Brown is exact for Pearson correlations of
    parallel measurements, an approximation here)."""
    import itertools

    import numpy as np
    from scipy.stats import spearmanr

    ids = [i for i in ids if all(s in by_loss.get(i, {}) for s in range(seeds))]
    if len(ids) < 5:
        return {"n": len(ids)}
    acc = np.array([[by_loss[i][s] for s in range(seeds)] for i in ids])
    pairs = list(itertools.combinations(range(seeds), 2))

    def r1(rows):
        m = acc[rows]
        return float(np.mean([spearmanr(m[:, a], m[:, b]).statistic for a, b in pairs]))

    rng, vals = np.random.default_rng(0), []
    for _ in range(boot):
        idx = rng.integers(0, len(ids), len(ids))
        if min(np.ptp(acc[idx, s]) for s in range(seeds)) > 0:
            vals.append(spearman_brown(r1(idx), seeds))
    one = r1(np.arange(len(ids)))
    lo, hi = np.nanpercentile(vals, [2.5, 97.5])
    rk = spearman_brown(one, seeds)
    out = {"n": len(ids), "r1": one, "rk": rk, "rk_lo": float(lo), "rk_hi": float(hi),
           "ceiling": math.sqrt(rk) if rk > 0 else 0.0}
    if seeds >= 5:  # measured directly too: the first three seeds' mean against the others'
        out["retest"] = float(spearmanr(acc[:, :3].mean(1), acc[:, 3:].mean(1)).statistic)
    return out


def paired_vs_ce(by_seed: dict, ce_id: int) -> dict:
    """{loss_id: mean over the seeds it shares with CE of its accuracy minus CE's} (at least TARGET_SEEDS
    shared): the target's paired difference, whatever number of seeds CE has."""
    ce = by_seed.get(ce_id, {})
    out = {}
    for i, d in by_seed.items():
        common = sorted(set(d) & set(ce))
        if i != ce_id and len(common) >= TARGET_SEEDS:
            out[i] = statistics.fmean(d[s] - ce[s] for s in common)
    return out


def _sign(x: float) -> int:
    return (x > 1e-12) - (x < -1e-12)  # accuracies are multiples of 1/validation size: a tie is a tie


def beats_ce(values: dict, truth_diff: dict, ce_id: int) -> tuple[int, int, int, int]:
    """(agree, n, proxy says beats, of those beat in the target) over the losses other than CE that both
    measure. The proxy's means are over the same seeds for every loss, so its difference is the paired
    one; the target's is ``truth_diff`` (``paired_vs_ce``). Signs are -1, 0 (a tie) or +1."""
    if ce_id not in values:
        return 0, 0, 0, 0
    both = [i for i in values if i in truth_diff and i != ce_id]
    says = [i for i in both if _sign(values[i] - values[ce_id]) > 0]
    agree = sum(_sign(values[i] - values[ce_id]) == _sign(truth_diff[i]) for i in both)
    return agree, len(both), len(says), sum(_sign(truth_diff[i]) > 0 for i in says)


def finds_ce_like(values: dict, truth: dict, ce_like: set) -> tuple[float, int, int] | None:
    """(AUC, CE-like n, others n): how often the proxy puts a CE-like loss above one that is not (ties
    count half), over the losses both measure; None without both kinds."""
    ids = [i for i in values if i in truth]
    pos, neg = [values[i] for i in ids if i in ce_like], [values[i] for i in ids if i not in ce_like]
    if not pos or not neg:
        return None
    auc = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg) / (len(pos) * len(neg))
    return auc, len(pos), len(neg)


def choose_last_rung(table: dict, truth: dict, by_seed: dict, ce_like: set) -> dict:
    """The default rungs' rule over the CE-like losses ``ce_like``: the cheapest proxy ranking them at
    Spearman >= CHOSEN_SPEARMAN; else the fallback (corrected for the target's own noise >= it, and above 0
    against the fresh seeds 3-4); else the second fallback (the cheapest that finds the CE-like losses,
    AUC >= FINDS_AUC). -> {"rule": "criterion" | "fallback" | "second" | None, "name", "cost", "value",
    "best": (name, corr) of the highest CE-like Spearman}, over ``n`` CE-like losses."""
    k = CE_LIKE_SEEDS if all(all(s in by_seed[i] for s in range(CE_LIKE_SEEDS)) for i in ce_like) else TARGET_SEEDS
    rel = target_reliability(by_seed, ce_like, k)
    root = math.sqrt(rel["rk"]) if rel.get("rk", 0) > 0 else None
    fresh = {i: statistics.fmean(by_seed[i][s] for s in range(TARGET_SEEDS, CE_LIKE_SEEDS)) for i in ce_like
             if all(s in by_seed[i] for s in range(CE_LIKE_SEEDS))}
    tiers = {"criterion": [], "fallback": [], "second": []}
    best = None
    for name, p in table.items():
        cl = _corr(p["values"], truth, ce_like)
        if "spearman" in cl and (best is None or cl["spearman"] > best[1]["spearman"]):
            best = (name, cl)
        if math.isnan(p["cost"]):
            continue
        finds = finds_ce_like(p["values"], truth, ce_like)
        if finds and finds[0] >= FINDS_AUC and finds[1] >= CHOSEN_MIN_N and finds[2] >= FINDS_MIN_OTHERS:
            tiers["second"].append((p["cost"], name, finds))
        if cl["n"] < CHOSEN_MIN_N:
            continue
        if cl.get("spearman", -1) >= CHOSEN_SPEARMAN:
            tiers["criterion"].append((p["cost"], name, cl))
        fixed = min(1.0, cl["spearman"] / root) if root and "spearman" in cl else None
        cf = _corr(p["values"], fresh)
        if fixed is not None and fixed >= CHOSEN_SPEARMAN and cf.get("n", 0) >= CHOSEN_MIN_N and cf["spearman"] > 0:
            tiers["fallback"].append((p["cost"], name, (fixed, cl, cf)))
    for rule, found in tiers.items():
        if found:
            cost, name, value = min(found, key=lambda t: (t[0], t[1]))
            return dict(rule=rule, name=name, cost=cost, value=value, best=best, n=len(ce_like))
    return dict(rule=None, best=best, n=len(ce_like))


def rule_lines(choice: dict, pending: str, complete: bool) -> list[str]:
    """The report's lines for ``choose_last_rung``'s choice."""
    n, rule = choice["n"], choice["rule"]
    if rule == "criterion":
        cl = choice["value"]
        return [f"**Cheapest proxy ranking CE-like losses at Spearman >= {CHOSEN_SPEARMAN}: {choice['name']}** "
                f"({choice['cost']:.0f} s per candidate; Spearman {_ci(cl, 'spearman')} over {cl['n']} CE-like "
                "losses): the last rung of the default ladder."]
    best = choice["best"]
    out = [f"**No proxy ranks CE-like losses at Spearman >= {CHOSEN_SPEARMAN} over >= {CHOSEN_MIN_N} of them** "
           f"({n} CE-like losses" + (f"; highest: {best[0]}, {_ci(best[1], 'spearman')} over {best[1]['n']})."
                                    if best else "; too few to rank).")]
    # The fallback, fixed on 2026-12-06 before the CE-like losses' targets were complete: when the target
    # itself is too noisy for the criterion, the cheapest proxy that meets it against the target's true
    # means (corrected) and ranks the unseen further seeds the right way round (fresh seeds > 0).
    if rule == "fallback":
        fixed, cl, cf = choice["value"]
        return out + [f"**Fallback{pending} (fixed before the data was complete): {choice['name']}**, the cheapest "
                      f"proxy whose CE-like Spearman corrected for the target's own noise is >= {CHOSEN_SPEARMAN} "
                      f"({fixed:.2f}; uncorrected {_ci(cl, 'spearman')}) and whose Spearman against the fresh seeds "
                      f"is above 0 ({_ci(cf, 'spearman')}), over >= {CHOSEN_MIN_N} CE-like losses "
                      f"({choice['cost']:.0f} s per candidate)."]
    out += [f"Fallback (fixed before the data was complete): the cheapest proxy whose CE-like Spearman corrected "
            f"for the target's own noise is >= {CHOSEN_SPEARMAN} and whose Spearman against the fresh seeds is above "
            f"0, over >= {CHOSEN_MIN_N} CE-like losses: none" + ("." if complete else " yet.")]
    # The second fallback, fixed on 2026-12-06 (tenth session) before the CE-like losses' further seeds and
    # the trained proxies' readings were complete: when no proxy can be shown to rank near-CE losses, the
    # last rung need only find them, and the target stage decides among them.
    head = f"Second fallback{pending} (fixed before the data was complete)"
    text = (f"the cheapest proxy that puts CE-like losses above the rest at AUC >= {FINDS_AUC} over >= "
            f"{CHOSEN_MIN_N} CE-like and >= {FINDS_MIN_OTHERS} other losses: the last rung then only finds the "
            "near-CE losses, and which of them beats CE is the target stage's to say")
    if rule == "second":
        auc, pos, neg = choice["value"]
        return out + [f"**{head}: {choice['name']}** ({choice['cost']:.0f} s per candidate; AUC {auc:.2f} over "
                      f"{pos} CE-like and {neg} other losses), {text}."]
    return out + [f"{head}: {text}: none" + ("." if complete and n >= CHOSEN_MIN_N else " yet.")]


def check_line(decided: str, now: dict, values: dict, truth: dict, ce_like: set) -> str:
    """The decided proxy on every CE-like loss so far (``now``: the rule run on all of them): where it
    ranks them, whether it is still the highest, and what the rule would choose today."""
    cl = _corr(values, truth, ce_like)
    best = now.get("best")
    where = ("the highest of every proxy" if best and best[0] == decided else
             f"the highest now is {best[0]}, {_ci(best[1], 'spearman')}" if best else "no proxy ranks them yet")
    today = (f"chooses {now['name']} ({now['rule']})" if now.get("rule") else "chooses none yet (see above)")
    return (f"Check on all {len(ce_like)} CE-like losses so far: {decided} ranks them at Spearman "
            f"{_ci(cl, 'spearman')}, {where}; the rule run on all of them {today}. The decision stands as taken "
            "on its fixed set; a check that disagrees is reported, not acted on.")


def alone_costs(dataset: str, results: Path = RESULTS) -> dict:
    """Seconds of one training per level, each measured alone: the study's levels (fidelity costs, wall on
    an idle machine) and the trained proxies and target (CPU seconds); {} where the files are missing."""
    out = {}
    study = results / f"fidelity_{dataset_stem(dataset)}_costs.json"
    if study.exists():
        out.update(json.loads(study.read_text()))
    trained = results / f"target_proxies_{dataset_stem(dataset)}_costs.json"
    if trained.exists():
        out.update(json.loads(trained.read_text())["cpu_s"])
    return out


def report(losses: list[dict], dataset: str, epochs: int, command: str, results: Path = RESULTS) -> str:
    """The study's one report: every proxy (screening levels, trained proxies, learning curves) against
    the target; writes target_fidelity_<dataset>.md and .csv (a row per loss) in ``results``."""
    stem, target = dataset_stem(dataset), f"target{epochs}"
    rows = (read_rows(results / f"fidelity_{stem}_trainings.csv")
            + read_rows(results / f"target_fidelity_{stem}_trainings.csv"))
    proxy_rows = read_rows(results / f"target_proxies_{stem}_trainings.csv")
    curves = _read_curves(results / f"target_fidelity_{stem}_curves.jsonl", target)
    alone = alone_costs(dataset, results)
    table = proxies(rows, proxy_rows, curves, epochs, alone)
    truth = table.pop(target)["values"]
    ce_id = next(d["id"] for d in losses if d["expression"] == "CE")
    by_seed = per_seed(rows).get(target, {})
    # CE-like by the first TARGET_SEEDS seeds (the further seeds of a CE-like loss played no part in it)
    ce_like = ce_like_ids(_means(by_seed, range(TARGET_SEEDS)), ce_id)
    truth_diff = paired_vs_ce(by_seed, ce_id)
    k = CE_LIKE_SEEDS if all(all(s in by_seed[i] for s in range(CE_LIKE_SEEDS)) for i in ce_like) else TARGET_SEEDS
    rel = target_reliability(by_seed, ce_like, k)
    # the CE-like losses' further seeds: no part in choosing them, nor in the curve proxies (seeds 0-2)
    fresh = {i: statistics.fmean(by_seed[i][s] for s in range(TARGET_SEEDS, CE_LIKE_SEEDS)) for i in ce_like
             if all(s in by_seed[i] for s in range(CE_LIKE_SEEDS))}
    five = len(fresh)
    by_id = {d["id"]: d for d in losses}
    tgt_walls = [float(r["wall_s"]) for r in rows if r["level"] == target]
    lines = [f"# Screening against the target regime on {dataset}", "",
             f"{today()}, {machine_name()}, 1 thread per training. Command: `{command}`", "",
             f"Target regime: all training images (the split less 5,000 validation images), {epochs} epochs (CE's "
             "plateau: bench/results/target_curve_*.md), SGD lr 0.1 cosine, no augmentation, no label noise, "
             f"every loss on CE's gradient scale, best validation accuracy; {TARGET_SEEDS} seeds, and "
             f"{CE_LIKE_SEEDS} for a loss found CE-like on those (its target is then the mean of all "
             f"{CE_LIKE_SEEDS}). {len(truth)} of {len(losses)} losses have their target; {five} of the "
             f"{len(ce_like)} CE-like ones have their {CE_LIKE_SEEDS} seeds"
             + (f"; a target training took {statistics.median(tgt_walls):.0f} s wall (median, shared cores)."
                if tgt_walls else "."),
             "", f"CE-like losses: those whose target accuracy on its first {TARGET_SEEDS} seeds is within "
             f"{CE_LIKE_PP:g} pp of CE's, CE included ({len(ce_like)} so far): the hard case, where a search's "
             "discoveries live. The window is drawn by the target itself, so the CE-like correlations are "
             "range-restricted and selected on the outcome: lower than, and not comparable with, those over all "
             "losses.",
             "Seconds per candidate: one training measured alone (CPU seconds of the trained proxies and the "
             f"target, target_proxies_{stem}_costs.json; the study's levels, fidelity_{stem}_costs.json) times "
             "its seeds; without such a measurement, the median wall time of the study's trainings (shared "
             "cores: rough). A learning-curve proxy costs its share of the target's trainings; the late-phase "
             "proxy's CE checkpoint, shared by every candidate, is not counted. 'Beats CE': of the losses other "
             "than CE, in how many the proxy's sign of the paired difference to CE (-, tie, +) is the target's "
             "(paired over the seeds the loss shares with CE); and of those the proxy says beat CE, how many do "
             "in the target. Corrected: the CE-like Spearman divided by the square root of the target's own "
             "reliability (below), capped at 1: how the proxy would rank against the target's true means "
             "(Spearman's correction for attenuation; noisy when the reliability is). Fresh seeds: the CE-like "
             f"Spearman against the mean of target seeds {TARGET_SEEDS}-{CE_LIKE_SEEDS - 1} alone, which played no "
             "part in choosing the CE-like losses nor in the curve and fit rows (seeds 0-2): free of both biases, "
             "noisier. Finds CE-like: how often the proxy puts a CE-like loss above one that is not (AUC, ties "
             "half), over the losses it measures.", "",
             "| proxy | what | s per candidate | n | Spearman [95% CI] | Kendall [95% CI] | CE-like n | "
             "CE-like Spearman [95% CI] | CE-like Kendall [95% CI] | agree on 'beats CE' | says beats -> does | "
             "CE-like corrected | CE-like vs fresh seeds [95% CI] (n) | finds CE-like (AUC) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    root = math.sqrt(rel["rk"]) if rel.get("rk", 0) > 0 else None
    # The data a fallback is decided on: every CE-like loss's 5 seeds, and every one-seed reading of a
    # trained proxy on every CE-like loss (those readings come first, so this is soon after the seeds).
    unread = sorted(name for name, p in table.items() if name.endswith(" x1") and not ce_like <= set(p["values"]))
    complete = five == len(ce_like) and not unread
    pending = "" if complete else " (provisional: " + "; ".join(
        ([f"not every CE-like loss has its {CE_LIKE_SEEDS} seeds"] if five < len(ce_like) else [])
        + ([f"{', '.join(unread)} not yet read on every CE-like loss"] if unread else [])) + ")"
    for name, p in sorted(table.items(), key=lambda kv: (math.isnan(kv[1]["cost"]), kv[1]["cost"])):
        c, cl = _corr(p["values"], truth), _corr(p["values"], truth, ce_like)
        agree, n, says, holds = beats_ce(p["values"], truth_diff, ce_id)
        cost = "-" if math.isnan(p["cost"]) else f"{p['cost']:.0f}"
        fixed = min(1.0, cl["spearman"] / root) if root and "spearman" in cl else None
        finds = finds_ce_like(p["values"], truth, ce_like)
        lines.append(f"| {name} | {p['what']} | {cost} | {c['n']} | {_ci(c, 'spearman')} | {_ci(c, 'kendall')} | "
                     f"{cl['n']} | {_ci(cl, 'spearman')} | {_ci(cl, 'kendall')} | "
                     + (f"{agree}/{n} | {holds}/{says} |" if n else "- | - |")
                     + (f" {fixed:.2f} |" if fixed is not None else " - |")
                     + (f" {_ci(cf, 'spearman')} ({cf['n']}) |" if "spearman" in (cf := _corr(p["values"], fresh))
                        else " - |")
                     + (f" {finds[0]:.2f} ({finds[1]} vs {finds[2]}) |" if finds else " - |"))
    lines += ["", "The curve and fit rows read the target's own trainings: their noise is partly the target's, so "
              "they read high against it.", ""]
    now = choose_last_rung(table, truth, by_seed, ce_like)
    lines += rule_lines(now, pending, complete)
    decided = {i for i in ce_like if by_id[i]["name"] in DECIDED_ON}
    if len(decided) == len(DECIDED_ON) and all(
            all(s in by_seed[i] for s in range(CE_LIKE_SEEDS)) and all(
                i in p["values"] for n, p in table.items() if n.endswith(" x1")) for i in decided):
        choice = choose_last_rung(table, truth, by_seed, decided)
        lines += ["", f"**Decision** (the rule, fixed before the data was complete, run on the {len(decided)} CE-like "
                  f"losses whose {CE_LIKE_SEEDS} seeds and every proxy's one-seed reading were in on {DECIDED_DATE}; "
                  "the lines above run it on every CE-like loss so far, as a check that later ones do not "
                  "overturn it):", ""]
        lines += rule_lines(choice, "", True)
        if choice.get("name"):
            lines += ["", check_line(choice["name"], now, table[choice["name"]]["values"], truth, ce_like)]
    if "rk" in rel:
        retest = (f"; measured directly, the mean of seeds 0-2 against that of seeds 3-4: {rel['retest']:.2f}"
                  if "retest" in rel else "")
        lines += ["", f"How well the target ranks the CE-like losses against itself ({rel['n']} losses): one seed's "
                  f"accuracies against another's, Spearman {rel['r1']:.2f} (mean over seed pairs); the mean of "
                  f"{k} seeds against a re-run on {k} fresh seeds, {rel['rk']:.2f} "
                  f"[{rel['rk_lo']:.2f}, {rel['rk_hi']:.2f}] (Spearman-Brown; bootstrap over losses){retest}. A "
                  f"proxy whose noise is independent of the target's reaches at most about {rel['ceiling']:.2f} "
                  "against this target."]
    names = list(table)
    per_loss = []
    for i, t in sorted(truth.items(), key=lambda kv: -kv[1]):
        per_loss.append(dict(loss_id=i, name=by_id[i]["name"], group=by_id[i]["group"], ce_like=int(i in ce_like),
                             target=t, **{n: table[n]["values"].get(i, "") for n in names}))
    write_csv(results / f"target_fidelity_{stem}.csv", per_loss,
              ["loss_id", "name", "group", "ce_like", "target", *names])
    shown = [n for n in ("s64x3", "final", "s256", "e1", "curve e2", f"late{late_epoch(epochs)}") if n in table]
    lines += ["", f"Per loss (validation accuracy %, mean of its seeds; every proxy in target_fidelity_{stem}.csv):",
              "", "| loss | group | CE-like | " + " | ".join(shown) + f" | {target} |",
              "|---|---|---|" + "---|" * (len(shown) + 1)]
    for r in per_loss:
        cells = [f"{100 * r[n]:.2f}" if r[n] != "" else "-" for n in (*shown, "target")]
        lines.append(f"| {r['name']} | {r['group']} | {'yes' if r['ce_like'] else ''} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    (results / f"target_fidelity_{stem}.md").write_text(text)
    return text


def recurve(losses: list[dict], dataset: str, epochs: int, path: Path, curves: Path, shard: str = "0/1") -> None:
    """Record the curves of target trainings that have a row but no curve (made before curves were kept):
    each trained again with its seed, CE first, then the CE-like losses, then the rest."""
    target = f"target{epochs}"
    rows = [r for r in read_rows(path) if r["level"] == target and r["variant"] == VARIANT]
    have = set(_read_curves(curves, target))
    first = {}
    for r in rows:
        first.setdefault((int(r["loss_id"]), int(r["seed"])), float(r["acc"]))
    means = _means(per_seed(rows).get(target, {}), range(TARGET_SEEDS))
    ce_id = next(d["id"] for d in losses if d["expression"] == "CE")
    ce = means.get(ce_id)
    by_id = {d["id"]: d for d in losses}
    todo = sorted((k for k in first if k not in have),
                  key=lambda k: (k[0] != ce_id, ce is None or abs(means.get(k[0], 0) - ce) > CE_LIKE_PP / 100, k))
    i, n = (int(x) for x in shard.split("/"))
    todo = todo[i::n]
    print(f"{len(todo)} target trainings to train again for their curves", flush=True)
    for loss_id, seed in todo:
        row = train_one(by_id[loss_id], target, seed, dataset, epochs)
        with curves.open("a") as fh:
            fh.write(json.dumps(dict(loss_id=loss_id, level=target, seed=seed, history=row["history"])) + "\n")
        same = "reproduced" if row["acc"] == first[(loss_id, seed)] else f"recorded {first[(loss_id, seed)]:.4f}"
        print(f"{by_id[loss_id]['name']} {target} seed {seed} (curve): {row['acc']:.4f}, {same} "
              f"({row['wall_s']:.0f} s)", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.target_fidelity", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--epochs", type=int, default=8, help="the target regime's length (CE's plateau)")
    ap.add_argument("--shard", default="0/1", help="I/N: run every N-th job starting at I (several processes)")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--recurve", action="store_true", help="train again the target trainings recorded before "
                    "curves were kept (CE-like losses first), to record their curves; the accuracy recorded first "
                    "stays, and each rerun says whether it reproduced it")
    args = ap.parse_args(argv)
    losses = losses_for(args.dataset)
    path = RESULTS / f"target_fidelity_{dataset_stem(args.dataset)}_trainings.csv"
    curves = RESULTS / f"target_fidelity_{dataset_stem(args.dataset)}_curves.jsonl"
    command = "python -m bench.target_fidelity " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.recurve:
        recurve(losses, args.dataset, args.epochs, path, curves, args.shard)
    elif not args.report_only:
        i, n = (int(x) for x in args.shard.split("/"))
        done = {(int(r["loss_id"]), r["level"], int(r["seed"])) for r in read_rows(path)}
        base_ids = {d["id"] for d in losses if "name" in d and d.get("group") not in {e["group"] for e in EXTRAS}}
        study = per_seed(read_rows(RESULTS / f"fidelity_{dataset_stem(args.dataset)}_trainings.csv") + read_rows(path))
        screened = _means(study.get("final", {}), range(LEVELS["final"]["seeds"]))
        ce_id = next(d["id"] for d in losses if d["expression"] == "CE")
        ce_like = ce_like_ids(_means(study.get(f"target{args.epochs}", {}), range(TARGET_SEEDS)), ce_id)
        todo = [j for j in jobs(losses, args.epochs, base_ids, screened, frozenset(ce_like))
                if in_shard((j[0]["id"], j[1], j[2]), i, n) and (j[0]["id"], j[1], j[2]) not in done]
        print(f"{len(todo)} trainings to run in this shard", flush=True)
        for loss, level, seed in todo:
            row = train_one(loss, level, seed, args.dataset, args.epochs)
            curve = dict(loss_id=row["loss_id"], level=level, seed=seed, history=row.pop("history"))
            with curves.open("a") as fh:  # validation accuracy per epoch: the learning-curve proxies
                fh.write(json.dumps(curve) + "\n")
            append_row(path, row, TRAIN_COLUMNS)
            print(f"{loss['name']} {level} seed {seed}: {row['acc']:.4f} ({row['wall_s']:.0f} s)", flush=True)
    print(report(losses, args.dataset, args.epochs, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
