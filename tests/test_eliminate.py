"""nlfs.eliminate: rounds keep the configured counts, CE under the same seeds, resume skips pairs."""

import json
import sqlite3
import types
import zlib

import pytest

import nlfs.train
from nlfs.eliminate import Elimination, Protocol, eliminate, main
from nlfs.search import RunDB, SearchConfig
from nlfs.train import TrainConfig
from tests.runs import drawn_split

FAST = dict(dataset="digits", steps=20, train_size=400, val_size=200, backend="torch", progress=False)
# CE first (a catalogue loss: the default pool leaves it out), then seven that are no catalogue loss
EXPRS = ["-y * log(p)", "-y * log(p + 0.1)", "-y * log(p) * 2", "y * (1 - p) ** 3", "-y * p ** 2",
         "-y * log(p) + y * (1 - p)", "-y * (1 - p) ** 3 * log(p)", "y * (1 - p) ** 2"]


def make_run(tmp_path):
    run = tmp_path / "run"
    db = RunDB(run / "run.db")
    db.set_meta("config", SearchConfig(run_dir=str(run), seed=0, **FAST).to_dict())
    base = {"constants": {}, "sign": 1.0, "dataset": "digits", "size": 5}
    for i, e in enumerate(EXPRS):
        db.record({**base, "canonical": e, "expression": e, "fitness": 0.5 + 0.01 * i, "status": "ok"})
    db.record({**base, "canonical": "dup", "expression": EXPRS[-1], "fitness": 0.9, "status": "ok"})
    db.record({**base, "canonical": "x", "expression": "y * p * p", "fitness": None,
               "status": "rejected:integrity"})
    db.record({**base, "canonical": "b", "expression": "-y * log(p)", "fitness": 0.6, "status": "baseline"})
    db.close()
    return run


class FakeTrain:
    def __init__(self, kill_at=None):
        self.calls = []
        self.configs = []  # the TrainConfig of each call, in order
        self.kill_at = kill_at

    def __call__(self, spec, cfg, constants=None, **kw):
        if self.kill_at is not None and len(self.calls) + 1 == self.kill_at:
            raise KeyboardInterrupt
        self.calls.append((str(spec.expr), cfg.seed, cfg.steps, cfg.model))
        self.configs.append((str(spec.expr), cfg))
        v = (zlib.crc32(str(spec.expr).encode()) % 1000) / 1000 * 0.5 + 0.3 + 0.01 * cfg.seed
        return types.SimpleNamespace(best_val_acc=v, diverged=False, reason="", to_dict=lambda: {},
                                     grad_scale_factor=1.0, order_digest="")


PROTO = dict(keep=(4, 2, 1), seeds=(1, 2, 2), budget_scale=(1, 2, 4), models=("surrogate", "surrogate",
                                                                              "preact_resnet"), pool=6)


def test_rounds_keep_the_configured_counts(tmp_path, monkeypatch):
    run = make_run(tmp_path)
    fake = FakeTrain()
    monkeypatch.setattr(nlfs.train, "train", fake)
    res = eliminate(run, Protocol.from_lists(**PROTO), log=lambda m: None)
    assert [(h["evaluated"], h["kept"]) for h in res["rounds"]] == [(6, 4), (4, 2), (2, 1)]
    assert len(res["survivors"]) == 1
    # the pool is the 6 best unique ok rows (the duplicate expression and non-ok rows left out)
    assert len(fake.calls) == (6 + 1) * 1 + (4 + 1) * 2 + (2 + 1) * 2
    steps = {(s, m) for _, _, s, m in fake.calls}
    assert steps == {(20, "surrogate"), (40, "surrogate"), (80, "resnet9v2")}
    ce = [c for c in fake.calls if c[0] == "-y * log(p)"]
    assert sorted((seed, st) for _, seed, st, _ in ce) == [(1, 20), (1, 40), (1, 80), (2, 40), (2, 80)]
    # the survivor has the best mean in the last round among those that reached it
    md = (run / "elimination.md").read_text()
    assert md == res["markdown"] and "| CE |" in md and "± " in md and "6 -> 4; 4 -> 2; 2 -> 1" in md
    assert md.count("\n| 1 |") == 1
    rows = sqlite3.connect(run / "run.db").execute("SELECT candidate, round, seed FROM elimination")
    rows = rows.fetchall()
    assert len(rows) == len(fake.calls)


