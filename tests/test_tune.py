"""nlfs.tune: Optuna tunes a loss's constants on the surrogate; studies resume; numbers lift."""

import json
import types

import pytest

import nlfs
import nlfs.train
from nlfs.search import RunDB, SearchConfig
from nlfs.train import TrainConfig
from nlfs.tune import lift_constants, main, tune, tune_run

FAST = dict(dataset="digits", steps=40, train_size=400, val_size=200, backend="torch")


def fake_result(v, diverged=False):
    return types.SimpleNamespace(best_val_acc=v, diverged=diverged, reason="boom" if diverged else "",
                                 grad_scale_factor=1.0, order_digest="",
                                 to_dict=lambda: {"best_val_acc": v})


class FakeTrain:
    """Stands in for nlfs.train.train: fitness from the constants, instant; can be 'killed'."""

    def __init__(self, fn=None, kill_at=None):
        self.calls = []
        self.fn = fn or (lambda c: 1.0 / (1.0 + sum((v - 1.0) ** 2 for v in c.values())))
        self.kill_at = kill_at

    def __call__(self, spec, cfg, constants=None, **kw):
        c = dict(spec.constants)
        if self.kill_at is not None and len(self.calls) + 1 == self.kill_at:
            raise KeyboardInterrupt  # the process dies mid-training
        self.calls.append(c)
        v = self.fn(c)
        return fake_result(0.0, True) if v is None else fake_result(v)


def test_lift_constants_turns_numbers_into_named_constants():
    e = nlfs.parse("-1 * log(p) * y + 2.5 * (1 - p) + 2.5 * y + 1e-7")
    lifted, values = lift_constants(e)
    assert sorted(values.values()) == [-1.0, 1.0, 2.5]  # 2.5 occurs twice: one constant
    assert set(lifted.constants) == set(values) and all(k.startswith("c") for k in values)
    assert "1e-07" in str(lifted)  # epsilon guards stay literals
    assert str(lifted.substitute(values)) == str(e)
    # names already taken are skipped
    lifted2, values2 = lift_constants(nlfs.parse("c0 * y * log(p) + 3 * p"))
    assert "c0" not in values2 and list(values2.values()) == [3.0]


def test_tuning_fixes_a_bad_constant_on_the_surrogate(tmp_path):
    """NGL with alpha = 0 learns little in 40 steps on digits (measured: 0.12-0.22 validation accuracy,
    vs 0.93-0.97 for alpha in 4.4-5.7): a few trials must find a much better alpha."""
    res = tune("NGL", {"alpha": 0.0}, n_trials=3, batch=3, search_space={"alpha": (0.0, 8.0)},
               train_config=TrainConfig(**FAST), storage_dir=tmp_path, seed=0, log=lambda m: None)
    assert res.trials[0]["constants"] == {"alpha": 0.0} and res.trials[0]["initial"]
    assert res.initial_fitness == res.trials[0]["fitness"]
    assert res.sampler == "gp"  # one constant: CMA-ES needs two
    assert res.best_fitness >= res.initial_fitness + 0.3, res.trials
    assert res.best_constants["alpha"] > 1.0
    assert (tmp_path / "tune.journal").exists()


def test_two_constants_use_cmaes_and_failures_do_not_crash(tmp_path, monkeypatch):
    fake = FakeTrain(lambda c: None if c["b"] > 1.5 else 1.0 / (1.0 + (c["a"] - 0.5) ** 2))
    monkeypatch.setattr(nlfs.train, "train", fake)
    res = tune("SCE", n_trials=8, batch=4, train_config=TrainConfig(**FAST), storage_dir=tmp_path, seed=1,
               log=lambda m: None)
    assert res.sampler == "cmaes" and len(res.trials) == 8 == len(fake.calls)
    assert fake.calls[0] == {"a": 0.1, "b": 1.0}  # the catalogue values, enqueued first
    assert res.trials[0]["initial"] and res.trials[0]["constants"] == {"a": 0.1, "b": 1.0}
    for t in res.trials:
        if t["status"] == "diverged":
            assert t["fitness"] == 0.0
    assert res.best_fitness >= res.initial_fitness


