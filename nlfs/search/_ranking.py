"""Which of a run's rows a report shows, and in what order: each candidate's latest row, the hall
of fame (best per size), the best candidates (known losses in disguise apart), the leaders checked in
the target first, CE's baseline at a rung, and the best lead chance alone would give."""

from __future__ import annotations

import json

from ..stats import mean
from ._filters import WARM_START, known_twin
from ._in_target import target_results
from ._rows import TARGET_STAGE, paired_to_ce, seed_stats, trained_seeds


def trained_ok(rows: list[dict]) -> list[dict]:
    """The rows that trained and have a fitness."""
    return [r for r in rows if r["status"] == "ok" and r.get("fitness") is not None]


def rung_of(r: dict) -> int:
    """The rung a row trained at (rows from before rungs: 0)."""
    return r.get("rung") or 0


def latest_rows(rows: list[dict]) -> list[dict]:
    """Each candidate's row at the highest screening rung it reached (fitness-reused rows stand for
    themselves; a raced leader's last racing row, with all its seeds). Target-regime rows are kept
    apart: see ``target_results``."""
    latest: dict[int, dict] = {}
    for r in rows:
        if r["status"] == "baseline" or r.get("stage") == TARGET_STAGE:
            continue
        key = r.get("candidate") or r["id"]
        if key not in latest or rung_of(r) >= rung_of(latest[key]):
            latest[key] = r
    return list(latest.values())


def _rank(r: dict):
    """Higher rungs first (more budget, more seeds), then fitness, then (a tie) the row trained on more
    seeds: a raced leader before a candidate its score merely equals."""
    return (-rung_of(r), -r["fitness"], -len(trained_seeds(r)), r["size"], r["id"])


def hall_of_fame(rows: list[dict]) -> list[dict]:
    """The best candidate of each size that beats every smaller one (a Pareto front), candidates
    compared at the highest rung they reached."""
    best_by_size: dict[int, dict] = {}
    for r in trained_ok(latest_rows(rows)):
        cur = best_by_size.get(r["size"])
        if cur is None or _rank(r) < _rank(cur):
            best_by_size[r["size"]] = r
    front, best = [], None
    for size in sorted(best_by_size):
        r = best_by_size[size]
        if best is None or _rank(r) < _rank(best):
            front.append(r)
            best = r
    return front


def _identity(r: dict) -> tuple[str, str]:
    return r["expression"], json.dumps(r.get("constants") or {}, sort_keys=True)


def best_candidates(rows: list[dict], k: int) -> list[dict]:
    """The best ``k`` candidates of a search run's rows (highest rung first, then fitness), one per
    expression and constants: what search, tune, eliminate and transfer call a run's best."""
    seen, out = set(), []
    for r in sorted(trained_ok(latest_rows(rows)), key=_rank):
        key = _identity(r)
        if key in seen:  # one row per expression and constants (TaylorGLO differs only in these)
            continue
        seen.add(key)
        out.append(r)
        if len(out) == k:
            break
    return out


def is_known(same_as: str | None, cfg: dict) -> bool:
    """Whether a row that is ``same_as`` a known loss (``known_twin``) is that loss, never a find: a
    catalogue loss at its published constants, or a warm start as given unless the run let warm starts
    compete (``warm_starts_compete``)."""
    return bool(same_as) and (not same_as.startswith(WARM_START) or not cfg.get("warm_starts_compete"))


def known_loss(r: dict, cfg: dict) -> str | None:
    """The known loss the row ``r`` of the run saved as ``cfg`` is in disguise, when it is one that
    is never a find (``_is_known``); else None. Reports show such a row; no tool hands it on."""
    same = known_twin(r, cfg.get("grad_scale", "none") != "none", cfg.get("seed_losses") or ())
    return same if is_known(same, cfg) else None


def best_new_candidates(rows: list[dict], cfg: dict, k: int) -> list[dict]:
    """``best_candidates`` without the known losses in disguise (``known_loss``; ``cfg``: the run's
    saved configuration): what a run hands on to the next tool, as its verdict and exports do."""
    return [r for r in best_candidates(rows, len(rows)) if not known_loss(r, cfg)][:k]