def test_killed_elimination_resumes_without_retraining(tmp_path, monkeypatch):
    run = make_run(tmp_path)
    first = FakeTrain(kill_at=10)
    monkeypatch.setattr(nlfs.train, "train", first)
    with pytest.raises(KeyboardInterrupt):
        eliminate(run, Protocol.from_lists(**PROTO), log=lambda m: None)
    assert len(first.calls) == 9
    second = FakeTrain()
    monkeypatch.setattr(nlfs.train, "train", second)
    e = Elimination(run, Protocol.from_lists(**PROTO), log=lambda m: None)
    res = e.run()
    e.close()
    assert len(second.calls) == 23 - 9 == e.trained
    assert not set(first.calls) & set(second.calls)
    full = FakeTrain()
    monkeypatch.setattr(nlfs.train, "train", full)
    again = eliminate(run, Protocol.from_lists(**PROTO), log=lambda m: None)
    assert full.calls == [] and again["survivors"][0]["id"] == res["survivors"][0]["id"]


def test_cli_quick_preset_and_config_file(tmp_path, monkeypatch, capsys):
    run = make_run(tmp_path)
    fake = FakeTrain()
    monkeypatch.setattr(nlfs.train, "train", fake)
    assert main(["--run-dir", str(run), "--preset", "quick"]) == 0
    out = capsys.readouterr().out
    assert "| CE |" in out and (run / "elimination.md").exists()
    assert len(fake.calls) == (6 + 1) * 1 + (3 + 1) * 2
    cfg = tmp_path / "rounds.json"
    cfg.write_text(json.dumps({"pool": 3, "keep": [2, 1], "seeds": [1, 1], "budget-scale": [1, 3],
                               "models": ["surrogate"]}))
    n = len(fake.calls)
    assert main(["--run-dir", str(run), "--config", str(cfg), "--steps", "10"]) == 0
    assert len(fake.calls) - n == (3 + 1) + (2 + 1)
    assert {c[2] for c in fake.calls[n:]} == {10, 30}
    with pytest.raises(ValueError):
        Protocol.from_lists(keep=(3, 2), seeds=(1, 2, 3), budget_scale=(1,), models=("surrogate",))


def test_real_training_smoke(tmp_path):
    """Two candidates, one tiny round on digits: the real trainer behind the protocol."""
    run = tmp_path / "run"
    db = RunDB(run / "run.db")
    db.set_meta("config", SearchConfig(run_dir=str(run), **FAST).to_dict())
    for i, e in enumerate(["-y * log(p) * 2", "y * (1 - p) ** 2"]):
        db.record({"canonical": e, "expression": e, "constants": {}, "sign": 1.0, "fitness": 0.5 + i / 10,
                   "status": "ok", "size": 5})
    db.close()
    res = eliminate(run, Protocol.from_lists(keep=(1,), seeds=(1,), budget_scale=(1,), models=("surrogate",),
                                             pool=2), log=lambda m: None)
    assert len(res["survivors"]) == 1
    vals = sqlite3.connect(run / "run.db").execute("SELECT fitness, status FROM elimination").fetchall()
    assert len(vals) == 3 and all(s == "ok" and 0 < f <= 1 for f, s in vals)