def test_killed_tuning_resumes_without_repeating_finished_trials(tmp_path, monkeypatch):
    kw = dict(n_trials=6, batch=2, train_config=TrainConfig(**FAST), storage_dir=tmp_path, seed=0,
              search_space={"alpha": (0.0, 8.0)}, sampler="tpe", log=lambda m: None)
    first = FakeTrain(lambda c: c["alpha"] / 10, kill_at=4)
    monkeypatch.setattr(nlfs.train, "train", first)
    with pytest.raises(KeyboardInterrupt):
        tune("NGL", {"alpha": 0.0}, **kw)
    assert len(first.calls) == 3  # trials 0-2 done, trial 3 killed in training
    second = FakeTrain(lambda c: c["alpha"] / 10)
    monkeypatch.setattr(nlfs.train, "train", second)
    res = tune("NGL", {"alpha": 0.0}, **kw)
    assert len(res.trials) == 6
    assert len(second.calls) == 3  # 6 - 3 finished; nothing trained twice ...
    done_first = [c["alpha"] for c in first.calls]
    assert not any(c["alpha"] in done_first for c in second.calls)
    assert res.trials[0]["constants"] == {"alpha": 0.0}
    # ... except the trial that was in flight, evaluated again with the same value
    again = tune("NGL", {"alpha": 0.0}, **kw)  # complete: nothing to do
    assert len(second.calls) == 3 and len(again.trials) == 6


