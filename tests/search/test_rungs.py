"""Multi-fidelity screening, paired fitness, warm starts, --augment and the gradient scale."""

import hashlib

import pytest
import torch

import nlfs
from nlfs.search import Search, SearchConfig, make_rungs, parse_rungs, promoted
from nlfs.search._report import write_report
from tests.runs import run_search

RUNGS = [{"steps": 6, "seeds": 1}, {"steps": 12, "seeds": 1}, {"steps": 12, "seeds": 3}]
TINY = dict(dataset="digits", train_size=300, val_size=100, backend="torch", progress=False)


def _cfg(tmp_path, **kw):
    base = dict(run_dir=str(tmp_path / "run"), algorithm="gp", space="gp", budget=9, gp_population=9,
                seed=0, rungs=RUNGS, eta=3, finalists=0, **TINY)  # screening only (see test_target_stage)
    base.update(kw)
    return SearchConfig(**base)


def _acc(expression: str, seed: int) -> float:
    """A deterministic stand-in accuracy per (loss, seed); CE gets 0.5 + seed/100."""
    if expression == "-y * log(p)":
        return 0.5 + seed / 100
    h = int(hashlib.sha256(expression.encode()).hexdigest()[:8], 16)
    return 0.2 + 0.6 * (h % 1000) / 1000 + seed / 100


class FakeExecutor:
    """Two slots; each payload is 'trained' instantly with _acc; records what it was asked."""

    slots = 2

    def __init__(self, die_after=None):
        self.submitted, self.results, self.die_after = [], {}, die_after

    def submit(self, payload):
        h = len(self.submitted)
        self.submitted.append((payload["expression"], payload["train"].get("steps"), tuple(payload["seeds"]),
                               payload["train"].get("augment")))
        per_seed = [{"seed": s, "acc": _acc(payload["expression"], s), "diverged": False, "reason": "",
                     "grad_scale": 1.0, "order_digest": f"d{s}"} for s in payload["seeds"]]
        self.results[h] = {"status": "ok", "reason": "", "per_seed": per_seed,
                           "fitness": sum(x["acc"] for x in per_seed) / len(per_seed), "wall_time": 0.01}
        return h

    def wait_one(self, handles):
        if self.die_after is not None and len(self.submitted) > self.die_after:
            raise KeyboardInterrupt  # the driver dies with jobs in flight, as under SIGKILL
        h = min(handles)
        return h, self.results.pop(h)

    def close(self):
        pass


def test_promotion_rule_is_optunas_successive_halving():
    assert promoted(0.3, [0.3], 3)  # the first is the best so far
    assert not promoted(0.2, [0.3, 0.2], 3)  # fewer than eta finished: only a new best
    assert promoted(0.9, [0.1, 0.5, 0.9], 3) and not promoted(0.5, [0.1, 0.5, 0.9], 3)
    assert promoted(0.6, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 3) and promoted(0.5, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 3)
    assert not promoted(0.4, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 3)


def test_rungs_parse_and_validate():
    assert parse_rungs("train_size=2048,epochs=1;epochs=2,seeds=3") == [
        {"train_size": 2048, "epochs": 1}, {"epochs": 2, "seeds": 3}]
    with pytest.raises(ValueError, match="unknown keys"):
        make_rungs([{"lr": 1}])
    with pytest.raises(ValueError, match="key=value"):
        parse_rungs("epochs")
    r = make_rungs(RUNGS)
    assert r[1].fidelity == r[2].fidelity != r[0].fidelity  # rung 2 only adds seeds


