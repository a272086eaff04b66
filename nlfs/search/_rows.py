"""What a run's rows say about themselves, read by the search loop and its reports alike."""

from __future__ import annotations

from . import _filters as F

TARGET_STAGE = "target"  # the stage of a row trained in the target regime (see Search.target_stage)
AFTER_SCREENING = ("race", TARGET_STAGE)  # stages of the rows written after the screening loop
CE_EXPRESSION = "-y * log(p)"  # cross-entropy (the catalogue's CE): the baseline every candidate is paired with


def reused(row: dict) -> bool:
    """A row whose fitness was taken from an equivalent candidate (same gradient fingerprint)."""
    return (row.get("reason") or "").startswith("fitness reused")


def summary_counts(rows: list[dict]) -> dict:
    """Candidates by outcome (each counted once, at rung 0), and per rung the trainings and the
    seconds they cost (CE baselines included in ``baseline_s``)."""
    out = {"evaluated": 0, "trained": 0, "ok": 0, "diverged": 0, "error": 0}
    for s in F.STAGES:
        out[s] = 0
    rungs: dict = {}
    out["baseline_s"] = 0.0
    for r in rows:
        if r["status"] == "baseline":
            out["baseline_s"] += r.get("wall_time") or 0.0
            continue
        rung = r.get("rung") or 0
        if r["status"] in ("ok", "diverged", "error") and not reused(r):
            spent = rungs.setdefault("target" if r.get("stage") == "target" else str(rung),
                                     {"trained": 0, "ok": 0, "seconds": 0.0})
            spent["trained"] += 1
            spent["ok"] += r["status"] == "ok"
            spent["seconds"] += r.get("wall_time") or 0.0
        if rung or r.get("stage") in AFTER_SCREENING:
            continue
        out["evaluated"] += 1
        if r["status"].startswith("rejected:"):
            out[r["stage"]] += 1
        elif r["status"] == "ok" and reused(r):
            out["fingerprint"] += 1
        else:
            out[r["status"]] += 1
            out["trained"] += 1
    out["rungs"] = rungs
    return out


def trained_seeds(r: dict) -> list[dict]:
    """A row's per-seed results, its diverged seeds left out."""
    return [s for s in (r.get("result") or {}).get("seeds", []) if not s.get("diverged")]


def paired_to_ce(seeds: list[dict]) -> list[float]:
    """One paired difference to CE per seed (the seeds that have one)."""
    return [s["paired"] for s in seeds if s.get("paired") is not None]


def interval(test) -> list[float]:
    """A paired test's 95% interval; the mean twice where the differences have no spread (NaN there)."""
    return [test.ci_low, test.ci_high] if test.ci_low == test.ci_low else [test.mean_diff, test.mean_diff]


def seed_stats(r: dict) -> dict:
    """Per-seed accuracy and paired difference to CE of a row: means, sample std, its 95% t-interval
    (two seeds or more), seeds. Differences are fractions; reports print them in percentage points."""
    import statistics

    from ..stats import paired_test

    seeds = trained_seeds(r)
    paired = paired_to_ce(seeds)
    ci = interval(paired_test(paired, [0.0] * len(paired))) if len(paired) > 1 else None
    return {"seeds": len(seeds), "accuracy": r.get("accuracy", r.get("fitness")),
            "paired": statistics.fmean(paired) if paired else None,
            "paired_sd": statistics.stdev(paired) if len(paired) > 1 else None, "paired_ci": ci}
