"""TaylorGLO search (python -m nlfs.evolve --algorithm taylor): CMA-ES trials land in run.db; resume."""

import json
import time
import types

import pytest

import nlfs
import nlfs.train
from nlfs import evolve
from nlfs.search import RunDB, SearchConfig
from nlfs.search._report import write_report
from nlfs.search._taylor import TaylorSearch, is_taylor_run

FAST = dict(dataset="digits", steps=40, train_size=400, val_size=200, backend="torch", progress=False)
NAMES = [f"t{i}" for i in range(8)]


def _fake(calls, kill_at=None):
    def train(spec, cfg, constants=None, **kw):
        if kill_at is not None and len(calls) + 1 == kill_at:
            raise KeyboardInterrupt
        c = dict(spec.constants)
        calls.append(c)
        v = 1.0 / (1.0 + sum(x * x for x in c.values()))
        return types.SimpleNamespace(best_val_acc=v, diverged=False, reason="", to_dict=lambda: {})
    return train


def test_taylor_search_end_to_end_from_the_cli(tmp_path, capsys):
    run = tmp_path / "taylor"
    assert evolve.main(["--algorithm", "taylor", "--dataset", "digits", "--steps", "40",
                        "--train-size", "400", "--val-size", "200", "--backend", "torch", "--budget", "4",
                        "--run-dir", str(run), "--no-progress", "--seed", "0", "--workers", "1"]) == 0
    db = RunDB(run / "run.db")
    rows = db.rows()
    cfg = db.get_meta("config")
    opts = db.get_meta("taylor")
    db.close()
    assert cfg["algorithm"] == "taylor" and opts["popsize"] == 20 and opts["sigma0"] == 1.2
    trials = [r for r in rows if r["status"] != "baseline"]
    assert len(trials) == 4 and len([r for r in rows if r["status"] == "baseline"]) == 1
    expr = str(nlfs.losses.get("TaylorGLO").expr)
    for r in trials:
        assert sorted(r["constants"]) == NAMES and r["expression"] == expr
        assert r["status"] in ("ok", "diverged") or r["status"].startswith("rejected:")
        assert r["dataset"] == "digits" and r["backend"] == "torch" and r["seed"] == 0
        assert r["wall_time"] > 0 and r["genotype"]["params"] == r["constants"]
    assert [r["genotype"]["trial"] for r in trials] == [0, 1, 2, 3]
    assert (run / "taylor.journal").exists() and (run / "hall_of_fame.md").exists()
    assert is_taylor_run(run)
    # with seed 0 the first three trials fail the rejection test and the fourth trains (measured)
    ok = [r for r in trials if r["status"] == "ok"]
    assert ok and all(0 <= r["fitness"] <= 1 for r in ok)
    assert "constants={'t0':" in (run / "best_losses.py").read_text()  # export keeps the 8 values
    assert "taylor#" in capsys.readouterr().out  # the run directory is .../taylor: losses are taylor#<id>


def _cfg(tmp_path, budget):
    # no rejection test: every trial reaches the (fake) trainer
    return SearchConfig(run_dir=str(tmp_path / "run"), budget=budget, seed=1, baseline=False,
                        filters=("validity",), **FAST)


def test_killed_taylor_search_resumes_without_repeating_trials(tmp_path, monkeypatch):
    first: list = []
    monkeypatch.setattr(nlfs.train, "train", _fake(first, kill_at=4))
    s = TaylorSearch(_cfg(tmp_path, 6), log=lambda m: None)
    with pytest.raises(KeyboardInterrupt):
        s.run()
    s.close()
    db = RunDB(tmp_path / "run" / "run.db")
    assert db.count("WHERE status != 'baseline'") == 3 == len(first)
    db.close()
    second: list = []
    monkeypatch.setattr(nlfs.train, "train", _fake(second))
    s = TaylorSearch(_cfg(tmp_path, 0), resume=True, log=lambda m: None)  # budget 0: keep the saved one
    rows = s.run()
    assert s.cfg.budget == 6 and s.cfg.algorithm == "taylor"
    s.close()
    trials = [r for r in rows if r["status"] != "baseline"]
    assert len(trials) == 6
    assert len({json.dumps(r["constants"], sort_keys=True) for r in trials}) == 6  # no trial twice
    assert len(second) == 3 and not any(c in first for c in second)
    assert sorted(r["genotype"]["trial"] for r in trials) == sorted({r["genotype"]["trial"] for r in trials})
    write_report(tmp_path / "run", rows)  # reports work on a taylor run
    # the evaluation that was in flight is evaluated again (a retry of the stale trial)
    import optuna

    study = optuna.load_study(study_name="taylor", storage=_journal(tmp_path / "run"))
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 6 and states.count("FAIL") == 1