def test_promotion_paired_fitness_and_budget_accounting(tmp_path):
    ex = FakeExecutor()
    rows = run_search(_cfg(tmp_path), ex)
    base = [r for r in rows if r["status"] == "baseline"]
    # one CE baseline per (fidelity, seed): rungs 1 and 2 share a budget, so 1 + 3 trainings
    assert sorted((r["rung"], r["seed"]) for r in base) == [(0, 0), (1, 0), (2, 1), (2, 2)]
    cand = [r for r in rows if r["status"] == "ok"]
    rung0 = [r for r in cand if r["rung"] == 0]
    assert len(rung0) == 9  # the budget counts candidates trained at rung 0
    for r in cand:  # fitness = mean over seeds of (accuracy - CE's accuracy with that seed)
        seeds = r["result"]["seeds"]
        want = sum(_acc(r["expression"], s["seed"]) - (0.5 + s["seed"] / 100) for s in seeds) / len(seeds)
        assert r["fitness"] == pytest.approx(want)
        assert len(seeds) == RUNGS[r["rung"]]["seeds"]
    # every promotion follows the rule against the rung's results so far, in order
    for k in (0, 1):
        finished = []
        for r in [r for r in cand if r["rung"] == k]:
            finished.append(r["fitness"])
            went_up = any(x["rung"] == k + 1 and x["candidate"] == (r["candidate"] or r["id"]) for x in cand)
            assert went_up == promoted(r["fitness"], finished, 3), r["expression"]
    assert any(r["rung"] == 2 for r in cand)
    # rung 2 trained only the two new seeds: seed 0 came from rung 1 (same budget)
    rung2 = [s for s in ex.submitted if s[2] != (0,) and s[0] != "-y * log(p)"]
    assert rung2 and all(s[2] == (1, 2) for s in rung2)
    counts = write_report(tmp_path / "run", rows)["counts"]
    assert counts["trained"] == 9
    assert counts["rungs"]["0"]["trained"] == 9
    assert counts["rungs"]["1"]["trained"] == sum(r["rung"] == 1 for r in cand)


class Telling:
    """Wraps a search's algorithm; each tell noted with the number of jobs submitted by then."""

    def __init__(self, algo, executor):
        self.algo, self.executor, self.told = algo, executor, []

    def ask(self):
        return self.algo.ask()

    def tell(self, genotype, fitness, status, eval_id=None):
        self.told.append((str(genotype), fitness, len(self.executor.submitted)))
        self.algo.tell(genotype, fitness, status, eval_id)

    def done(self):
        return self.algo.done()


def test_the_algorithm_hears_each_candidate_once_at_rung_0_before_it_climbs(tmp_path):
    ex = FakeExecutor()
    s = Search(_cfg(tmp_path))
    s.algo = Telling(s.algo, ex)
    rows = s.run(executor=ex)
    s.close()
    first = {r["id"]: r for r in rows if r["status"] == "ok" and not r["rung"]}  # each candidate's rung-0 row
    screened = [r for r in rows if r["status"] != "baseline" and not r["rung"]]  # trained, rejected, duplicates
    told = s.algo.told
    assert len(told) == len(screened)  # each candidate heard once
    assert sorted(f for _, f, _ in told if f is not None) == sorted(r["fitness"] for r in screened
                                                                    if r["fitness"] is not None)
    climbed = [r for r in rows if r["status"] == "ok" and r["rung"] == 2]
    assert climbed
    for r in climbed:  # heard before its rung-1 training was even submitted
        base = first[r["candidate"]]
        when = next(n for _, f, n in told if f == base["fitness"])
        rung1 = next(i for i, sub in enumerate(ex.submitted) if sub[0] == base["expression"] and sub[1] == 12)
        assert when <= rung1


