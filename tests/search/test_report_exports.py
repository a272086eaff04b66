"""What a search run's report hands its user: simplified formulas with their constants (summary,
hall of fame, summary.json), best_losses.tex, loss_shapes.png, and best_losses_standalone.py, which,
imported in a fresh process where nlfs cannot be imported, matches nlfs.Loss for every found loss."""

import json

import nlfs
from nlfs.search._report import format_summary, write_report
from tests.test_export import assert_matches_loss, run_standalone, standalone_cases

TAYLOR = nlfs.losses.get("TaylorGLO").text


def _rows():
    def row(i, expression, fitness, constants=None, size=9, **extra):
        return {"id": i, "expression": expression, "constants": constants or {}, "fitness": fitness,
                "size": size, "status": "ok", "dataset": "digits", **extra}

    taylor = {f"t{k}": 0.25 * k - 0.5 for k in range(8)}
    return [
        {"id": 0, "expression": "-y * log(p)", "constants": {}, "fitness": 0.90, "size": 4, "status": "baseline"},
        row(1, TAYLOR, 0.93, taylor, size=40),
        row(2, TAYLOR, 0.92, {k: v + 1.0 for k, v in taylor.items()}, size=40),
        row(3, "-max(sqrt(max(2.413, 1) + y - sin(0.8425 * p)), cos(2.496))", 0.91, size=12),
        row(4, "min(aq(p, y * -1), aq(p, y * -1))", 0.89, size=7, scale=2.5),
        {"id": 5, "expression": "p", "constants": {}, "fitness": None, "size": 1, "status": "rejected:validity",
         "stage": "validity"},
    ]


def test_report_shows_simplified_formulas_with_constants(tmp_path):
    rows = _rows()
    summary = write_report(tmp_path, rows)
    best = summary["best"]
    assert [b["id"] for b in best] == [1, 2, 3, 4]
    assert best[0]["expression"] == TAYLOR  # as trained, parseable
    assert best[0]["formula"] != best[1]["formula"] and "t1" not in best[0]["formula"]
    assert best[2]["formula"] == "-sqrt(2.413 + y - sin(0.8425 * p))"
    assert best[3]["formula"] == "2.5 * (aq(p, y))"
    assert json.loads((tmp_path / "summary.json").read_text())["best"][2]["formula"] == best[2]["formula"]
    text = format_summary(summary, "digits")
    assert "-sqrt(2.413 + y - sin(0.8425 * p))" in text and TAYLOR not in text
    hof = (tmp_path / "hall_of_fame.md").read_text()
    assert "| 12 | 0 | 0.9100 | `-sqrt(2.413 + y - sin(0.8425 * p))` |" in hof
    assert "`2.5 * (aq(p, y))`" in hof
    tex = (tmp_path / "best_losses.tex").read_text()
    assert tex.count(r"\begin{equation}") == 4 and r"-\sqrt{\left|2.413 + y" in tex
    assert (tmp_path / "loss_shapes.png").read_bytes()[:4] == b"\x89PNG"


def test_standalone_file_matches_every_found_loss_without_nlfs(tmp_path):
    rows = _rows()
    write_report(tmp_path, rows)
    cases = standalone_cases(c=5)
    results = run_standalone(tmp_path / "best_losses_standalone.py", tmp_path, cases)
    names = [f"{tmp_path.name}#{i}" for i in range(1, 5)]  # one name per loss: <run>#<id>
    assert list(results) == names
    for name, r in zip(names, rows[1:5]):
        spec = nlfs.losses.LossSpec(name, nlfs.parse(r["expression"]), "class_sum",
                                    nlfs.losses.MappingProxyType(r["constants"]), scale=r.get("scale", 1.0))
        assert_matches_loss(name, spec, results[name], cases)


def test_summary_says_what_lead_chance_alone_gives():
    """Twenty candidates at the last rung, none better than CE but for seed noise: the report's chance
    line puts the expected best near the best found, from their own per-seed spread."""
    import math
    import random

    from nlfs.search._ranking import chance_lead
    from nlfs.stats import expected_max_normal

    rng = random.Random(0)
    rows = [{"id": 0, "expression": "-y * log(p)", "fitness": 0.8, "status": "baseline", "rung": 1}]
    for i in range(1, 21):
        diffs = [rng.gauss(0, 0.01) for _ in range(3)]
        rows.append({"id": i, "candidate": i, "expression": f"-y * log(p) * {i}", "constants": {},
                     "fitness": sum(diffs) / 3, "size": 5, "status": "ok", "rung": 1,
                     "result": {"seeds": [{"paired": d} for d in diffs]}})
    rows.append({"id": 30, "candidate": 30, "expression": "p", "constants": {}, "fitness": 0.5, "size": 1,
                 "status": "ok", "rung": 0, "result": {"seeds": [{"paired": 0.5}]}})  # lower rung: not counted
    chance = chance_lead(rows, 1)
    assert chance["candidates"] == 20 and chance["seeds"] == 3 and 0.006 < chance["seed_sd"] < 0.014
    assert math.isclose(chance["expected_best_independent"],
                        expected_max_normal(20, chance["seed_sd"] / math.sqrt(3)))
    assert math.isclose(chance["expected_best"], chance["expected_best_independent"] / math.sqrt(2))
    best = max(r["fitness"] for r in rows[1:21])  # the simulated differences share no CE noise
    assert 0.5 * chance["expected_best_independent"] < best < 2 * chance["expected_best_independent"]
    text = format_summary({"counts": {k: 0 for k in ("evaluated", "trained", "ok", "diverged", "error", "validity",
                                                     "duplicate", "integrity", "fingerprint", "rejection")},
                           "baseline_ce": 0.8, "paired": True, "best": [], "chance": chance}, "digits")
    assert f"would be {chance['expected_best'] * 100:+.2f} pp" in text and "nlfs.eliminate" in text
    assert chance_lead(rows[:2], 1) is None  # one candidate: no best-of-n to speak of