def test_pool_from_several_runs_their_tunings_and_no_published_loss(tmp_path, monkeypatch):
    run = make_run(tmp_path)
    other = tmp_path / "other"
    db = RunDB(other / "run.db")
    db.set_meta("config", SearchConfig(run_dir=str(other), seed=0, **FAST).to_dict())
    base = {"constants": {}, "sign": 1.0, "dataset": "digits", "size": 5}
    for i, e in enumerate([EXPRS[-1], "-y * log(p) * 3", "y * (1 - p) * 3"]):  # the first is also in `run`
        db.record({**base, "canonical": e, "expression": e, "fitness": 0.9 - 0.01 * i, "status": "ok"})
    db.close()
    (other / "tuned.json").write_text(json.dumps([
        {"id": 2, "search_expression": "-y * log(p) * 3", "expression": "-y * log(p) * c0",
         "initial_constants": {"c0": 3.0}, "best_constants": {"c0": 1.5}, "best_fitness": 0.95},
        {"id": 3, "search_expression": "y * (1 - p) * 3", "expression": "y * (1 - p) * c0",
         "initial_constants": {"c0": 3.0}, "best_constants": {"c0": 3.0}, "best_fitness": 0.9}]))
    fake = FakeTrain()
    monkeypatch.setattr(nlfs.train, "train", fake)
    e = Elimination(run, Protocol.from_lists(keep=(3,), seeds=(2,), budget_scale=(1,), models=("surrogate",),
                                             pool=8), log=lambda m: None, also=[other], tuned=True, novel=True)
    labels = [c["label"] for c in e.candidates()]
    # CE (#1 of `run`) is a published loss: left out; the duplicate across runs enters once; the tuning
    # that kept its constants adds nothing
    assert "#1" not in labels and labels.count("other#1") == 0
    assert {"other#2", "other#3", "other#2-tuned"} <= set(labels) and "other#3-tuned" not in labels
    res = e.run()
    e.close()
    saved = json.loads((run / "elimination.json").read_text())
    assert [s["label"] for s in saved["survivors"]] == [c["label"] for c in res["survivors"]]
    for s in saved["survivors"]:  # the paired difference is recomputed from the per-seed scores
        diffs = [s["scores"]["1"][k] - saved["ce"]["1"][k] for k in ("1", "2")]
        assert s["paired_diff"] == pytest.approx(sum(diffs) / 2) and s["scale"] == 1.0
    assert [c["label"] for c in saved["pool"]] == labels  # every candidate, with its round-1 scores
    assert all(set(c["scores"]["1"]) == {"1", "2"} for c in saved["pool"])
    tuned = next((s for s in saved["survivors"] if s["label"] == "other#2-tuned"), None)
    if tuned is not None:
        assert tuned["constants"] == {"c0": 1.5} and tuned["tuned_from"] == "-y * log(p) * 3"
    md = (run / "elimination.md").read_text()
    assert "Δ vs CE" in md and " pp |" in md and str(other) in md


def test_a_round_can_train_on_the_whole_split(tmp_path, monkeypatch):
    """--train-sizes base,all: the last round trains on every training image (train_size None), the
    first keeps the run's 400; the sizes reach the trainer, the record and the table's round header."""
    from nlfs.eliminate import ALL_IMAGES, build_parser, protocol_from_args

    run = make_run(tmp_path)
    sizes = []

    def fake(spec, cfg, constants=None, **kw):
        sizes.append(cfg.train_size)
        return FakeTrain()(spec, cfg, constants)

    monkeypatch.setattr(nlfs.train, "train", fake)
    args = build_parser().parse_args(["--run-dir", str(run), "--keep", "2,1", "--seeds-per-round", "1", "--pool", "3",
                                      "--budget-scale", "1", "--models", "surrogate", "--train-sizes", "base,all"])
    proto = protocol_from_args(args)
    assert [r.train_size for r in proto.rounds] == [None, ALL_IMAGES]
    res = eliminate(run, proto, log=lambda m: None)
    assert sizes == [400] * 4 + [None] * 3  # round 1: 3 candidates + CE; round 2: 2 + CE
    assert [h["train_size"] for h in res["rounds"]] == [None, ALL_IMAGES]
    assert "all training images" in res["markdown"]
    with pytest.raises(ValueError, match="positive count"):
        Protocol.from_lists(keep=(1,), seeds=(1,), budget_scale=(1,), models=("surrogate",), train_sizes=("-5",))