def test_killed_mid_rung_resumes_without_training_twice(tmp_path):
    cfg = _cfg(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        run_search(cfg, FakeExecutor(die_after=9))
    first = Search(cfg, resume=True)
    before = [(r.get("candidate") or r["id"], r["rung"]) for r in first.db.rows() if r["status"] == "ok"]
    first.close()
    assert before
    rows = run_search(_cfg(tmp_path, budget=9), FakeExecutor(), resume=True)
    trained = [(r.get("candidate") or r["id"], r["rung"]) for r in rows if r["status"] == "ok"]
    assert len(trained) == len(set(trained))  # no candidate trained twice at one rung
    assert set(before) <= set(trained)
    assert sum(1 for _, rung in trained if rung == 0) == 9
    assert sum(r["status"] == "baseline" for r in rows) == 4  # baselines were not retrained either


def test_paired_seeds_reproduce_the_baselines_data_order(tmp_path):
    from nlfs.train import TrainConfig, train

    cfg = TrainConfig(dataset="digits", steps=8, train_size=300, val_size=100, backend="torch",
                      evaluate_test=False, seed=3)
    ce, other = train("CE", cfg), train("-y * log(p) + 0.5 * y * (1 - p)", cfg)
    assert ce.order_digest == other.order_digest  # same init, same batches in the same order
    assert train("CE", cfg, seed=4).order_digest != ce.order_digest
    # and inside a search: every candidate's seed saw what CE's baseline with that seed saw
    rows = run_search(_cfg(tmp_path, budget=2, rungs=[{"steps": 8, "seeds": 2}], seed_losses=("Poly1",),
                          seed_mutants=1), None)
    base = {r["seed"]: r["result"]["seeds"][0]["order_digest"] for r in rows if r["status"] == "baseline"}
    seeds = [s for r in rows if r["status"] == "ok" for s in r["result"]["seeds"]]
    assert len(seeds) == 4 and all(s["order_digest"] == base[s["seed"]] for s in seeds)


def test_warm_start_losses_come_first(tmp_path):
    ex = FakeExecutor()
    rows = run_search(_cfg(tmp_path, budget=3, seed_losses=("Poly1", "-y * log(p) + 0.1 * p"), seed_mutants=2,
                          filters=("validity",)), ex)
    asked = [r["expression"] for r in rows if r["status"] != "baseline" and not r.get("rung")]
    poly = nlfs.losses.get("Poly1")
    assert asked[0] == str(poly.expr.substitute(dict(poly.constants)))
    assert asked[1] == "-y * log(p) + 0.1 * p"
    from nlfs.search import RegularizedEvolution
    from nlfs.spaces import get_space

    ce = nlfs.parse("-y * log(p)")
    algo = RegularizedEvolution(get_space("gp"), 0, population=2, sample=2, initial=8, warm=[ce], warm_mutants=3)
    first = [algo.ask() for _ in range(4)]
    assert first[0] is ce and all(g is not ce for g in first[1:])
    with pytest.raises(ValueError, match="tree space"):
        Search(_cfg(tmp_path / "nlfs", algorithm="regularized", space="nlfs", seed_losses=("CE",)))


def test_label_smoothing_warm_start_trains_as_itself(tmp_path):
    """C (the number of classes) may stay in a warm start: label smoothing enters as the catalogue's, is
    trained with the data's classes, and as given is a known loss, not a find."""
    from nlfs.search import known_twin

    rows = run_search(_cfg(tmp_path, budget=1, rungs=[{"steps": 6, "seeds": 1}], seed_losses=("LabelSmoothingCE",),
                           seed_mutants=0, filters=("validity",)), None)
    warm = next(r for r in rows if r["status"] != "baseline")
    assert warm["status"] == "ok" and "/ C" in warm["expression"]
    assert known_twin(warm, normalise=True, seed_losses=("LabelSmoothingCE",)) == "LabelSmoothingCE"
    with pytest.raises(ValueError, match="over y and p"):  # logits stay out of a tree genotype
        Search(_cfg(tmp_path / "z", seed_losses=("-y * log(p) + 0.1 * z",)))


def test_augment_reaches_the_trainer_and_the_run_record(tmp_path):
    from nlfs.evolve import build_parser, config_from_args

    args = build_parser().parse_args(["--augment", "mixup", "--dataset", "digits", "--run-dir",
                                      str(tmp_path / "cli"), "--space", "gp", "--algorithm", "gp"])
    assert config_from_args(args).augment == "mixup"
    ex = FakeExecutor()
    run_search(_cfg(tmp_path, budget=2, augment="mixup"), ex)
    assert {s[3] for s in ex.submitted} == {"mixup"}  # baselines and candidates alike
    s = Search(_cfg(tmp_path, budget=2), resume=True)
    assert s.db.get_meta("config")["augment"] == "mixup" and s.cfg.augment == "mixup"
    s.close()
    # a real training with it: the result record says mixup
    rows = run_search(_cfg(tmp_path / "real", budget=1, augment="mixup", rungs=[{"steps": 4, "seeds": 1}],
                          filters=("validity",), baseline=False), None)
    assert [r["result"]["train"]["augment"] for r in rows if r["status"] == "ok"] == ["mixup"]
    summary = write_report(tmp_path / "real" / "run", rows)
    assert summary["augment"] == "mixup"


def test_gradient_scale_round_trips_into_the_exported_loss(tmp_path):
    from nlfs.train import gradient_magnitude, rescale_to_ce

    z, t = torch.randn(64, 10, dtype=torch.float64), torch.randint(0, 10, (64,))
    small = nlfs.Loss("0.1 * -y * log(p)", backend="torch")
    scaled, factor = rescale_to_ce(small, z, t)
    assert factor == pytest.approx(10.0) and scaled.spec.scale == pytest.approx(10.0)
    assert gradient_magnitude(scaled, z, t) == pytest.approx(gradient_magnitude(torch.nn.CrossEntropyLoss(), z, t))

    rows = run_search(_cfg(tmp_path, budget=1, rungs=[{"steps": 4, "seeds": 1}], grad_scale="ce",
                          seed_losses=("0.25 * -y * log(p + 0.01)",), seed_mutants=0, filters=("validity",),
                          warm_starts_compete=True), None)
    row = next(r for r in rows if r["status"] == "ok")  # not CE (a known loss, never exported): near its scale
    assert row["scale"] == pytest.approx(4.0, rel=0.25)
    write_report(tmp_path / "run", rows)
    namespace = {}
    exec((tmp_path / "run" / "best_losses.py").read_text(), namespace)
    exported = namespace[nlfs.losses.python_name(f"run#{row['id']}")](backend="torch")
    assert exported.spec.scale == pytest.approx(row["scale"])
    plain = nlfs.Loss(row["expression"], backend="torch")
    assert exported(z, t).item() == pytest.approx(row["scale"] * plain(z, t).item())


class ErrorOnceExecutor(FakeExecutor):
    """The first training of each loss fails with an error (not the loss's fault), later ones work."""

    def submit(self, payload):
        h = super().submit(payload)
        first = sum(1 for s in self.submitted if s[0] == payload["expression"]) == 1
        if first and payload["expression"] != "-y * log(p)":
            self.results[h] = {"status": "error", "reason": "TrainingError: out of memory (fake)",
                               "fitness": None, "wall_time": 0.0}
        return h


def test_errors_are_not_divergence_and_can_be_retried(tmp_path):
    from tests.search.test_search import _ScriptedAlgorithm

    a = nlfs.parse("-y * log(p) + 0.3 * p")
    s = Search(_cfg(tmp_path, budget=3, filters=("validity", "duplicate"), rungs=[{"steps": 4}]))
    s.algo = _ScriptedAlgorithm([a, a])
    rows = s.run(executor=ErrorOnceExecutor())
    s.close()
    mine = [r for r in rows if r["status"] != "baseline"]
    assert [r["status"] for r in mine] == ["error", "ok"]  # the same loss, trained again after its error
    assert "out of memory" in mine[0]["reason"]
    # a loss raising inside training is an error in a real run too
    from nlfs.search import evaluate_payload

    out = evaluate_payload({"expression": "-y * log(p)", "constants": {}, "reduction": "class_sum",
                            "train": {**TINY, "steps": 2, "backend": "no-such-backend"}, "rejection": False})
    assert out["status"] == "error" and "no-such-backend" in out["reason"]


def test_evolve_stops_before_any_work_on_a_missing_backend(tmp_path):
    import os
    import subprocess
    import sys

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: triton is available")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    res = subprocess.run([sys.executable, "-m", "nlfs.evolve", "--backend", "triton", "--dataset", "digits",
                          "--run-dir", str(tmp_path / "run"), "--no-progress"], env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 2 and "triton" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "run").exists()  # nothing was started