def test_the_ce_row_says_it_is_a_mean_and_each_delta_pairs_its_own_seeds():
    counts = {k: 0 for k in ("evaluated", "trained", "ok", "diverged", "error", "validity", "duplicate", "integrity",
                             "fingerprint", "rejection")}
    best = [{"id": 2, "name": "run#2", "expression": "-y * log(p + 0.1)", "fitness": 0.01, "accuracy": 0.7,
             "seeds": 1, "paired": 0.01, "paired_ci": None, "rung": 0}]
    text = format_summary({"counts": counts, "baseline_ce": 0.75, "baseline_ce_seeds": 3, "paired": True,
                           "best": best, "chance": None}, "digits")
    ce = next(line for line in text.splitlines() if line.startswith("CE "))
    assert ce.split()[1:3] == ["3", "0.7500"] and "each Δ below is against CE on that row's seeds" in ce


def test_chance_line_accounts_for_the_shared_ce_trainings():
    """Paired differences d_i = a_i - ce share CE's noise: the best of n candidates no better than CE,
    each as noisy as CE, is expected_max_normal(n, sd / sqrt(2 k)) with sd the per-seed sd of d."""
    import math

    import numpy as np

    from nlfs.stats import expected_max_normal

    rng = np.random.default_rng(0)
    n, k, sigma = 40, 3, 0.01
    ce = rng.normal(0, sigma, (4000, 1, k))
    d = rng.normal(0, sigma, (4000, n, k)) - ce  # per-seed sd of d: sigma * sqrt(2)
    best = d.mean(axis=2).max(axis=1).mean()
    sd = sigma * math.sqrt(2)
    assert math.isclose(best, expected_max_normal(n, sd / math.sqrt(k) / math.sqrt(2)), rel_tol=0.03)
    assert best < 0.8 * expected_max_normal(n, sd / math.sqrt(k))  # treating them as independent overstates it


def test_every_export_names_a_loss_alike_and_carries_its_scale(tmp_path):
    """best_losses.py, best_losses_standalone.py, best_losses.tex and summary.json call a loss <run>#<id>;
    the registered loss is the trained one (expression, constants, scale); importing an export twice is
    fine, and another loss under a taken name is refused, not silently swapped in."""
    run = tmp_path / "run-7"
    run.mkdir()
    rows = _rows()
    summary = write_report(run, rows)
    assert [b["name"] for b in summary["best"]] == ["run-7#1", "run-7#2", "run-7#3", "run-7#4"]
    tex = (run / "best_losses.tex").read_text()
    assert r"\mathrm{run-7\#4}" in tex
    text = (run / "best_losses.py").read_text()
    try:
        ns = {}
        exec(text, ns)
        exec(text, {})  # the same export again: nothing new, no error
        for r in rows[1:5]:
            spec = nlfs.losses.get(f"run-7#{r['id']}")
            assert str(spec.expr) == str(nlfs.parse(r["expression"])) and dict(spec.constants) == r["constants"]
            assert spec.scale == r.get("scale", 1.0)
        assert ns[nlfs.losses.python_name("run-7#4")]().spec.scale == 2.5
        import pytest

        with pytest.raises(ValueError, match="different loss named 'run-7#4'"):
            exec(text.replace("scale=2.5", "scale=3.0"), {})
    finally:
        for r in rows[1:5]:
            nlfs.losses._CATALOGUE.pop(nlfs.losses._key(f"run-7#{r['id']}"), None)


def _paired_rows(diffs_by_id, rung=0, baseline=0.8):
    rows = [{"id": 0, "expression": "-y * log(p)", "fitness": baseline, "status": "baseline", "rung": rung,
             "size": 4}]
    for i, (expr, diffs) in diffs_by_id.items():
        rows.append({"id": i, "candidate": i, "expression": expr, "constants": {}, "size": 5 + i, "status": "ok",
                     "rung": rung, "fitness": sum(diffs) / len(diffs), "accuracy": baseline + sum(diffs) / len(diffs),
                     "dataset": "digits", "result": {"seeds": [{"paired": d, "acc": baseline + d} for d in diffs]}})
    return rows