def test_readme_command_needs_no_models_and_the_survivors_feed_the_next_tools(tmp_path, monkeypatch):
    """``--keep 10,5,3 ...`` without ``--models`` (the README's command) replaces the preset's 4-round lists
    as a whole; the survivors land in DIR/finalists.json (found_losses.json's format), named as the search
    exports them and with the scale they were found with (a fixed one: the run did not rescale)."""
    from nlfs.eliminate import build_parser, protocol_from_args

    args = build_parser().parse_args(["--run-dir", "x", "--keep", "10,5,3", "--seeds-per-round", "2,3,5",
                                      "--train-sizes", "base,base,all"])
    proto = protocol_from_args(args)
    assert [(r.keep, r.seeds, r.budget_scale, r.model) for r in proto.rounds] == [
        (10, 2, 1.0, "surrogate"), (5, 3, 1.0, "surrogate"), (3, 5, 1.0, "surrogate")]
    assert len(protocol_from_args(build_parser().parse_args(["--run-dir", "x", "--seeds-per-round", "1"])).rounds) == 4

    run = make_run(tmp_path)
    db = RunDB(run / "run.db")
    scaled_id = db.record({"constants": {}, "sign": 1.0, "dataset": "digits", "size": 5, "canonical": "s",
                           "expression": "-y * log(p) * 0.5", "fitness": 0.99, "status": "ok", "scale": 4.0})
    db.close()
    seen = []

    def fake(spec, cfg, constants=None, **kw):
        seen.append((str(spec.expr), spec.scale))
        out = FakeTrain()(spec, cfg, constants)
        out.best_val_acc += 0.01 * (cfg.seed % 2) * (str(spec.expr) != "-y * log(p)")  # seeds disagree a little
        return out

    monkeypatch.setattr(nlfs.train, "train", fake)
    assert main(["--run-dir", str(run), "--keep", "2,1", "--seeds-per-round", "2", "--pool", "3"]) == 0
    assert ("-y * log(p) * 0.5", 4.0) in seen  # trained at the scale the search found it with
    finalists = json.loads((run / "finalists.json").read_text())
    assert len(finalists) == 1
    f = finalists[0]
    assert set(f) == {"name", "expression", "constants", "class_reduction", "scale", "provenance"}
    assert f["name"].startswith("run#") and "pp" in f["provenance"]["elimination"]
    if f["name"] == f"run#{scaled_id}":
        assert f["scale"] == 4.0
    md = (run / "elimination.md").read_text()
    assert "Regime (before each round's budget scale, model and size): digits (400 training images)" in md
    assert "95% CI [" in md


def test_the_presets_last_round_is_the_runs_target_unless_turned_off(tmp_path, monkeypatch, capsys):
    """Issue 21: by default the last round trains in the search run's target regime (digits: the whole
    split for 16 epochs, no budget scale); --no-target trains it like the others; the regime line says which."""
    run = make_run(tmp_path)
    seen = []

    def fake(spec, cfg, constants=None, **kw):
        seen.append((cfg.train_size, cfg.epochs, cfg.steps))
        return FakeTrain()(spec, cfg, constants)

    monkeypatch.setattr(nlfs.train, "train", fake)
    assert main(["--run-dir", str(run), "--preset", "quick"]) == 0
    assert seen[:7] == [(400, None, 20)] * 7 and seen[7:] == [(None, 16, None)] * 8  # 6 + CE, then (3 + CE) x 2
    md = (run / "elimination.md").read_text()
    assert "Last round: the search run's target: all training images, 16 epochs" in md
    assert "Elimination ranks; it claims nothing" in md and "strongest known losses (LabelSmoothingCE, Poly1)" in md
    record = json.loads((run / "elimination.json").read_text())
    assert record["rounds"][-1]["target"].startswith("target: all training images, 16 epochs")
    seen.clear()
    assert main(["--run-dir", str(run), "--preset", "quick", "--no-target"]) == 0
    assert set(seen[7:]) == {(400, None, 40)}  # budget x2 of the run's 20 steps
    assert "Last round: not the search run's target regime" in (run / "elimination.md").read_text()
    capsys.readouterr()


