"""Where a search's leaders stand in the target regime: each one's paired result against CE there,
against the known losses trained beside it (the regime's strongest: ``SearchConfig.target_baselines``),
and the note every report prints (held, did not hold, not shown)."""

from __future__ import annotations

from ..stats import format_pp as pp
from ..stats import mean
from ._rows import TARGET_STAGE, interval, seed_stats, trained_seeds


def target_results(rows: list[dict]) -> dict:
    """Candidate id -> its training in the target regime: status, seeds, accuracy, CE's accuracy on
    the same seeds there, the paired difference and its 95% interval (None under 2 seeds)."""
    out = {}
    for r in rows:
        if r.get("stage") != TARGET_STAGE or r["status"] == "baseline":
            continue
        st = seed_stats(r) if r["status"] == "ok" else {"seeds": 0, "accuracy": None, "paired": None,
                                                        "paired_ci": None}
        ce = {b["seed"]: b["fitness"] for b in rows if b["status"] == "baseline"
              and b.get("fidelity") == r.get("fidelity") and b.get("fitness") is not None
              and b["seed"] in {s["seed"] for s in (r.get("result") or {}).get("seeds", [])}}
        out[r.get("candidate") or r["id"]] = {
            "id": r["id"], "status": r["status"], "reason": r.get("reason") or "", "seeds": st["seeds"],
            "accuracy": st["accuracy"], "ce_accuracy": mean(ce.values(), empty=None), "ce_per_seed": ce,
            "paired": st["paired"], "paired_ci": st["paired_ci"], "fidelity": r.get("fidelity"),
            "per_seed": {s["seed"]: s["acc"] for s in trained_seeds(r) if s.get("acc") is not None}}
    return out


def baseline_results(trainings: list[dict], rows: list[dict], fidelity: str | None) -> list[dict]:
    """The target baselines' trainings (``RunDB.target_baseline_rows``), one entry per loss: its per-seed
    accuracy, mean, and paired difference to CE on the same seeds with its 95% interval; its failed seeds
    apart (``failed``, with the first one's ``reason``)."""
    from ..stats import paired_by_key

    if not trainings:
        return []
    ce = {b.get("seed"): b["fitness"] for b in rows if b["status"] == "baseline" and b.get("fidelity") == fidelity
          and b.get("fitness") is not None}
    out: dict[str, dict] = {}
    for t in trainings:
        if t["fidelity"] != fidelity:
            continue
        e = out.setdefault(t["name"], {"name": t["name"], "expression": t["expression"],
                                       "constants": t.get("constants") or {}, "per_seed": {}, "failed": [],
                                       "reason": ""})
        if t["status"] == "ok" and t.get("accuracy") is not None:
            e["per_seed"][t["seed"]] = t["accuracy"]
        else:
            e["failed"].append(t["seed"])
            e["reason"] = e["reason"] or f"{t['status']}: {(t.get('reason') or '')[:80]}"
    for e in out.values():
        e["seeds"] = len(e["per_seed"])
        e["accuracy"] = mean(e["per_seed"].values(), empty=None)
        shared = set(e["per_seed"]) & set(ce)
        e["vs_ce"], e["vs_ce_ci"] = None, None
        if shared:
            test = paired_by_key({s: e["per_seed"][s] for s in shared}, {s: ce[s] for s in shared})
            e["vs_ce"] = test.mean_diff
            e["vs_ce_ci"] = interval(test) if len(shared) > 1 else None
    return list(out.values())


def strongest_baseline(t: dict, baselines: list[dict]) -> dict | None:
    """The leader (target result ``t``) against the target baselines (``baseline_results``); None where
    none was trained. ``compared``: those trained on every seed of the leader; ``name``: the strongest
    of them on those seeds (``nlfs.stats.strongest_on``, CE among them), with the leader's paired
    difference to it (``diff``) and its 95% interval (``ci``, None under 2 seeds), or None where CE is the
    strongest there (then the comparison with CE is the one against the strongest); ``diverged``: those
    that diverged on every seed (a loss that does not train in this regime is not the one to beat);
    ``incomplete``: those missing a seed otherwise (an error, a diverged seed among trained ones, a stage
    not finished): no lead can be shown to hold against the field until they are trained (a resumed run
    retries errors)."""
    from ..stats import paired_by_key, strongest_on

    if not baselines:
        return None
    seeds = set(t.get("per_seed") or {})
    out = {"name": None, "diff": None, "ci": None, "seeds": len(seeds), "compared": [], "diverged": [],
           "incomplete": []}
    ok = {}
    for b in baselines:
        if seeds and seeds <= set(b["per_seed"]):
            ok[b["name"]] = b["per_seed"]
            out["compared"].append(b["name"])
        elif not b["per_seed"] and b["reason"].startswith("diverged"):
            out["diverged"].append(b["name"])
        else:
            missing = sorted(seeds - set(b["per_seed"]))
            out["incomplete"].append(f"{b['name']} (seed(s) {', '.join(map(str, missing))}"
                                     + (f"; {b['reason']}" if b["reason"] else ": not trained yet") + ")")
    best = strongest_on(seeds, {"CE": t.get("ce_per_seed") or {}, **ok}) if ok else None
    if best is None or best == "CE":
        return out
    test = paired_by_key({s: t["per_seed"][s] for s in seeds}, {s: ok[best][s] for s in seeds})
    out.update(name=best, diff=test.mean_diff, ci=interval(test) if len(seeds) > 1 else None)
    return out


def target_note(t: dict | None, versus: dict | None = None) -> str:
    """Whether a leader's lead held in the target: ahead of CE there by an interval excluding 0 and, where
    the regime's strong baselines trained beside it (``versus``: ``strongest_baseline``), ahead of the
    strongest of them the same way; or not (behind, or within seed noise), or not shown (one seed: no
    interval; a baseline not trained on every seed), or never checked."""
    if t is None:
        return "not checked in the target"
    if t["status"] != "ok" or t.get("paired") is None:
        return f"did not hold: {t['status']} in the target" + (f" ({t['reason'][:80]})" if t.get("reason") else "")
    d, ci = t["paired"], t.get("paired_ci")
    field = ""
    if versus is not None and versus["name"] is not None:
        field = (f", {pp(versus['diff'], versus['ci'])} vs {versus['name']} (the strongest known loss trained "
                 "there)")
    elif versus is not None and versus["compared"]:
        field = f", CE above every known loss trained there ({', '.join(versus['compared'])})"
    if versus is not None and versus["diverged"]:
        field += f"; {', '.join(versus['diverged'])} diverged there on every seed"
    vs_ce = " vs CE" if versus is not None else ""
    if ci is None:  # one seed: a sign, not evidence; never counted as held
        if d > 0:
            return (f"not shown to hold: ahead by {pp(d)}{vs_ce} on 1 seed in the target{field}, too few for an "
                    "interval")
        return f"did not hold: {pp(d)}{vs_ce} on 1 seed in the target{field}"
    shown = pp(d, ci) + vs_ce + (f" ({t['seeds']} seeds)" if t.get("seeds") else "") + field
    if d > 0 and ci[0] > 0:
        if versus is not None and versus["incomplete"]:
            return (f"not shown to hold: {shown} in the target, but {'; '.join(versus['incomplete'])} did not "
                    "train on every seed of it (resume the run to train them)")
        if versus is None or versus["name"] is None or (versus["ci"] is not None and versus["ci"][0] > 0):
            return f"held in the target: {shown}"
        return f"did not hold against {versus['name']}: {shown} in the target"
    return f"did not hold: {shown} in the target" + (", within seed noise" if d > 0 else "")