def test_report_marks_catalogue_losses_in_disguise(tmp_path):
    from nlfs.search import format_summary, known_twin

    assert known_twin({"canonical": "", "expression": "log(p) * -y"}, False) == "CE"
    assert known_twin({"canonical": "", "expression": "-y * log(p) + 2 * y * (1 - p)"}, False) == "Poly1"
    assert known_twin({"canonical": "", "expression": "3 * -y * log(p)"}, True) == "CE"  # up to a factor
    assert known_twin({"canonical": "", "expression": "3 * -y * log(p)"}, False) is None
    assert known_twin({"canonical": "", "expression": "-y * log(p) + 0.3 * p * y"}, False) is None
    # summed over classes, 0.3 * p adds a constant 0.3: the same gradient as CE
    assert known_twin({"canonical": "", "expression": "-y * log(p) + 0.3 * p"}, False) == "CE"
    ex = FakeExecutor()
    rows = run_search(_cfg(tmp_path, budget=2, seed_losses=("-(log(p) * y)", "-y * log(p) + 0.3 * p * y"),
                           seed_mutants=0, filters=("validity",)), ex)
    text = format_summary(write_report(tmp_path / "run", rows), "digits")
    assert "[= CE in disguise]" in text and text.count("in disguise") == 1
    assert "[= a warm start]" in text  # the other is the warm start itself: known, not a find