def _paired_run(tmp_path, rows, rungs=None):
    from nlfs.search import RunDB, SearchConfig

    db = RunDB(tmp_path / "run.db")
    db.set_meta("config", SearchConfig(run_dir=str(tmp_path), paired=True, rungs=rungs).to_dict())
    db.close()
    return write_report(tmp_path, rows)


def test_a_run_whose_best_is_behind_ce_says_so(tmp_path):
    rows = _paired_rows({1: ("-y * log(p + 0.1)", [-0.01, -0.02]), 2: ("-y * sqrt(p + 0.3)", [-0.03, -0.05])})
    summary = _paired_run(tmp_path, rows)
    assert summary["ahead_of_ce"] is False and "no candidate is ahead of CE" in summary["verdict"]
    assert "no candidate is ahead of CE" in (tmp_path / "hall_of_fame.md").read_text()
    text = format_summary(summary, "digits")
    assert "verdict: no candidate is ahead of CE" in text and "found #" not in text
    assert "-1.50 pp [" in text  # pp, with its interval over the two seeds
    assert "not found losses" in (tmp_path / "best_losses.py").read_text()
    assert "not found losses" in (tmp_path / "best_losses_standalone.py").read_text()
    assert "behind CE" in text


def test_every_lead_is_commented_and_ce_in_disguise_is_not_noise(tmp_path):
    """A large lead at a screening rung is a proxy lead; the seed noise leaves out CE itself (spread 0)
    and says when it rests on fewer than five candidates."""
    rows = _paired_rows({1: ("-y * log(p) * 1", [0.0, 0.0, 0.0]), 2: ("-y * sqrt(p + 0.3)", [0.05, 0.07, 0.06]),
                         3: ("-y * log(p) + 0.1 * p * y", [0.001, -0.002, 0.0]),
                         4: ("-y * log(p + 0.1)", [-0.01, 0.004, 0.002])})
    summary = _paired_run(tmp_path, rows, rungs=[{"steps": 10, "seeds": 3}, {"steps": 30, "seeds": 3}])
    chance = summary["chance"]
    assert chance["noise_from"] == 3 and chance["few"]  # #1 is CE: no spread, not noise
    assert summary["ahead_of_ce"] and "proxy lead" in summary["best"][0]["lead"]
    text = format_summary(summary, "digits")
    assert "only 3 candidate(s)" in text and "regime: " in text
    leads = [b["lead"] for b in summary["best"]]
    assert all(leads) and "screening rung" in leads[0]


def test_a_known_loss_in_disguise_is_shown_but_is_never_the_verdicts_best_nor_exported(tmp_path):
    """Poly-1 written otherwise tops the proxy: the report shows it, marked, and says it ranked higher; the
    verdict's best, the exports and Discovery.best are the new loss below it."""
    from nlfs.search import Discovery

    poly1, new = "-y * log(p) + 2 * y * (1 - p)", "-y * log(p + 0.1)"
    rows = _paired_rows({1: (poly1, [0.02, 0.03]), 2: (new, [0.01, 0.012])})
    summary = _paired_run(tmp_path, rows)
    first, second = f"{tmp_path.name}#1", f"{tmp_path.name}#2"
    shown = {e["expression"]: e for e in summary["best"]}
    assert shown[poly1]["same_as"] == "Poly1" and shown[poly1]["known"] and not shown[new]["known"]
    assert summary["verdict"].startswith(f"best {second} +1.10 pp")  # the new loss, not Poly1's +2.50
    assert f"{first} (Poly1, +2.50 pp) ranked higher: known losses, baselines rather than finds" in summary["verdict"]
    exported = (tmp_path / "best_losses.py").read_text()
    assert f"'{second}'" in exported and f"'{first}'" not in exported
    assert first not in (tmp_path / "best_losses_standalone.py").read_text()
    found = Discovery(tmp_path, summary, "")
    assert [b.name for b in found.best] == [second] and [e["name"] for e in found.entries()] == [second]
    text = format_summary(summary, "digits")
    assert "[= Poly1 in disguise]" in text and f"verdict: best {second}" in text


def test_a_tie_in_fitness_ranks_the_row_trained_on_more_seeds_first():
    from nlfs.search import best_candidates

    def row(i, size, seeds):
        return {"id": i, "candidate": i, "expression": f"-y * log(p + {i / 100})", "constants": {}, "fitness": 0.0,
                "size": size, "status": "ok", "rung": 0, "result": {"seeds": [{"seed": s} for s in range(seeds)]}}

    rows = [row(1, 3, 1), row(2, 9, 4)]  # CE at the ceiling: every candidate ties it; #2 was raced
    assert [r["id"] for r in best_candidates(rows, 2)] == [2, 1]