def test_split_per_seed_draws_each_seeds_subset_and_noise_and_both_resume(tmp_path, monkeypatch):
    run = make_run(tmp_path)
    noisy = TrainConfig(dataset="digits", steps=5, train_size=300, val_size=200, label_noise=0.4, backend="torch")
    rounds = dict(keep=(2,), seeds=(2,), budget_scale=(1,), models=("surrogate",), pool=3)
    fake = FakeTrain()
    monkeypatch.setattr(nlfs.train, "train", fake)
    fixed = eliminate(run, Protocol.from_lists(**rounds), train_config=noisy, log=lambda m: None)
    drawn = {(e, c.seed): drawn_split(c) for e, c in fake.configs}
    assert len(set(map(str, drawn.values()))) == 1 and drawn[("-y * log(p)", 1)][1]  # one subset and noise
    assert json.loads((run / "elimination.json").read_text())["split_seed"] == 0
    n = len(fake.calls)
    per = eliminate(run, Protocol.from_lists(**rounds, split_per_seed=True), train_config=noisy, log=lambda m: None)
    assert len(fake.calls) - n == (3 + 1) * 2  # seeds 1 and 2 split by themselves: new trainings
    drawn = {(e, c.seed): drawn_split(c) for e, c in fake.configs[n:]}
    assert drawn[("-y * log(p)", 1)][0] != drawn[("-y * log(p)", 2)][0]  # each seed its own training subset
    assert drawn[("-y * log(p)", 1)][1] != drawn[("-y * log(p)", 2)][1]  # and its own flipped labels
    assert all(v == drawn[("-y * log(p)", s)] for (e, s), v in drawn.items())  # CE and every candidate share it
    record = json.loads((run / "elimination.json").read_text())
    assert record["split_seed"] == "per-seed" and "split_seed = seed" in record["regime"]
    assert "split_seed = seed" in (run / "elimination.md").read_text()
    assert "split_seed = seed" in json.loads((run / "finalists.json").read_text())[0]["provenance"]["regime"]
    n = len(fake.calls)
    assert eliminate(run, Protocol.from_lists(**rounds, split_per_seed=True), train_config=noisy,
                     log=lambda m: None)["scores"] == per["scores"]
    assert eliminate(run, Protocol.from_lists(**rounds), train_config=noisy, log=lambda m: None)["scores"] == \
        fixed["scores"]
    assert len(fake.calls) == n  # both resume without training again


def test_cli_split_seed_per_seed_or_a_number(tmp_path, monkeypatch, capsys):
    run = make_run(tmp_path)
    fake = FakeTrain()
    monkeypatch.setattr(nlfs.train, "train", fake)
    args = ["--run-dir", str(run), "--keep", "2", "--seeds-per-round", "2", "--pool", "3"]
    assert main([*args, "--split-seed", "per-seed"]) == 0
    assert [c.split_seed for _, c in fake.configs] == [c.seed for _, c in fake.configs] == [1, 2] * 4
    assert main([*args, "--split-seed", "7"]) == 0
    assert {c.split_seed for _, c in fake.configs[8:]} == {7}
    capsys.readouterr()
    with pytest.raises(SystemExit) as err:
        main([*args, "--split-seed", "each"])
    assert err.value.code == 2 and "expected an integer or per-seed" in capsys.readouterr().err


def test_a_final_scored_run_is_eliminated_by_final_accuracy_without_its_warm_starts(tmp_path, monkeypatch):
    warm = "-y * log(p + 0.1)"  # the run's own warm start (no catalogue loss), EXPRS[1]
    run = make_run(tmp_path)
    db = RunDB(run / "run.db")
    db.set_meta("config", SearchConfig(run_dir=str(run), seed=0, score="final", seed_losses=(warm,), **FAST).to_dict())
    db.close()

    def train(spec, cfg, constants=None, **kw):  # peaked at 0.8, ended at 0.6
        return types.SimpleNamespace(best_val_acc=0.8, val_acc=0.6, diverged=False, reason="", to_dict=lambda: {},
                                     grad_scale_factor=1.0, order_digest="")

    monkeypatch.setattr(nlfs.train, "train", train)
    e = Elimination(run, Protocol.from_lists(keep=(1,), seeds=(1,), budget_scale=(1,), models=("surrogate",),
                                             pool=8), log=lambda m: None, novel=True)
    assert warm not in [c["expression"] for c in e.candidates()]  # a warm start as given is no find
    e.run()
    e.close()
    vals = sqlite3.connect(run / "run.db").execute("SELECT fitness FROM elimination").fetchall()
    assert vals and {v for (v,) in vals} == {0.6}
    assert "scored by the final model's validation accuracy" in (run / "elimination.md").read_text()