def test_report_only_rewrites_a_runs_reports_without_training(tmp_path, capsys):
    from nlfs import evolve

    ex = FakeExecutor()
    run_search(_cfg(tmp_path, budget=3, seed_losses=("-y * log(p) + 0.3 * p * y",), seed_mutants=0,
                    filters=("validity",)), ex)
    run = tmp_path / "run"
    assert not (run / "summary.json").exists()  # the search wrote run.db only
    calls = len(ex.submitted)
    assert evolve.main(["--report-only", str(run)]) == 0
    assert len(ex.submitted) == calls and (run / "summary.json").is_file()
    assert "run#" in capsys.readouterr().out
    assert evolve.main(["--report-only", str(tmp_path / "nothing")]) == 2
    assert "no search run" in capsys.readouterr().err


def test_cli_defaults_warm_start_tree_spaces_only(tmp_path):
    from nlfs.evolve import build_parser, config_from_args

    def cfg(*argv):
        return config_from_args(build_parser().parse_args(["--dataset", "digits", "--run-dir", str(tmp_path), *argv]))

    default = cfg()
    # warm starts: CE and the strongest known losses of the target's regime (clean labels here)
    assert (default.algorithm, default.space, default.seed_losses) == ("gp", "gp", ("CE", "LabelSmoothingCE", "Poly1"))
    # under label noise, the search's own or the target's alone, the noise-robust losses start it instead
    assert cfg("--label-noise", "0.4").seed_losses == ("CE", "GCE", "SCE", "NCEandRCE")
    assert cfg("--target", "train_size=all,epochs=2,label_noise=0.2").seed_losses == ("CE", "GCE", "SCE", "NCEandRCE")
    assert default.grad_scale == "ce" and cfg("--grad-scale", "none").grad_scale == "none"
    # the quick preset screens for 1 minute (issue 21: racing and the target training take the rest)
    assert default.time_limit == 60 and cfg("--budget", "5").time_limit is None
    assert cfg("--algorithm", "regularized").seed_losses == ()  # the nlfs space starts at random
    assert cfg("--seed-losses", "none").seed_losses == ()
    from nlfs.search import preset_config  # a fitness function's regime is unknown: the clean one's
    assert preset_config(fitness=True, run_dir=str(tmp_path / "f")).seed_losses == ("CE", "LabelSmoothingCE", "Poly1")
    assert cfg("--seed-losses", "-y*log(p); max(p, y)").seed_losses == ("-y*log(p)", "max(p, y)")


# ------------------------------------------------------------------ stop_epoch: a rung read early
def test_a_stop_epoch_rung_parses_describes_itself_and_has_its_own_fidelity():
    spec = parse_rungs("epochs=8,stop_epoch=1,seeds=1;epochs=8,seeds=3")
    assert spec == [{"epochs": 8, "stop_epoch": 1, "seeds": 1}, {"epochs": 8, "seeds": 3}]
    early, whole = make_rungs(spec)
    assert early.fidelity != whole.fidelity  # never share seeds with the whole schedule
    # a rung without it keeps the key it had before stop_epoch existed (computed with the previous nlfs)
    assert make_rungs([{"epochs": 8, "seeds": 1}])[0].fidelity == "688a192ba45b"
    assert "the first 1 of 8 epochs of its schedule" in early.describe()
    assert "first" not in whole.describe()
    by_steps = make_rungs([{"steps": 500, "stop_epoch": 2}])[0]
    assert "the first 2 epoch(s) of its 500-step schedule" in by_steps.describe()


@pytest.mark.parametrize("spec, message", [
    ({"epochs": 8, "stop_epoch": 8}, "stop_epoch=8 with epochs=8 changes nothing"),
    ({"epochs": 8, "stop_epoch": 0}, "stop_epoch must be a positive integer"),
    ({"epochs": 8, "stop_epoch": 1.5}, "stop_epoch must be a positive integer"),
    ({"budget": 0.5, "stop_epoch": 1}, "not a fitness function's budget"),
])
def test_bad_stop_epoch_rungs_name_the_rung_and_the_problem(spec, message):
    with pytest.raises(ValueError, match=f"rung 0: .*{message}"):
        make_rungs([spec])