def test_cli_tunes_a_catalogue_loss(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(nlfs.train, "train", FakeTrain(lambda c: 0.5 + 0.05 * c["a"] * 0))
    assert main(["--loss", "LabelSmoothingCE", "--constants", "a=0.95", "--range", "a=0:1", "--trials", "3",
                 "--batch", "2", "--run-dir", str(tmp_path), "--steps", "10", "--backend", "torch"]) == 0
    out = capsys.readouterr().out
    assert "initial 0.5000" in out and "sampler gp" in out
    assert (tmp_path / "tune.journal").exists()
    saved = json.loads(next(tmp_path.glob("tune-*.json")).read_text())
    assert saved["trials"][0]["constants"] == {"a": 0.95}


def test_cli_compares_a_tuned_loss_with_ce_in_pp(tmp_path, monkeypatch, capsys):
    """Issue #24: tuning one loss printed a plain accuracy with no CE reference; it now trains CE with
    the same training and gives the difference in percentage points."""
    monkeypatch.setattr(nlfs.train, "train", FakeTrain(lambda c: 0.6 if c else 0.5))  # CE has no constants
    assert main(["--loss", "LabelSmoothingCE", "--trials", "2", "--batch", "2", "--run-dir", str(tmp_path),
                 "--steps", "10", "--backend", "torch"]) == 0
    out = capsys.readouterr().out
    assert "CE with the same training: 0.5000; best vs CE: +10.00 pp" in out


def test_tune_the_finalists_of_a_search_run(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    db = RunDB(run / "run.db")
    cfg = SearchConfig(run_dir=str(run), **FAST)
    db.set_meta("config", cfg.to_dict())
    for i, (expr, fit) in enumerate([("-y * log(p) * 2", 0.9), ("-y * log(p + 0.5)", 0.8),
                                     ("-y * log(p)", 0.7), ("y * p", 0.95)]):
        db.record({"canonical": expr, "expression": expr, "constants": {}, "fitness": fit, "status": "ok",
                   "sign": 1.0, "size": 5 + i, "dataset": "digits"})
    db.close()
    fake = FakeTrain(lambda c: 0.5 + 0.01 * sum(c.values()))
    monkeypatch.setattr(nlfs.train, "train", fake)
    assert main(["--run-dir", str(run), "--top", "2", "--trials", "3", "--batch", "3"]) == 0
    tuned = json.loads((run / "tuned.json").read_text())
    # the top 2 are the top 2: "y * p" (best) has no number to tune, is reported so and counted (issue #24:
    # it used to be skipped silently for a worse candidate); the next one is tuned
    assert [t["id"] for t in tuned] == [4, 1]
    assert tuned[0]["nothing_to_tune"] and tuned[0]["trials"] == 0 and tuned[0]["name"] == "run#4"
    assert tuned[1]["expression"] == "-y * log(p) * c0" and tuned[1]["initial_constants"] == {"c0": 2.0}
    assert tuned[1]["trials"] == 3 and tuned[1]["tuned_name"] == "run#1-tuned"
    assert tuned[1]["ce_accuracy"] == 0.5
    assert tuned[1]["vs_ce_pp"] == pytest.approx((tuned[1]["best_fitness"] - 0.5) * 100)
    text = (run / "tuned_losses.py").read_text()
    assert "constants={'c0':" in text and "'run#1-tuned'" in text
    ns = {}
    exec(compile(text, "tuned_losses.py", "exec"), ns)  # the export registers them with the tuned values
    out_text = capsys.readouterr().out
    assert "nothing to tune" in out_text and "Regime: digits (400 training images)" in out_text
    out = tune_run(run, 2, n_trials=3, batch=3, log=lambda m: None)  # resumes: nothing retrained, CE included
    assert len(out) == 2 and len(fake.calls) == 4  # CE once, three trials


def test_persistent_errors_stop_the_tuning(tmp_path, monkeypatch):
    def broken(*a, **k):
        raise FileNotFoundError("no such dataset")

    monkeypatch.setattr(nlfs.train, "train", broken)
    with pytest.raises(RuntimeError, match="no such dataset"):
        tune("NGL", n_trials=10, batch=2, train_config=TrainConfig(**FAST), storage_dir=tmp_path,
             log=lambda m: None)


def test_published_losses_in_disguise_are_skipped_unless_kept(tmp_path, monkeypatch):
    import nlfs.losses

    poly = nlfs.losses.get("Poly1")
    poly1 = str(poly.expr.substitute(dict(poly.constants)))
    run = tmp_path / "run"
    db = RunDB(run / "run.db")
    db.set_meta("config", SearchConfig(run_dir=str(run), **FAST).to_dict())
    for i, (expr, fit) in enumerate([(poly1, 0.9), ("-y * log(p + 0.5)", 0.8)]):
        db.record({"canonical": expr, "expression": expr, "constants": {}, "fitness": fit, "status": "ok",
                   "sign": 1.0, "size": 5 + i, "dataset": "digits"})
    db.close()
    monkeypatch.setattr(nlfs.train, "train", FakeTrain(lambda c: 0.5))
    logs = []
    assert [t["id"] for t in tune_run(run, 1, n_trials=1, batch=1, log=logs.append, include_known=True)] == [1]
    out = tune_run(run, 1, n_trials=1, batch=1, log=logs.append)  # by default, as nlfs.eliminate
    assert [t["id"] for t in out] == [2] and any("Poly1 in disguise" in m for m in logs)
    assert [t["id"] for t in tune_run(run, 1, n_trials=1, batch=1, log=lambda m: None, novel=True)] == [2]


def test_a_tuned_loss_carries_the_scale_its_trials_trained_at(tmp_path, monkeypatch):
    """A search with grad_scale "ce" trained its candidates multiplied by a measured factor: the tuning
    trains the same way, and tuned.json / tuned_losses.py carry the best trial's factor (not scale=1.0);
    the export registers under <run>#<id>-tuned, beside (not over) the search's <run>#<id>."""
    run = tmp_path / "run"
    db = RunDB(run / "run.db")
    db.set_meta("config", SearchConfig(run_dir=str(run), grad_scale="ce", **FAST).to_dict())
    db.record({"canonical": "a", "expression": "-y * log(p + 0.01) * 2", "constants": {}, "fitness": 0.9,
               "status": "ok",
               "sign": 1.0, "size": 5, "dataset": "digits", "scale": 0.198})
    db.close()

    def train(spec, cfg, constants=None, **kw):
        assert cfg.grad_scale == "ce" and spec.scale == 1.0  # the trainer measures: no fixed scale on top
        out = fake_result(0.5 + 0.01 * sum(dict(spec.constants).values()))
        out.grad_scale_factor = 0.198 if str(spec.expr) != "-y * log(p)" else 1.0
        return out

    monkeypatch.setattr(nlfs.train, "train", train)
    out = tune_run(run, 1, n_trials=2, batch=2, log=lambda m: None)
    assert out[0]["scale"] == pytest.approx(0.198) and out[0]["tuned_name"] == "run#1-tuned"
    text = (run / "tuned_losses.py").read_text()
    assert "scale=0.198" in text and "'run#1-tuned'" in text
    try:
        exec(compile(text, "tuned_losses.py", "exec"), {})
        assert nlfs.losses.get("run#1-tuned").scale == pytest.approx(0.198)
    finally:
        nlfs.losses._CATALOGUE.pop(nlfs.losses._key("run#1-tuned"), None)


def test_a_runs_tuning_scores_as_the_run_did_and_skips_its_warm_starts(tmp_path, monkeypatch):
    warm = "-y * log(p + 0.25)"  # a warm start that is no catalogue loss
    run = tmp_path / "run"
    db = RunDB(run / "run.db")
    db.set_meta("config", SearchConfig(run_dir=str(run), score="final", seed_losses=(warm,), **FAST).to_dict())
    for i, (expr, fit) in enumerate([(warm, 0.9), ("-y * log(p + 0.5)", 0.8)]):
        db.record({"canonical": expr, "expression": expr, "constants": {}, "fitness": fit, "status": "ok",
                   "sign": 1.0, "size": 5 + i, "dataset": "digits"})
    db.close()

    def train(spec, cfg, constants=None, **kw):  # peaked at 0.8, ended at 0.6: the run scores the end
        return types.SimpleNamespace(best_val_acc=0.8, val_acc=0.6, diverged=False, reason="", grad_scale_factor=1.0,
                                     order_digest="", to_dict=lambda: {})

    monkeypatch.setattr(nlfs.train, "train", train)
    logs = []
    out = tune_run(run, 1, n_trials=1, batch=1, log=logs.append, novel=True)
    assert [t["id"] for t in out] == [2] and any(f"warm start {warm} in disguise" in m for m in logs)
    assert out[0]["ce_accuracy"] == 0.6 and out[0]["best_fitness"] == 0.6
    assert "scored by the final model's validation accuracy" in out[0]["trained_on"]
    assert json.loads((run / "tune_ce.json").read_text())["score"] == "final"


def test_tuned_md_says_the_tuned_accuracy_is_the_best_of_its_trials(tmp_path, monkeypatch, capsys):
    """The tuned accuracy is a maximum over the trials on one seed: tuned.md and the single-loss CLI say
    so (biased upward) beside the Δ vs CE, and where to confirm it."""
    run = tmp_path / "run"
    db = RunDB(run / "run.db")
    db.set_meta("config", SearchConfig(run_dir=str(run), **FAST).to_dict())
    db.record({"canonical": "a", "expression": "-y * log(p + 0.5)", "constants": {}, "fitness": 0.8, "status": "ok",
               "sign": 1.0, "size": 5, "dataset": "digits"})
    db.close()
    monkeypatch.setattr(nlfs.train, "train", FakeTrain(lambda c: 0.5 + 0.01 * sum(c.values())))
    tune_run(run, 1, n_trials=3, batch=3, log=lambda m: None)
    md = (run / "tuned.md").read_text()
    assert ("The tuned accuracy is the best of 3 trials on that one seed: biased upward by the selection, and so "
            "is its Δ; confirm it on other seeds with nlfs.eliminate --tuned.") in md
    assert main(["--loss", "LabelSmoothingCE", "--trials", "2", "--batch", "2", "--run-dir", str(tmp_path / "one"),
                 "--steps", "10", "--backend", "torch"]) == 0
    assert "best of 2 trials on that one seed: biased upward" in capsys.readouterr().out


@pytest.mark.parametrize("bad", [{"n_trials": 0}, {"batch": 0}, {"workers": -1}, {"score": "peak"}])
def test_bad_tuning_settings_stop_before_a_study_or_a_training(tmp_path, monkeypatch, bad):
    monkeypatch.setattr(nlfs.train, "train", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(ValueError, match=next(iter(bad))):
        tune("Focal", train_config=TrainConfig(**FAST), storage_dir=tmp_path / "studies", **bad)
    assert not (tmp_path / "studies").exists()