def _journal(run_dir):
    from nlfs.search import make_storage

    return make_storage(run_dir, filename="taylor.journal")


def test_trial_recorded_but_not_told_is_told_from_run_db(tmp_path, monkeypatch):
    """Killed between writing the row and telling Optuna: the resume tells the trial from the row."""
    calls: list = []
    monkeypatch.setattr(nlfs.train, "train", _fake(calls))
    s = TaylorSearch(_cfg(tmp_path, 3), log=lambda m: None)
    real_tell = s.study.tell
    state = {"n": 0}

    def tell(trial, value=None, **kw):
        state["n"] += 1
        if state["n"] == 2:
            raise KeyboardInterrupt
        return real_tell(trial, value, **kw)

    s.study.tell = tell
    with pytest.raises(KeyboardInterrupt):
        s.run()
    s.close()
    assert len(calls) == 2
    s = TaylorSearch(_cfg(tmp_path, 0), resume=True, log=lambda m: None)
    rows = s.run()
    s.close()
    assert len(calls) == 3  # one new trial; the recorded one was not trained again
    assert len([r for r in rows if r["status"] != "baseline"]) == 3
    study = __import__("optuna").load_study(study_name="taylor", storage=_journal(tmp_path / "run"))
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3


def test_each_trial_row_records_its_gradient_scale_factor(tmp_path, monkeypatch):
    def train(spec, cfg, constants=None, **kw):
        return types.SimpleNamespace(best_val_acc=0.5, diverged=False, reason="", to_dict=lambda: {},
                                     grad_scale_factor=2.5, order_digest="")

    monkeypatch.setattr(nlfs.train, "train", train)
    s = TaylorSearch(_cfg(tmp_path, 2), log=lambda m: None)
    try:
        rows = s.run()
    finally:
        s.close()
    trials = [r for r in rows if r["status"] != "baseline"]
    assert len(trials) == 2 and all(r["status"] == "ok" and r["scale"] == 2.5 for r in trials)


@pytest.mark.parametrize("score", ["best", "final"])
def test_a_taylor_run_scores_its_trials_and_ce_by_the_accuracy_it_asks_for(tmp_path, monkeypatch, score):
    def train(spec, cfg, constants=None, **kw):  # peaked at 0.8, ended at 0.6
        return types.SimpleNamespace(best_val_acc=0.8, val_acc=0.6, diverged=False, reason="", to_dict=lambda: {},
                                     grad_scale_factor=1.0, order_digest="")

    monkeypatch.setattr(nlfs.train, "train", train)
    cfg = SearchConfig(run_dir=str(tmp_path / "run"), budget=2, seed=1, filters=("validity",), score=score, **FAST)
    s = TaylorSearch(cfg, log=lambda m: None)
    try:
        rows = s.run()
    finally:
        s.close()
    want = 0.6 if score == "final" else 0.8
    assert {r["status"] for r in rows} == {"ok", "baseline"}  # the trials and CE's baseline
    assert [r["fitness"] for r in rows] == [want] * len(rows)


def test_the_searches_build_their_executor_with_the_configured_threads(tmp_path, monkeypatch):
    """SearchConfig.threads reaches the executor (TaylorGLO and the other algorithms); like workers, a
    resumed run takes the new value."""
    import nlfs.search._runner as runner
    import nlfs.search._taylor as taylor
    from nlfs.search import Search

    built = []

    class Built(Exception):
        pass

    def fake(kind, workers, address=None, threads=None, pack=1):
        built.append((kind, workers, threads))
        raise Built

    monkeypatch.setattr(runner, "make_executor", fake)
    monkeypatch.setattr(taylor, "make_executor", fake)
    for cls, name in ((TaylorSearch, "taylor"), (Search, "gp")):
        cfg = SearchConfig(run_dir=str(tmp_path / name), budget=2, seed=1, baseline=False, threads=1,
                           algorithm="gp", space="gp", **FAST)
        s = cls(cfg, log=lambda m: None)
        with pytest.raises(Built):
            s.run()
        s.close()
        s = cls(SearchConfig(run_dir=str(tmp_path / name), threads=3, **FAST), resume=True, log=lambda m: None)
        with pytest.raises(Built):
            s.run()
        s.close()
    assert built == [("local", 1, 1), ("local", 1, 3)] * 2