def test_a_search_with_a_stop_epoch_rung_trains_it_early_and_reports_its_regime(tmp_path):
    from nlfs.search._report import rung_regime

    rungs = [{"epochs": 3, "stop_epoch": 1, "seeds": 1}, {"epochs": 3, "seeds": 1}]
    rows = run_search(_cfg(tmp_path, budget=1, rungs=rungs, seed_losses=("Poly1",), seed_mutants=0,
                          filters=("validity",), threads=1), None)
    by_rung = {r["rung"]: r for r in rows if r["status"] == "ok"}
    assert set(by_rung) == {0, 1}  # the candidate climbed both rungs: each its own fidelity
    assert by_rung[0]["fidelity"] != by_rung[1]["fidelity"]
    # rung 0 trained the 3-epoch schedule's first epoch (4 steps of 64 from 300 images), rung 1 all of it
    trained = {k: (r["result"]["train"]["steps"], r["result"]["train"]["epochs"]) for k, r in by_rung.items()}
    assert trained == {0: (4, 1.0), 1: (12, 3.0)}
    ce = {r["fidelity"]: r["result"]["train"]["steps"] for r in rows if r["status"] == "baseline"}
    assert ce == {by_rung[0]["fidelity"]: 4, by_rung[1]["fidelity"]: 12}  # CE read early too, paired with it
    summary = write_report(tmp_path / "run", rows)
    cfg = Search(_cfg(tmp_path, budget=1, rungs=rungs), resume=True)
    saved = cfg.db.get_meta("config")
    cfg.close()
    assert "the first 1 of 3 epochs of its schedule" in rung_regime(saved, 0)
    assert summary["best"] and "epochs 3" in summary["best"][0]["regime"]
    assert "rung 0: epochs 3, trained for the first 1 of 3 epochs of its schedule, 1 seed(s)" in summary["regime"]


# ------------------------------------------------------------------ resize: a rung at a lower resolution
def test_a_resize_rung_parses_describes_itself_and_has_its_own_fidelity():
    spec = parse_rungs("epochs=8,resize=14,seeds=1;epochs=8,resize=14x12;epochs=8")
    assert spec == [{"epochs": 8, "resize": 14, "seeds": 1}, {"epochs": 8, "resize": [14, 12]}, {"epochs": 8}]
    square, oblong, whole = make_rungs(spec)
    assert square.train["resize"] == (14, 14) and oblong.train["resize"] == (14, 12)
    assert len({square.fidelity, oblong.fidelity, whole.fidelity}) == 3  # never share seeds across sizes
    assert whole.fidelity == "688a192ba45b"  # a rung without it keeps the key it had before resize existed
    assert "images at 14x14" in square.describe() and "images at 14x12" in oblong.describe()
    assert "images at" not in whole.describe()


@pytest.mark.parametrize("text, message", [
    ("epochs=2,resize=a", "resize must be an integer or HxW, got 'a'"),
    ("epochs=2,resize=0", "rung 0: resize must be a positive side"),
    ("epochs=2,resize=14x0x3", "rung 0: resize must be a positive side"),
])
def test_bad_resize_rungs_name_the_problem(text, message):
    with pytest.raises(ValueError, match=message):
        parse_rungs(text)


def test_a_search_with_a_resize_rung_trains_at_that_size_and_reports_it(tmp_path):
    from nlfs.search._report import rung_regime

    rungs = [{"epochs": 1, "resize": 4, "seeds": 1}, {"epochs": 1, "seeds": 1}]
    rows = run_search(_cfg(tmp_path, budget=1, rungs=rungs, seed_losses=("Poly1",), seed_mutants=0,
                          filters=("validity",), threads=1), None)
    by_rung = {r["rung"]: r for r in rows if r["status"] == "ok"}
    assert set(by_rung) == {0, 1} and by_rung[0]["fidelity"] != by_rung[1]["fidelity"]
    cfg = _cfg(tmp_path, budget=1, rungs=rungs)
    low, full = (cfg.train_config(r) for r in cfg.rung_list())
    assert low.resize == (4, 4) and full.resize is None
    ce = {r["fidelity"]: r["result"]["train"]["final_train_loss"] for r in rows if r["status"] == "baseline"}
    assert set(ce) == {by_rung[0]["fidelity"], by_rung[1]["fidelity"]}  # CE at 4x4 too, paired with it
    # CE's rung-0 training is a 4x4 one (its loss to the last digit), not a full-size one
    at_low, at_full = (nlfs.train.train("CE", c).final_train_loss for c in (low, full))
    assert ce[by_rung[0]["fidelity"]] == pytest.approx(at_low, rel=1e-6) and at_low != pytest.approx(at_full, rel=1e-3)
    summary = write_report(tmp_path / "run", rows)
    assert "rung 0: epochs 1, images at 4x4, 1 seed(s)" in summary["regime"]
    cfg = Search(_cfg(tmp_path, budget=1, rungs=rungs), resume=True)
    saved = cfg.db.get_meta("config")
    cfg.close()
    assert "images at 4x4" in rung_regime(saved, 0)
