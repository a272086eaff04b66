"""The search judged by the target regime: --target on the command line, racing the leaders to an
interval at the last rung, the target stage paired with CE, resume after a kill, and reports that say
where every fitness was measured."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from nlfs.search import Discovery, Search, SearchConfig
from nlfs.search._report import format_summary, write_report
from tests.runs import run_search

ROOT = Path(__file__).resolve().parents[2]
CE = "-y * log(p)"
LEAD = "-y * log(p) + 0.3 * p * y"  # not CE in disguise (see test_report_marks_catalogue_losses_in_disguise)
TIE = "-y * log(p + 0.2)"
# per-seed paired differences to CE at the screening rung: LEAD's interval excludes 0 from 7 seeds on
# (3: [-0.12, +0.23]; 5: [-0.00, +0.12]; 7: [+0.02, +0.09]), TIE's never does
LEAD_NOISE = [0.06, -0.07, 0.03, 0.0, 0.02, -0.01, 0.01, 0.0, 0.02, -0.02, 0.01, 0.0]
TARGET = {"train_size": "all", "epochs": 3, "seeds": 2}


def accuracy(expression: str, train: dict, seed: int) -> float:
    """The fake trainer: CE 0.5 everywhere; LEAD ahead at the proxy and 1 point behind in the target
    (train_size None); TIE level with CE; anything else far behind."""
    in_target = train.get("train_size") is None
    if expression == CE:
        return 0.5
    if expression == LEAD:
        return 0.49 + 0.001 * seed if in_target else 0.55 + LEAD_NOISE[seed]
    if expression == TIE:
        return 0.5 + (0.02 if seed % 2 == 0 else -0.02)
    return 0.3


class FakeExecutor:
    """Two slots; trains instantly with ``accuracy``; counts trainings per (loss, regime, seed) and
    may die (KeyboardInterrupt, as a kill) after ``die_after`` submissions, or sleep per result."""

    slots = 2

    def __init__(self, die_after=None, sleep=0.0, log=None, accuracy=accuracy):
        self.trained, self.results, self.die_after, self.sleep, self.log = Counter(), {}, die_after, sleep, log
        self.accuracy = accuracy
        self.submitted = 0

    def submit(self, payload):
        h = self.submitted
        self.submitted += 1
        train = payload["train"]
        per_seed = [{"seed": s, "acc": self.accuracy(payload["expression"], train, s), "diverged": False, "reason": "",
                     "grad_scale": 1.0, "order_digest": f"d{s}"} for s in payload["seeds"]]
        regime = (train.get("train_size"), train.get("epochs"), train.get("steps"))
        self.results[h] = ([(payload["expression"], regime, s) for s in payload["seeds"]],
                           {"status": "ok", "reason": "", "per_seed": per_seed,
                            "fitness": sum(x["acc"] for x in per_seed) / len(per_seed), "wall_time": 0.01})
        return h

    def wait_one(self, handles):
        if self.die_after is not None and self.submitted > self.die_after:
            raise KeyboardInterrupt
        time.sleep(self.sleep)
        h = min(handles)
        keys, out = self.results.pop(h)
        self.trained.update(keys)
        if self.log:
            with open(self.log, "a") as f:
                f.writelines(json.dumps(k) + "\n" for k in keys)
        return h, out

    def close(self):
        pass


def config(run_dir, losses=(LEAD, TIE), **kw):
    base = dict(run_dir=str(run_dir), algorithm="gp", space="gp", dataset="digits", train_size=300, val_size=100,
                backend="torch", progress=False, budget=len(losses), gp_population=4, seed=0,
                rungs=[{"steps": 4, "seeds": 3}], seed_losses=tuple(losses), seed_mutants=0,
                filters=("validity", "duplicate"), finalists=1, race_seeds=10, target=TARGET,
                warm_starts_compete=True)  # the candidates come in as warm starts
    base.update(kw)
    return SearchConfig(**base)


def candidate_rows(rows, expression):
    return [r for r in rows if r["expression"] == expression and r["status"] != "baseline"]


def test_racing_stops_once_the_interval_excludes_zero(tmp_path):
    ex = FakeExecutor()
    rows = run_search(config(tmp_path / "run"), ex)
    lead = candidate_rows(rows, LEAD)
    race = [r for r in lead if r["stage"] == "race"]
    # 3 screening seeds, then 2 at a time: 5 seeds (interval still includes 0), 7 (it excludes 0)
    assert [len(r["result"]["seeds"]) for r in race] == [5, 7]
    assert all(r["rung"] == 0 and r["fidelity"] == lead[0]["fidelity"] for r in race)
    assert not [r for r in candidate_rows(rows, TIE) if r["stage"] == "race"]  # finalists=1: the leader only
    assert max(ex.trained.values()) == 1  # no (loss, regime, seed) trained twice
    summary = write_report(tmp_path / "run", rows)
    best = summary["best"][0]
    assert best["expression"] == LEAD and best["seeds"] == 7 and best["paired_ci"][0] > 0
    assert "7 seed(s): a proxy" in best["regime"]


def test_racing_stops_at_the_cap_on_a_tie(tmp_path):
    ex = FakeExecutor()
    rows = run_search(config(tmp_path / "run", losses=(TIE,), race_seeds=6), ex)
    race = [r for r in candidate_rows(rows, TIE) if r["stage"] == "race"]
    assert [len(r["result"]["seeds"]) for r in race] == [5, 6]
    ci = write_report(tmp_path / "run", rows)["best"][0]["paired_ci"]
    assert ci[0] < 0 < ci[1]
    # one CE baseline per seed at the rung, shared, never twice
    base = [r["seed"] for r in rows if r["status"] == "baseline" and r["rung"] == 0]
    assert sorted(base) == list(range(6))
    # racing off: race_seeds at most the last rung's seeds
    rows = run_search(config(tmp_path / "off", losses=(TIE,), race_seeds=3), FakeExecutor())
    assert not [r for r in rows if r.get("stage") == "race"]


def test_the_target_stage_is_paired_with_ce_and_every_fitness_names_its_regime(tmp_path):
    ex = FakeExecutor()
    cfg = config(tmp_path / "run", race_seeds=0)
    rows = run_search(cfg, ex)
    target = [r for r in rows if r.get("stage") == "target"]
    assert len(target) == 1 and target[0]["expression"] == LEAD
    t = cfg.target_regime()
    assert target[0]["rung"] == 1 and target[0]["fidelity"] == t.fidelity and target[0]["status"] == "ok"
    ce = {r["seed"]: r for r in rows if r["status"] == "baseline" and r["fidelity"] == t.fidelity}
    assert sorted(ce) == [0, 1] and all(r["rung"] == 1 for r in ce.values())
    for s in target[0]["result"]["seeds"]:  # paired with CE trained in the target with the same seed
        assert s["paired"] == pytest.approx(s["acc"] - ce[s["seed"]]["fitness"])
        assert s["order_digest"] == ce[s["seed"]]["result"]["seeds"][0]["order_digest"]
    assert ex.trained[(LEAD, (None, 3, None), 0)] == 1  # the target: whole split, its epochs, no steps
    summary = write_report(tmp_path / "run", rows)
    best = summary["best"][0]
    assert best["expression"] == LEAD and best["rung"] == 0  # the ranking stays the screening's
    assert best["regime"].startswith("screening rung 0 (steps 4), 3 seed(s): a proxy")
    assert best["target"]["regime"] == t.describe() and best["target"]["seeds"] == 2
    assert best["in_target"].startswith("did not hold: -")
    assert "a proxy lead only — did not hold" in summary["verdict"] and "no lead held" in summary["verdict"]
    assert summary["target"]["checked"] == 1 and summary["target"]["held"] == 0
    assert all(e["in_target"] == "not checked in the target" for e in summary["best"][1:])
    text = format_summary(summary, "digits")
    assert "proxy lead" in text and t.describe() in text and "did not hold" in text
    md = (tmp_path / "run" / "hall_of_fame.md").read_text()
    assert f"## In the {t.describe()}" in md and "did not hold" in md
    assert "a proxy; did not hold" in (tmp_path / "run" / "best_losses.py").read_text()
    assert "a proxy; did not hold" in (tmp_path / "run" / "best_losses.tex").read_text()
    for export in ("best_losses.py", "best_losses.tex", "best_losses_standalone.py"):  # candidates, not finds
        head = (tmp_path / "run" / export).read_text()[:300]
        assert "a proxy lead the target regime did not confirm: not found losses" in head and "Best losses" not in head
    assert summary["proxy_lead_only"]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["best"][0]["target"]["paired"] < 0


# LEAD's paired differences to CE at the screening rung: ahead on its 3 screening seeds (the leader),
# behind once raced to 6; FALLEN's others sit between, so by proxy fitness LEAD ranks 7th of 7
FALLEN = [0.15, -0.05, 0.10, -0.10, -0.10, -0.10]
OTHERS = {f"-y * log(p) + {c} * p * y": d for c, d in zip((0.1, 0.2, 0.4, 0.5, 0.6, 0.7),
                                                          (0.06, 0.05, 0.04, 0.03, 0.02, 0.01))}


def fallen_accuracy(expression: str, train: dict, seed: int) -> float:
    """LEAD: the leader at screening, last of all once raced, 2 points ahead of CE in the target."""
    if train.get("train_size") is None:  # the target
        return 0.52 + 0.001 * seed if expression == LEAD else 0.5
    if expression == LEAD:
        return 0.5 + FALLEN[seed]
    return 0.5 + OTHERS.get(expression, 0.0)


def test_a_leader_that_fell_below_the_top_by_proxy_is_shown_with_its_target_result(tmp_path):
    from nlfs.search import best_candidates

    losses = (LEAD, *OTHERS)
    cfg = config(tmp_path / "run", losses=losses, gp_population=len(losses), race_seeds=6)
    rows = run_search(cfg, FakeExecutor(accuracy=fallen_accuracy))
    assert [r["candidate"] for r in rows if r.get("stage") == "target"] == [
        r["id"] for r in candidate_rows(rows, LEAD) if r["stage"] is None or r["stage"] == "screen"][:1]
    assert LEAD not in [r["expression"] for r in best_candidates(rows, 5)]  # the proxy's top 5 leave it out
    summary = write_report(tmp_path / "run", rows)
    best = summary["best"]
    assert best[0]["expression"] == LEAD and best[0]["in_target"].startswith("held in the target: +2.0")
    assert best[0]["seeds"] == 6  # its raced row, all seeds
    assert [e["expression"] for e in best[1:]] == list(OTHERS)[:4]  # then the proxy's ranking, 5 in all
    assert summary["target"]["held"] == 1 == sum(e["in_target"].startswith("held") for e in best)
    verdict = summary["verdict"]
    assert verdict.startswith(f"best {best[1]['name']} +6.00 pp")  # the proxy's best
    assert f"{best[0]['name']} held in the target" in verdict and "no lead held" not in verdict
    text = format_summary(summary, "digits")
    assert f"{best[0]['name']}: -1.67 pp" in text and "-> held in the target" in text
    assert best[0]["name"] in (tmp_path / "run" / "best_losses.py").read_text()
    md = (tmp_path / "run" / "hall_of_fame.md").read_text()
    # LEAD is Poly-1 at epsilon -0.3: held, but a known loss at other constants, and every report says so
    assert best[0]["known_family"] == {"loss": "Poly1", "constants": {"epsilon": -0.3}}
    assert f"{best[0]['name']} is Poly1 (epsilon -0.3): a known loss at other constants" in verdict
    assert f"| {best[0]['name']} (= Poly1 (epsilon -0.3)) | -1.67 pp" in md
    assert "[= Poly1 (epsilon -0.3): a known loss at other constants]" in text
    assert all(e["known_family"] is None for e in best[1:])  # not checked in the target: not fitted
    found = Discovery(tmp_path / "run", summary, text).best
    assert found[0].known_family == "Poly1 (epsilon -0.3)" and found[1].known_family == ""


def test_a_novel_leader_held_in_the_target_is_no_known_family(tmp_path):
    novel = "-y * log(p) + 0.3 * y * sin(3 * p)"  # no catalogue loss at any constants

    def novel_leads(expression, train, seed):
        return {novel: 0.52 + 0.001 * seed}.get(expression, 0.5 if expression == CE else 0.3)

    rows = run_search(config(tmp_path / "run", losses=(novel,), race_seeds=0), FakeExecutor(accuracy=novel_leads))
    summary = write_report(tmp_path / "run", rows)
    lead = summary["best"][0]
    assert lead["expression"] == novel and lead["in_target"].startswith("held in the target")
    assert lead["known_family"] is None and "known loss at other constants" not in summary["verdict"]


def test_a_leaders_family_is_fitted_once_per_run(tmp_path, monkeypatch):
    import nlfs.search._report as report

    rows = run_search(config(tmp_path / "run", race_seeds=0), FakeExecutor())
    first = write_report(tmp_path / "run", rows)
    assert json.loads((tmp_path / "run" / "known_families.json").read_text())  # kept beside run.db

    def refit(*a, **k):
        raise AssertionError("fitted again")

    monkeypatch.setattr(report, "family_record", refit)
    again = write_report(tmp_path / "run", rows)  # a resumed run's report, --report-only: read back
    assert [e["known_family"] for e in again["best"]] == [e["known_family"] for e in first["best"]]
    (tmp_path / "run" / "known_families.json").write_text("{not json")
    with pytest.raises(AssertionError, match="fitted again"):  # an unreadable file is fitted again
        write_report(tmp_path / "run", rows)


POLY1 = "-y * log(p) + 2 * y * (1 - p)"  # the catalogue's Poly1 (epsilon 2): a warm start, not a find


def poly1_leads(expression: str, train: dict, seed: int) -> float:
    return {POLY1: 0.6, LEAD: 0.55}.get(expression, 0.5 if expression == CE else 0.3)


def test_a_catalogue_loss_in_disguise_is_never_a_leader(tmp_path):
    ex = FakeExecutor(accuracy=poly1_leads)
    rows = run_search(config(tmp_path / "run", losses=(POLY1, LEAD), race_seeds=0), ex)
    assert max(r["fitness"] for r in candidate_rows(rows, POLY1) if r["status"] == "ok") > max(
        r["fitness"] for r in candidate_rows(rows, LEAD) if r["status"] == "ok")  # Poly1 tops the proxy
    assert [r["expression"] for r in rows if r.get("stage") == "target"] == [LEAD]  # the novel one is checked
    assert not any(key[0] == POLY1 and key[1][0] is None for key in ex.trained)


WARM = "-y * log(p) + 1.5 * y * (1 - p)"  # Poly-1 at a tuned epsilon: a warm start, not the catalogue's


def test_a_warm_start_leads_only_when_warm_starts_compete(tmp_path):
    def warm_leads(expression, train, seed):
        return {WARM: 0.6, LEAD: 0.55}.get(expression, 0.5 if expression == CE else 0.3)

    rows = run_search(config(tmp_path / "own", losses=(WARM, LEAD), race_seeds=0, warm_starts_compete=False),
                      FakeExecutor(accuracy=warm_leads))
    assert not [r for r in rows if r.get("stage") == "target"]  # both came in as warm starts: known losses
    best = write_report(tmp_path / "own", rows)["best"]
    assert {e["expression"]: e["same_as"] for e in best}[WARM] == f"warm start {WARM}"
    rows = run_search(config(tmp_path / "compete", losses=(WARM, LEAD), race_seeds=0),
                      FakeExecutor(accuracy=warm_leads))
    assert [r["expression"] for r in rows if r.get("stage") == "target"] == [WARM]


class ScoredExecutor(FakeExecutor):
    """Records the ``score`` of every payload it is given."""

    def submit(self, payload):
        self.scores = [*getattr(self, "scores", []), (payload["train"].get("train_size"), payload.get("score"))]
        return super().submit(payload)


@pytest.mark.parametrize("score", ["best", "final"])
def test_the_score_reaches_every_training_and_the_reports(tmp_path, score):
    ex = ScoredExecutor()
    rows = run_search(config(tmp_path / "run", race_seeds=0, score=score), ex)
    assert {s for _, s in ex.scores} == {score}  # screening, CE's baselines and the target alike
    assert None in {size for size, _ in ex.scores}  # the target stage was among them
    summary = write_report(tmp_path / "run", rows)
    words = "the final model's validation accuracy" if score == "final" else "the best validation accuracy"
    assert words in summary["regime"] and words in (tmp_path / "run" / "hall_of_fame.md").read_text()
    with pytest.raises(ValueError, match="score must be one of best, final"):
        SearchConfig(**{**config(tmp_path / "x").__dict__, "score": "peak"}).resolve()
    with pytest.raises(ValueError, match="a fitness function returns its own score"):
        SearchConfig(run_dir=str(tmp_path / "f"), fitness=True, score="final", rungs=[{"budget": 0.5, "seeds": 1}],
                     target={"budget": 1.0, "seeds": 1}).resolve()


def test_a_seed_scores_the_accuracy_the_search_asked_for():
    from types import SimpleNamespace

    from nlfs.search._worker import _seeds_result

    def result(final, best):
        return SimpleNamespace(val_acc=final, best_val_acc=best, diverged=False, reason="", grad_scale_factor=1.0,
                               order_digest="", to_dict=lambda: {})

    trained = [result(0.70, 0.80), result(0.60, 0.90)]  # peaked early, then fell (memorising noise)
    assert [s["acc"] for s in _seeds_result([0, 1], trained, 1.0)["per_seed"]] == [0.80, 0.90]
    out = _seeds_result([0, 1], trained, 1.0, "final")
    assert [s["acc"] for s in out["per_seed"]] == [0.70, 0.60] and out["fitness"] == pytest.approx(0.65)


def test_one_target_seed_says_it_has_no_interval_and_a_held_lead_says_so(tmp_path):
    from nlfs.search._in_target import target_note

    assert target_note(None) == "not checked in the target"
    # one seed ahead is a sign, not a held lead: never counted as held
    one_ahead = target_note({"status": "ok", "paired": 0.004, "paired_ci": None})
    assert not one_ahead.startswith("held") and "+0.40 pp on 1 seed" in one_ahead and "not shown" in one_ahead
    assert target_note({"status": "ok", "paired": -0.004, "paired_ci": None}).startswith(
        "did not hold: -0.40 pp on 1 seed")
    assert target_note({"status": "ok", "paired": 0.004, "paired_ci": [0.001, 0.007]}) == (
        "held in the target: +0.40 pp [+0.10, +0.70]")
    assert target_note({"status": "ok", "paired": 0.004, "paired_ci": [-0.001, 0.009]}).startswith(
        "did not hold: +0.40 pp [-0.10, +0.90] in the target, within seed noise")


def test_a_killed_target_stage_resumes_without_training_twice(tmp_path):
    cfg = config(tmp_path / "run", race_seeds=0, finalists=2)
    first = FakeExecutor(die_after=None)
    # count the submissions of a full run, then die one past the first target training's submission
    run_search(config(tmp_path / "ref", race_seeds=0, finalists=2), first)
    rows = run_search(config(tmp_path / "probe", race_seeds=0, finalists=2), FakeExecutor())
    n_before_target = sum(1 for r in rows if r.get("stage") != "target" and r["status"] in ("ok", "baseline"))
    killed = FakeExecutor(die_after=n_before_target + 1)
    with pytest.raises(KeyboardInterrupt):
        run_search(cfg, killed)
    again = FakeExecutor()
    rows = run_search(config(tmp_path / "run", race_seeds=0, finalists=2, budget=2), again, resume=True)
    total = killed.trained + again.trained
    assert max(total.values()) == 1 and total == first.trained
    assert len([r for r in rows if r.get("stage") == "target"]) == 2


def test_old_saved_configs_resume_with_the_new_defaults(tmp_path):
    cfg = config(tmp_path / "run", finalists=0)
    run_search(cfg, FakeExecutor())
    db = sqlite3.connect(tmp_path / "run" / "run.db")
    (saved,) = db.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()
    old = {k: v for k, v in json.loads(saved).items() if k not in ("target", "finalists", "race_seeds")}
    db.execute("UPDATE meta SET value = ? WHERE key = 'config'", (json.dumps(old),))
    db.commit()
    db.close()
    s = Search(SearchConfig(run_dir=str(tmp_path / "run"), budget=0), resume=True)
    assert s.cfg.finalists == 2 and s.cfg.race_seeds == 6 and s.cfg.target["epochs"] == 16  # digits' default
    s.close()


# ------------------------------------------------------------------ a leader's seeds on every worker
class SeedLog(FakeExecutor):
    """Records each submission's (loss, seeds); a kill (KeyboardInterrupt) once ``die_after_results``
    results have been handed back."""

    def __init__(self, die_after_results=None, **kw):
        super().__init__(**kw)
        self.submissions, self.die_after_results, self.returned = [], die_after_results, 0

    def submit(self, payload):
        self.submissions.append((payload["expression"], tuple(payload["seeds"]), payload["train"].get("train_size")))
        return super().submit(payload)

    def wait_one(self, handles):
        if self.die_after_results is not None and self.returned >= self.die_after_results:
            raise KeyboardInterrupt
        self.returned += 1
        return super().wait_one(handles)


def test_a_leaders_seeds_train_as_jobs_of_their_own_after_ces(tmp_path):
    ex = SeedLog()
    rows = run_search(config(tmp_path / "run", race_seeds=5), ex)
    race = [(e, seeds) for e, seeds, size in ex.submissions if size == 300 and len(seeds) == 1 and seeds[0] >= 3]
    # the race's two new seeds: CE's two jobs first, then the leader's, one seed each
    assert race == [(CE, (3,)), (CE, (4,)), (LEAD, (3,)), (LEAD, (4,))]
    target = [(e, seeds) for e, seeds, size in ex.submissions if size is None]
    assert target == [(CE, (0,)), (CE, (1,)), (LEAD, (0,)), (LEAD, (1,))]
    # each stage's row still lists every seed, as one job training them all would write it
    (raced,) = [r for r in candidate_rows(rows, LEAD) if r["stage"] == "race"]
    assert [s["seed"] for s in raced["result"]["seeds"]] == [0, 1, 2, 3, 4]
    (in_target,) = [r for r in candidate_rows(rows, LEAD) if r["stage"] == "target"]
    assert [s["seed"] for s in in_target["result"]["seeds"]] == [0, 1]
    assert in_target["accuracy"] == pytest.approx((0.49 + 0.491) / 2)


def test_a_seed_finished_before_its_row_is_not_trained_again_after_a_kill(tmp_path):
    probe = SeedLog()
    run_search(config(tmp_path / "probe", race_seeds=0), probe)
    # die once CE's two target seeds and the leader's first are back, its second not yet
    first_target = next(i for i, (_, _, size) in enumerate(probe.submissions) if size is None)
    killed = SeedLog(die_after_results=first_target + 3)
    with pytest.raises(KeyboardInterrupt):
        run_search(config(tmp_path / "run", race_seeds=0), killed)
    assert killed.trained[(LEAD, (None, 3, None), 0)] == 1 and not killed.trained[(LEAD, (None, 3, None), 1)]
    again = SeedLog()
    rows = run_search(config(tmp_path / "run", race_seeds=0), again, resume=True)
    assert again.submissions == [(LEAD, (1,), None)]  # the held seed came from the run database
    (in_target,) = [r for r in candidate_rows(rows, LEAD) if r["stage"] == "target"]
    assert [s["seed"] for s in in_target["result"]["seeds"]] == [0, 1]


class FailsOnce(SeedLog):
    """The leader's second target seed fails with an error (the machine's, not the loss's) once."""

    failed = False

    def submit(self, payload):
        h = super().submit(payload)
        if (payload["expression"] == LEAD and payload["train"].get("train_size") is None
                and payload["seeds"] == [1] and not FailsOnce.failed):
            FailsOnce.failed = True
            self.results[h] = (self.results[h][0][:0], {"status": "error", "reason": "RuntimeError: out of memory",
                                                        "fitness": None, "wall_time": 0.01})
        return h