def test_a_survivor_that_is_a_catalogue_loss_at_other_constants_is_named_so(tmp_path, monkeypatch):
    """GCE at q = 0.5 written as ``-(y * sqrt(p))`` survives as a tuned known loss, never as a new one:
    finalists.json's provenance and elimination.md say which; a novel survivor carries None."""
    run = tmp_path / "run"
    db = RunDB(run / "run.db")
    db.set_meta("config", SearchConfig(run_dir=str(run), seed=0, **FAST).to_dict())
    novel = "-y * log(p) + 0.3 * y * sin(3 * p)"
    for e in ("-(y * sqrt(p))", novel):
        db.record({"constants": {}, "sign": 1.0, "dataset": "digits", "size": 5, "canonical": e, "expression": e,
                   "fitness": 0.6, "status": "ok"})
    db.close()
    monkeypatch.setattr(nlfs.train, "train", FakeTrain())
    assert main(["--run-dir", str(run), "--keep", "2", "--seeds-per-round", "1", "--pool", "2"]) == 0
    families = {f["expression"]: f["provenance"]["known_family"]
                for f in json.loads((run / "finalists.json").read_text())}
    assert families == {"-(y * sqrt(p))": {"loss": "GCE", "constants": {"q": 0.5}}, novel: None}
    assert "(= GCE (q 0.5), a known loss at other constants)" in (run / "elimination.md").read_text()