def checked_candidates(rows: list[dict]) -> set[int]:
    """The candidates raced or trained in the target regime (the search's leaders)."""
    return {r.get("candidate") or r["id"] for r in rows
            if r.get("stage") in ("race", TARGET_STAGE) and r["status"] != "baseline"}


def shown_candidates(rows: list[dict], k: int) -> list[dict]:
    """What a search's report shows as its best: every candidate trained in the target regime (best
    there first), then every other raced one (by rank), then ``best_candidates`` up to ``k`` in all
    (its first always). A leader whose proxy fitness fell as it was raced is still shown, with its
    result in the target."""
    target, raced = target_results(rows), checked_candidates(rows)

    def cand(r):
        return r.get("candidate") or r["id"]

    def in_target(r):  # the best paired difference in the target first, a failed training last
        t = target[cand(r)]
        return (t["paired"] is None, -(t["paired"] or 0.0), _rank(r))

    # a leader's latest successful row: a failed racing chunk does not hide what it did before
    leaders = [r for r in latest_rows(trained_ok(rows)) if cand(r) in raced]
    first = sorted((r for r in leaders if cand(r) in target), key=in_target)
    first += sorted((r for r in leaders if cand(r) not in target), key=_rank)
    shown = {_identity(r) for r in first}
    rest = [r for r in best_candidates(rows, len(rows)) if cand(r) not in raced and _identity(r) not in shown]
    return first + rest[: max(1, k - len(first))]  # and the proxy's best, always


def baseline(rows: list[dict], rung: int | None = None) -> dict | None:
    """The CE baseline row (the first one at ``rung`` when given)."""
    return next((r for r in rows if r["status"] == "baseline" and (rung is None or rung_of(r) == rung)), None)


def baseline_scores(rows: list[dict], rung: int) -> list[float]:
    """CE's accuracy on each seed it trained at ``rung`` (baselines are shared by rungs of equal budget)."""
    fid = next((r.get("fidelity") for r in rows if r["status"] != "baseline" and rung_of(r) == rung
                and r.get("fidelity") and r.get("stage") != TARGET_STAGE), None)
    return [r["fitness"] for r in rows if r["status"] == "baseline" and r.get("fitness") is not None
            and (fid is None or r.get("fidelity") == fid) and (fid is not None or rung_of(r) == rung)]


def baseline_accuracy(rows: list[dict], rung: int) -> float | None:
    """CE's mean accuracy over the seeds of ``rung``."""
    return mean(baseline_scores(rows, rung), empty=None)


FEW_FOR_NOISE = 5  # below this many candidates the seed-noise estimate is rough, and the report says so


def chance_lead(rows: list[dict], rung: int, normalise: bool | None = None) -> dict | None:
    """The best fitness at ``rung`` that chance alone would give: ``n`` candidates there, none truly
    different from CE, one seed's paired difference varying by the median of their per-seed sds
    (``nlfs.stats.chance_best_paired``: ``expected_best`` with candidates as noisy as CE, whose shared
    trainings cancel; ``expected_best_independent`` none shared). None without paired seeds.
    The noise is estimated without CE in disguise (a spread of 0: the very training of CE; with
    ``normalise`` given, also every row ``known_twin`` calls CE); ``noise_from`` says from how many
    candidates, ``few`` when under ``FEW_FOR_NOISE``."""
    import statistics

    from ..stats import chance_best_paired, seed_noise

    at = [r for r in trained_ok(latest_rows(rows)) if rung_of(r) == rung]
    stats = [seed_stats(r) for r in at]
    noisy = [paired_to_ce(trained_seeds(r)) for r, s in zip(at, stats) if s["paired_sd"] is not None
             and s["paired_sd"] > 0 and (normalise is None or known_twin(r, normalise) != "CE")]
    if len(stats) < 2 or not noisy:
        return None
    sd, noise_from = seed_noise(noisy)
    seeds = round(statistics.median(s["seeds"] for s in stats if s["seeds"]))
    low, high = chance_best_paired(len(stats), sd, seeds)
    return {"rung": rung, "candidates": len(stats), "seeds": seeds, "seed_sd": sd,
            "expected_best": low, "expected_best_independent": high, "noise_from": noise_from,
            "few": noise_from < FEW_FOR_NOISE}