def test_an_error_is_not_held_the_resumed_run_trains_that_seed_again(tmp_path):
    FailsOnce.failed = False
    rows = run_search(config(tmp_path / "run", race_seeds=0), FailsOnce())
    (row,) = [r for r in candidate_rows(rows, LEAD) if r["stage"] == "target"]
    assert row["status"] == "error" and "out of memory" in row["reason"]
    again = SeedLog()
    rows = run_search(config(tmp_path / "run", race_seeds=0), again, resume=True)
    assert again.submissions == [(LEAD, (1,), None)]  # the error trained again; seed 0 was held
    ok = [r for r in candidate_rows(rows, LEAD) if r["stage"] == "target" and r["status"] == "ok"]
    assert len(ok) == 1 and [s["seed"] for s in ok[0]["result"]["seeds"]] == [0, 1]


# ----------------------------------------------------------------------------- SIGKILL mid-race
SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from tests.runs import run_search
from tests.search.test_target_stage import FakeExecutor, config
run_search(config({run_dir!r}, race_seeds=10), FakeExecutor(sleep=0.3, log={log!r}), resume={resume})
"""


def _script(run_dir, log, resume):
    return [sys.executable, "-c", SCRIPT.format(root=str(ROOT), run_dir=str(run_dir), log=str(log), resume=resume)]


def _race_rows(path):
    try:
        con = sqlite3.connect(path)
        try:
            return con.execute("SELECT COUNT(*) FROM evaluations WHERE stage = 'race'").fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:
        return 0


def test_sigkill_mid_race_resumes_without_training_a_seed_twice(tmp_path):
    run_dir, log = tmp_path / "run", tmp_path / "trained.jsonl"
    proc = subprocess.Popen(_script(run_dir, log, False), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (run_dir / "run.db").exists() and _race_rows(run_dir / "run.db") >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _race_rows(run_dir / "run.db") == 1  # killed between the two racing steps
    subprocess.run(_script(run_dir, log, True), cwd=ROOT, check=True, capture_output=True, timeout=300)
    keys = [json.loads(line) for line in log.read_text().splitlines()]
    trained = Counter((loss, tuple(regime), seed) for loss, regime, seed in keys)
    assert max(trained.values()) == 1, [k for k, v in trained.items() if v > 1]
    con = sqlite3.connect(run_dir / "run.db")
    seeds = [json.loads(r[0])["seeds"] for r in con.execute(
        "SELECT result FROM evaluations WHERE stage = 'race' ORDER BY id")]
    con.close()
    assert [len(s) for s in seeds] == [5, 7]  # the race went on where it stopped
    assert sum(1 for k in trained if k[0] == LEAD and k[1][2] == 4) == 7


# ------------------------------------------------------------------------------------- the CLI
@pytest.mark.parametrize("target, message", [("epochs=eight", "epochs must be an integer"),
                                             ("train_size=all,colour=red", "unknown keys"),
                                             ("epochs", "expected key=value")])
def test_a_bad_target_is_one_line_and_exit_2_before_any_run_dir(tmp_path, target, message):
    run_dir = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "nlfs.evolve", "--dataset", "digits", "--target", target,
                          "--run-dir", str(run_dir)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not run_dir.exists()


def test_cli_target_finalists_and_race_seeds_define_the_run(tmp_path, capsys):
    from nlfs.evolve import build_parser, config_from_args, main

    def cfg(*argv):
        return config_from_args(build_parser().parse_args(["--dataset", "digits", "--run-dir", str(tmp_path), *argv]))

    quick = cfg()
    assert quick.target == {"train_size": "all", "epochs": 16, "seeds": 1} and quick.finalists == 1
    assert quick.time_limit == 60 and quick.race_seeds == 3  # racing at the last rung, one step
    assert cfg("--preset", "paper").race_seeds == 6 and cfg("--race-seeds", "5").race_seeds == 5
    paper = cfg("--preset", "paper")
    assert paper.finalists >= 2 and paper.target["seeds"] >= 2
    given = cfg("--target", "train_size=all,epochs=4,label_noise=0.2", "--finalists", "3", "--race-seeds", "0")
    assert given.target == {"train_size": "all", "epochs": 4, "label_noise": 0.2, "seeds": 1}  # the preset's seeds
    assert cfg("--preset", "paper", "--target", "epochs=4").target["seeds"] == paper.target["seeds"]
    assert cfg("--target", "epochs=4,seeds=5").target["seeds"] == 5
    assert (given.finalists, given.race_seeds) == (3, 0)
    help_text = "".join(build_parser().format_help().split())
    assert "fashion-mnist:train_size=all,epochs=8" in help_text and "digits:train_size=all,epochs=16" in help_text
    for option in (["--target", "epochs=3"], ["--finalists", "0"], ["--race-seeds", "2"]):
        with pytest.raises(SystemExit) as err:
            main(["--resume", str(tmp_path), *option])
        assert err.value.code == 2
        assert "drop " + option[0] in capsys.readouterr().err


def test_cli_header_names_a_tables_rows_as_the_report_does(tmp_path, capsys):
    from nlfs.evolve import main
    from tests.data.user_data import write_wine

    wine = write_wine(tmp_path / "wine.npz")
    assert main(["--dataset", str(wine), "--run-dir", str(tmp_path / "run"), "--budget", "1", "--rungs",
                 "epochs=1,seeds=1", "--target", "train_size=all,epochs=1", "--finalists", "1", "--race-seeds", "0",
                 "--seed-losses", "Poly1", "--seed-mutants", "0", "--workers", "1", "--threads", "1",
                 "--backend", "torch", "--no-progress"]) == 0
    out = capsys.readouterr()
    header = [line for line in out.err.splitlines() if line.startswith(("nlfs.evolve:", "  then"))]
    assert len(header) == 2 and "(mlp, backend torch" in header[0]
    assert "trained in the target: all training samples, 1 epoch," in header[1]
    assert "training images" not in out.err + out.out and "surrogate" not in out.err + out.out


@pytest.mark.parametrize("ce, said", [
    (0.12, "warning: CE reaches only 12.0% at rung 0: steps=4, 3 seed(s) (chance 10.0%)"),  # digits: 10 classes
    (1.0, "warning: CE reaches 100.0% at rung 0: steps=4, 3 seed(s): no loss can beat it"),  # the ceiling
])
def test_ce_near_chance_or_at_the_ceiling_of_a_rung_is_said_once(tmp_path, capsys, ce, said):
    """There CE ranks nothing (every loss is noise, or none can lead): the search says so, once per rung."""
    def accuracy(expression, train, seed):
        return ce if expression == CE else 0.3

    run_search(config(tmp_path / "run", race_seeds=0), FakeExecutor(accuracy=accuracy))
    assert capsys.readouterr().err.count(said) == 1
    run_search(config(tmp_path / "fine", race_seeds=0), FakeExecutor())  # CE at 50%: nothing to say
    assert "warning: CE reaches" not in capsys.readouterr().err


def test_the_chance_check_loads_the_data_as_the_trainings_do(tmp_path, capsys):
    # an image folder of mixed sizes loads only resized: the check after CE's baseline must resize it too
    from PIL import Image

    for c, size in (("a", (10, 10)), ("b", (12, 9))):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(12):
            Image.new("L", size, color=20 * i).save(tmp_path / "imgs" / c / f"{i}.png")
    cfg = config(tmp_path / "mixed", race_seeds=0, dataset=str(tmp_path / "imgs"), train_size=None, val_size=6,
                 train_overrides={"resize": (8, 8)})
    run_search(cfg, FakeExecutor(accuracy=lambda expression, train, seed: 0.51))
    assert "chance 50.0%" in capsys.readouterr().err


def test_cli_searches_an_image_folder_of_mixed_sizes_with_resize(tmp_path, capsys):
    from PIL import Image

    from nlfs.evolve import main

    for c, size in (("a", (10, 10)), ("b", (12, 9))):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(12):
            Image.new("L", size, color=20 * i).save(tmp_path / "imgs" / c / f"{i}.png")
    argv = ["--dataset", str(tmp_path / "imgs"), "--budget", "1", "--rungs", "steps=2,seeds=1", "--target",
            "train_size=all,steps=2", "--finalists", "1", "--race-seeds", "0", "--seed-losses", "Poly1",
            "--seed-mutants", "0", "--val-size", "6", "--workers", "1", "--threads", "1", "--backend", "torch",
            "--no-progress"]
    # without --resize: one line naming the option, before any run dir
    assert main([*argv, "--run-dir", str(tmp_path / "no")]) != 0
    assert "--resize" in capsys.readouterr().err and not (tmp_path / "no").exists()
    assert main([*argv, "--run-dir", str(tmp_path / "run"), "--resize", "8"]) == 0
    assert "verdict" in capsys.readouterr().out