def test_the_default_pool_leaves_out_catalogue_losses_uncounted_and_says_so(tmp_path, monkeypatch, capsys):
    """CE in disguise as the run's best (and Focal at its published constants) is no find: the default
    pool leaves both out, fills up without them and says so; --include-known keeps them, named."""
    import nlfs.losses

    focal = nlfs.losses.get("Focal")
    run = make_run(tmp_path)
    db = RunDB(run / "run.db")
    for e, fit in (("-(log(p) * y)", 0.99), (str(focal.expr.substitute(dict(focal.constants))), 0.98)):
        db.record({"constants": {}, "sign": 1.0, "dataset": "digits", "size": 5, "canonical": e, "expression": e,
                   "fitness": fit, "status": "ok"})
    db.close()
    monkeypatch.setattr(nlfs.train, "train", FakeTrain())
    args = ["--run-dir", str(run), "--keep", "2,1", "--seeds-per-round", "1", "--pool", "3"]
    assert main(args) == 0
    record = json.loads((run / "elimination.json").read_text())
    assert [c["label"] for c in record["pool"]] == ["run#9", "run#7", "run#6"]  # 3 without the twins
    assert [(x["label"], x["same_as"]) for x in record["left_out"]] == [("run#12", "CE"), ("run#13", "Focal")]
    said = "Left out of the pool, uncounted: 2 known loss(es) in disguise (CE x1, Focal x1)"
    assert said in (run / "elimination.md").read_text() and said in capsys.readouterr().err
    assert main(["--run-dir", str(run), "--keep", "3", "--seeds-per-round", "1", "--pool", "3", "--include-known"]) == 0
    record = json.loads((run / "elimination.json").read_text())
    assert [(c["label"], c["same_as"]) for c in record["pool"]] == [("run#12", "CE"), ("run#13", "Focal"),
                                                                    ("run#9", None)]
    md = (run / "elimination.md").read_text()
    assert record["left_out"] == [] and "kept in the pool (--include-known)" in md
    assert "| run#12 (= CE in disguise, a known loss) |" in md  # named as what it is, no family at other constants
    assert {f["name"]: f["provenance"]["same_as"] for f in json.loads((run / "finalists.json").read_text())} == {
        "run#12": "CE", "run#13": "Focal", "run#9": None}
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main([*args, "--include-known", "--novel-only"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_a_round_that_repeats_an_earlier_ones_trainings_says_so(tmp_path, monkeypatch, capsys):
    """--train-sizes base,all on a run that already trains on every image, same budget and seeds: round 2's
    trainings are round 1's (reused, not trained again) and the log and elimination.md say so; a round
    that shares only some seeds says which; a round with a new budget says nothing."""
    run = make_run(tmp_path)
    db = RunDB(run / "run.db")
    db.set_meta("config", SearchConfig(run_dir=str(run), seed=0, **{**FAST, "train_size": None}).to_dict())
    db.close()
    fake = FakeTrain()
    monkeypatch.setattr(nlfs.train, "train", fake)
    args = ["--run-dir", str(run), "--pool", "3", "--keep", "2,1"]
    assert main([*args, "--seeds-per-round", "2,2", "--train-sizes", "base,all"]) == 0
    assert len(fake.calls) == (3 + 1) * 2  # round 2 trained nothing
    said = "round 2 repeats round 1's trainings (same budget, model, size and seeds 1, 2): its numbers are round 1's"
    assert said in capsys.readouterr().err
    assert "R" + said[1:] in (run / "elimination.md").read_text()
    assert json.loads((run / "elimination.json").read_text())["rounds"][1]["repeats"] == {
        "round": 1, "seeds": [1, 2], "all": True}
    assert main([*args, "--seeds-per-round", "2,3"]) == 0
    md = (run / "elimination.md").read_text()
    assert "Round 2 reuses round 1's trainings on seed(s) 1, 2 (same budget, model and size)" in md
    assert "repeats round" not in md
    assert main([*args, "--seeds-per-round", "2,2", "--budget-scale", "1,2"]) == 0
    md = (run / "elimination.md").read_text()
    assert "repeats round" not in md and "reuses round" not in md
    capsys.readouterr()


def test_the_search_column_is_in_pp_when_the_search_was_paired(tmp_path, monkeypatch):
    """A paired search's fitness is a difference to CE (0.0044): shown as +0.44 pp under a header saying
    so, like the Δ column; an unpaired run's (make_run's rows, no paired seeds) stays an accuracy."""
    run = tmp_path / "run"
    db = RunDB(run / "run.db")
    db.set_meta("config", SearchConfig(run_dir=str(run), seed=0, **FAST).to_dict())
    for e, fit in (("-y * log(p + 0.1)", 0.0044), ("y * (1 - p) ** 2", -0.0123)):
        db.record({"constants": {}, "sign": 1.0, "dataset": "digits", "size": 5, "canonical": e, "expression": e,
                   "fitness": fit, "status": "ok", "accuracy": 0.9 + fit,
                   "result": {"seeds": [{"seed": 0, "acc": 0.9 + fit, "paired": fit}]}})
    db.close()
    monkeypatch.setattr(nlfs.train, "train", FakeTrain())
    assert main(["--run-dir", str(run), "--keep", "2", "--seeds-per-round", "1", "--pool", "2"]) == 0
    md = (run / "elimination.md").read_text()
    assert "| search fitness: paired Δ vs CE, pp |" in md
    assert "| +0.44 pp |" in md and "| -1.23 pp |" in md and "0.0044" not in md
    assert all(s["search_fitness_paired"] for s in json.loads((run / "elimination.json").read_text())["survivors"])
    (run / "tuned.json").write_text(json.dumps([  # a tuning's best trial: an accuracy beside the paired ones
        {"id": 1, "search_expression": "-y * log(p + 0.1)", "expression": "-y * log(p + c0)",
         "initial_constants": {"c0": 0.1}, "best_constants": {"c0": 0.3}, "best_fitness": 0.95}]))
    assert main(["--run-dir", str(run), "--keep", "3", "--seeds-per-round", "1", "--pool", "2", "--tuned"]) == 0
    md = (run / "elimination.md").read_text()
    assert "| search fitness: paired Δ vs CE in pp (signed), else accuracy |" in md
    assert "| +0.44 pp |" in md and "| 0.9500 |" in md
    plain = make_run(tmp_path / "plain")
    assert main(["--run-dir", str(plain), "--keep", "2", "--seeds-per-round", "1", "--pool", "2"]) == 0
    md = (plain / "elimination.md").read_text()
    assert "| search fitness: accuracy |" in md and "| 0.9000 |" in md


def test_a_bad_round_stops_before_anything_is_trained_or_written(tmp_path, monkeypatch, capsys):
    run = make_run(tmp_path)
    monkeypatch.setattr(nlfs.train, "train", lambda *a, **k: pytest.fail("trained"))
    proto = Protocol.from_lists(**{**PROTO, "models": ("surrogate", "surrogate", "resnt9")})
    with pytest.raises(ValueError, match=r"round 3: .*unknown model 'resnt9'"):
        Elimination(run, proto, log=lambda m: None)
    tables = {r[0] for r in sqlite3.connect(run / "run.db").execute("SELECT name FROM sqlite_master")}
    assert "elimination" not in tables
    with pytest.raises(ValueError, match="contradict"):
        Elimination(run, Protocol.from_lists(**PROTO), novel=True, include_known=True, log=lambda m: None)
    # the command line's budget options are checked with the rounds, before any training
    assert main(["--run-dir", str(run), "--preset", "quick", "--val-size", "100000"]) != 0
    err = capsys.readouterr().err
    assert "round 1:" in err and "val_size" in err


OLD_TABLE = """CREATE TABLE elimination (key TEXT PRIMARY KEY, candidate TEXT NOT NULL, eval_id INTEGER,
    expression TEXT NOT NULL, constants TEXT NOT NULL, round INTEGER NOT NULL, seed INTEGER NOT NULL,
    model TEXT, steps INTEGER, epochs INTEGER, fitness REAL, status TEXT NOT NULL, reason TEXT,
    wall_time REAL, created REAL NOT NULL)"""


def test_an_elimination_table_from_before_scale_resumes(tmp_path, monkeypatch):
    """Older runs' elimination tables have no scale column: opening one adds it, the trainings recorded
    in it are reused (their scale unknown), and only the missing ones are trained."""
    run = make_run(tmp_path)
    first = FakeTrain(kill_at=10)
    monkeypatch.setattr(nlfs.train, "train", first)
    with pytest.raises(KeyboardInterrupt):
        eliminate(run, Protocol.from_lists(**PROTO), log=lambda m: None)
    con = sqlite3.connect(run / "run.db", isolation_level=None)
    old = [c for c in (r[1] for r in con.execute("PRAGMA table_info(elimination)")) if c != "scale"]
    con.execute("ALTER TABLE elimination RENAME TO newer")
    con.execute(OLD_TABLE)
    con.execute(f"INSERT INTO elimination SELECT {', '.join(old)} FROM newer")
    con.execute("DROP TABLE newer")
    assert "scale" not in {r[1] for r in con.execute("PRAGMA table_info(elimination)")}
    assert con.execute("SELECT COUNT(*) FROM elimination").fetchone()[0] == 9
    con.close()
    second = FakeTrain()
    monkeypatch.setattr(nlfs.train, "train", second)
    e = Elimination(run, Protocol.from_lists(**PROTO), log=lambda m: None)
    res = e.run()
    e.close()
    assert len(second.calls) == 23 - 9 == e.trained and not set(first.calls) & set(second.calls)
    con = sqlite3.connect(run / "run.db")
    scales = [s for (s,) in con.execute("SELECT scale FROM elimination ORDER BY created")]
    assert scales == [None] * 9 + [1.0] * 14  # the old rows' scale unknown, the new ones' measured
    full = FakeTrain()
    monkeypatch.setattr(nlfs.train, "train", full)
    again = eliminate(run, Protocol.from_lists(**PROTO), log=lambda m: None)
    assert full.calls == [] and again["survivors"][0]["id"] == res["survivors"][0]["id"]


def test_the_run_database_keeps_the_elimination_table(tmp_path):
    """nlfs.search.RunDB owns the elimination table: none in a search's run.db until an elimination opens
    it, one transaction per recorded training, a row read back by its key (an equal key replaces it)."""
    run = make_run(tmp_path)
    db = RunDB(run / "run.db")
    try:
        def names():
            return {r[0] for r in db.conn.execute("SELECT name FROM sqlite_master")}

        assert "elimination" not in names()
        db.open_elimination()
        db.open_elimination()  # again: nothing changes
        assert "elimination" in names()
        row = {"key": "k1", "candidate": "run#3", "eval_id": 3, "expression": "-y * log(p + c)",
               "constants": {"c": 0.1}, "round": 1, "seed": 2, "model": "surrogate", "steps": 20, "epochs": None,
               "fitness": 0.75, "status": "ok", "reason": "", "wall_time": 1.5, "scale": 0.5}
        db.record_elimination(row)
        got = db.elimination_row("k1")
        assert {k: got[k] for k in row} == row and got["created"] > 0
        assert db.elimination_row("k2") is None
        db.record_elimination({**row, "fitness": None, "status": "diverged", "scale": None})
        assert db.conn.execute("SELECT COUNT(*) FROM elimination").fetchone()[0] == 1
        assert db.elimination_row("k1")["status"] == "diverged"
        with pytest.raises(sqlite3.IntegrityError):  # a row missing a NOT NULL column is refused whole
            db.record_elimination({**row, "key": "k3", "status": None})
        assert db.elimination_row("k3") is None and not db.conn.in_transaction
    finally:
        db.close()