# ------------------------------------------------------------------------------------- time limit
def _slow(calls, seconds):
    """A fake trainer whose every training takes ``seconds``."""
    def train(spec, cfg, constants=None, **kw):
        calls.append(dict(spec.constants))
        time.sleep(seconds)
        return types.SimpleNamespace(best_val_acc=0.5, diverged=False, reason="", to_dict=lambda: {},
                                     grad_scale_factor=1.0, order_digest="")
    return train


def _trial_states(run_dir):
    import optuna

    return [t.state.name for t in optuna.load_study(study_name="taylor", storage=_journal(run_dir)).trials]


def test_a_time_limit_stops_the_taylor_search_and_a_resume_gets_it_afresh(tmp_path, monkeypatch):
    """No trial starts after the limit; the one in flight when it passes finishes and is recorded."""
    calls: list = []
    monkeypatch.setattr(nlfs.train, "train", _slow(calls, 0.2))
    cfg = _cfg(tmp_path, 20)
    cfg.time_limit = 0.05  # the first trial starts before it and ends after it
    s = TaylorSearch(cfg, log=lambda m: None)
    rows = s.run()
    s.close()
    trials = [r for r in rows if r["status"] != "baseline"]
    assert len(trials) == len(calls) == 1 and trials[0]["status"] == "ok"
    assert s.time_limit_reached and s.trainings == 1
    assert _trial_states(tmp_path / "run") == ["COMPLETE"]  # nothing asked and left untold

    # a resumed session keeps the run's limit and counts it from its own start: one more trial
    s = TaylorSearch(_cfg(tmp_path, 0), resume=True, log=lambda m: None)
    assert s.cfg.time_limit == 0.05 and s.cfg.budget == 20
    rows = s.run()
    s.close()
    assert s.time_limit_reached and s.trainings == 2 == len(calls)
    assert [r["genotype"]["trial"] for r in rows if r["status"] != "baseline"] == [0, 1]

    # a longer limit: the budget ends the session, not the limit
    cfg = _cfg(tmp_path, 4)
    cfg.time_limit = 600.0
    s = TaylorSearch(cfg, resume=True, log=lambda m: None)
    rows = s.run()
    s.close()
    assert not s.time_limit_reached and s.trainings == 4 == len(calls)
    assert _trial_states(tmp_path / "run") == ["COMPLETE"] * 4


def test_a_taylor_run_from_the_cli_says_its_time_limit_was_reached(tmp_path, monkeypatch, capsys):
    calls: list = []
    monkeypatch.setattr(nlfs.train, "train", _slow(calls, 0.2))
    run = tmp_path / "taylor"
    args = ["--algorithm", "taylor", "--no-filters", "--budget", "20", "--time-limit", "0.001", "--run-dir",
            str(run), "--no-progress", "--seed", "0", "--workers", "1"]
    assert evolve.main([*args, "--dataset", "digits", "--steps", "40", "--train-size", "400",
                        "--val-size", "200", "--backend", "torch"]) == 0
    err = capsys.readouterr().err
    resume = f"python -m nlfs.evolve --resume {run}"
    assert f"nlfs.evolve: time limit of 0.001 min reached after 1 candidates; resume with: {resume}" in err
    assert len(calls) == 2  # CE's baseline, then the one trial started before the limit
    summary = json.loads((run / "summary.json").read_text())
    assert (run / "hall_of_fame.md").exists() and summary

    assert evolve.main(["--resume", str(run), "--no-progress", "--workers", "1"]) == 0
    err = capsys.readouterr().err
    assert f"nlfs.evolve: time limit of 0.001 min reached after 2 candidates; resume with: {resume}" in err
    assert len(calls) == 3


def test_discover_with_the_taylor_algorithm_keeps_its_time_limit(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(nlfs.train, "train", _slow(calls, 0.2))
    said: list = []
    found = nlfs.discover("digits", budget=20, time_limit=0.05, run_dir=tmp_path / "run", algorithm="taylor",
                          no_filters=True, progress=False, log=said.append, seed=0, steps=40, train_size=400,
                          val_size=200, backend="torch")
    assert len(calls) == 2  # CE's baseline, then the one trial started before the limit
    assert any(m.startswith("nlfs.discover: time limit of 0.05 s reached after 1 candidates") for m in said)
    assert (found.run_dir / "summary.json").exists()
