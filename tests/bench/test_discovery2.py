"""bench/discovery2.py --plan: the campaign's trainings and CPU-hours per stage, cut to the budget."""

import csv
import statistics

from bench import discovery2 as d2

COSTS = d2.Costs(target_s=3600.0, screen=0.5, resnet9v2=2.0, digits=0.1, race=0.25)  # 1 unit = 1 CPU-hour
SMALL = d2.PlanConfig(candidates=10, leaders=1, search_target_seeds=2, finalists=1, lr_points=3, lr_widen=1,
                      lr_seeds=1, eps_points=3, test_seeds=10, heldout_seeds=5, confirm_seeds=4,
                      optional_baselines=False, heldout=(("noisy", "noise20"), ("clean", "resnet9v2")))


def test_plan_arithmetic_by_hand():
    rows = {(s.regime, s.stage): (s.trainings, s.units) for s in d2.stages(SMALL, COSTS)}
    assert rows == {
        # 10 candidates, a row per rung reached (10 + 10/3 + 10/9); (1 leader + CE) raced from 1 to 3 seeds:
        # 4 more trainings at a quarter each
        ("clean", "search: screening"): (18, 6.0),
        ("clean", "search: target"): (4, 4.0),  # (1 leader + CE) x 2 seeds
        ("clean", "learning rate"): (28, 28.0),  # 4 losses x 4 rates, + label smoothing's 3 other eps x 4
        ("clean", "test (elimination, Holm)"): (40, 40.0),
        # 4 losses x 5 seeds + (CE, 4 eps of label smoothing, Poly1, the finalist) x 4 rates, twice the cost
        ("clean", "held-out: resnet9v2"): (48, 96.0),
        ("clean", "confirmation"): (8, 8.0),
        ("noisy", "search: screening"): (18, 6.0),
        ("noisy", "search: target"): (4, 4.0),
        ("noisy", "learning rate"): (28, 28.0),  # 5 losses x 4 rates, + SCE's and NCE+RCE's other setting x 4
        ("noisy", "test (elimination, Holm)"): (50, 50.0),
        ("noisy", "held-out: noise20"): (25, 25.0),  # 5 losses x 5 seeds, the regime's rates
        ("noisy", "confirmation"): (8, 8.0),
    }
    assert d2.cpu_hours(d2.stages(SMALL, COSTS), COSTS) == 303.0


def test_fit_cuts_settings_in_order_and_keeps_seeds_and_baselines():
    roomy = d2.PlanConfig(budget_h=1e6)
    assert d2.fit(roomy, COSTS) == (roomy, [])
    tight = d2.PlanConfig(budget_h=320.0)
    cfg, cuts = d2.fit(tight, COSTS)
    assert d2.cpu_hours(d2.stages(cfg, COSTS), COSTS) <= 320.0 < d2.cpu_hours(d2.stages(tight, COSTS), COSTS)
    order = [what for what, _ in d2.CUTS]
    assert cuts == order[:len(cuts)] and cuts
    assert cfg.test_seeds == tight.test_seeds and cfg.confirm_seeds == tight.confirm_seeds
    tests = {s.regime: s.detail for s in d2.stages(cfg, COSTS) if s.stage.startswith("test")}
    for regime, baselines in d2.BASELINES.items():
        assert f"({len(baselines)} baselines" in tests[regime]


def test_measured_costs_read_the_committed_cpu_times(tmp_path):
    cpu = json.loads(d2.PROXY_COSTS.read_text())["cpu_s"]
    levels = json.loads(d2.LEVEL_COSTS.read_text())
    costs = d2.measured_costs()
    assert costs.target_s == cpu["target8"]
    # a candidate pays rung 0, a third of it rung 1, a ninth rung 2 (each rung promotes its top third)
    assert costs.screen * costs.target_s == pytest.approx(levels["s32"] + levels["s64"] / 3 + cpu["e1"] / 9)
    assert costs.race * costs.target_s == pytest.approx(cpu["e1"])
    assert 0 < costs.digits < 1 and costs.resnet9v2 > 0
    assert d2.measured_costs(100.0).target_s == 100.0
    out = tmp_path / "plan.md"
    assert d2.main(["--plan", "--budget", "25", "--out", str(out)]) == 0
    text = out.read_text()
    cfg, _ = d2.fit(d2.PlanConfig(budget_h=25.0), costs)
    total = d2.cpu_hours(d2.stages(cfg, costs), costs)
    assert f"**Total: {total:.1f} CPU-hours" in text and "| noisy | test (elimination, Holm) |" in text


# ------------------------------------------------------------------------------------ the driver
import dataclasses  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402

import pytest  # noqa: E402

import nlfs.train  # noqa: E402
from nlfs.search import RunDB  # noqa: E402
from nlfs.train import TrainResult  # noqa: E402

BEST_LR = {"CE": 0.025}  # CE's validation accuracy peaks below the grid: two widenings to reach it


class GridTrainer:
    """Stands in for nlfs.train.train: validation accuracy peaks at each loss's best learning rate (0.1
    unless BEST_LR says otherwise) and label smoothing's at eps 0.1; test accuracy ranks Poly1 first among
    the clean baselines and the finalist (``better``) above it by ``lead``."""

    def __init__(self, lead=0.01, best_eps=0.1, fail=()):
        self.calls, self.lead, self.best_eps, self.fail = [], lead, best_eps, set(fail)  # fail: (loss, seed)

    def __call__(self, loss, cfg, constants=None):
        name = loss if isinstance(loss, str) else loss.name
        self.calls.append(dict(loss=name, text=getattr(loss, "text", loss), constants=dict(constants or {}), lr=cfg.lr,
                               seed=cfg.seed,
                               split_seed=cfg.split_seed, evaluate_test=cfg.evaluate_test, dataset=cfg.dataset,
                               label_noise=cfg.label_noise, kind=cfg.label_noise_kind, epochs=cfg.epochs,
                               grad_scale=cfg.grad_scale))
        best = BEST_LR.get(name, 0.1)
        val = 0.9 - abs(math.log(cfg.lr / best)) / 100 - abs((constants or {}).get("a", 0.1) - self.best_eps)
        jitter = ((cfg.seed * 7919 + len(name) * 31) % 13) / 13 * 0.004
        test = 0.8 + {"Poly1": 0.005, "Better1": 0.005 + self.lead}.get(name, 0.0) + jitter
        return TrainResult(val_acc=val, best_val_acc=val, test_acc=test if cfg.evaluate_test else None,
                           final_train_loss=0.5, train_acc=val, steps=3, epochs=1.0, wall_time=0.5, device="cpu",
                           dataset=cfg.dataset, model=cfg.model, augment=cfg.augment, seed=cfg.seed, loss=name,
                           loss_text="", backend="torch", diverged=(name, cfg.seed) in self.fail,
                           reason="NaN loss" if (name, cfg.seed) in self.fail else "")


@pytest.fixture
def trainer(monkeypatch):
    fake = GridTrainer()
    monkeypatch.setattr(nlfs.train, "train", fake)
    return fake


def _camp(tmp_path, **kw):
    return d2.Campaign(trainings=tmp_path / "trainings.csv", results=tmp_path / "d2", runs=tmp_path / "runs",
                       workers=1, overrides={"dataset": "digits"}, log=lambda *a: None, **kw)


def _finalist(camp, regime="clean", name="Better1", expression="-y * log(p) + 2 * y * (1 - p)"):
    camp.results.mkdir(parents=True, exist_ok=True)
    camp.finalists_file(regime).write_text(json.dumps(
        [{"name": name, "expression": expression, "constants": {}, "class_reduction": "class_sum",
          "scale": 0.9, "provenance": {}}]))


def test_baselines_choose_rates_on_lr_seeds_then_train_test_seeds(tmp_path, trainer):
    camp = _camp(tmp_path)
    camp.baselines(["clean"])
    calls = trainer.calls
    lr = [c for c in calls if not c["evaluate_test"]]
    test = [c for c in calls if c["evaluate_test"]]
    assert {c["seed"] for c in lr} == set(d2.LR_SEEDS) and {c["seed"] for c in test} == set(d2.TEST_SEEDS)
    assert not set(d2.LR_SEEDS) & set(d2.TEST_SEEDS)
    target = [c for c in lr if c["epochs"] == 8]  # the Fashion-MNIST target's length, on digits here
    assert sorted(c["lr"] for c in target if c["loss"] == "CE") == [0.0125, 0.025, 0.05, 0.1, 0.2]
    assert sorted(c["lr"] for c in target if c["loss"] == "Poly1") == [0.05, 0.1, 0.2]
    assert {(c["constants"]["a"], c["lr"]) for c in target if c["loss"] == "LabelSmoothingCE"} == {
        (e, r) for e in d2.EPS_GRID for r in d2.LR_GRID}
    assert {c["lr"] for c in test if c["loss"] == "CE"} == {0.025}
    assert {c["constants"].get("a") for c in test if c["loss"] == "LabelSmoothingCE"} == {0.1}
    # both settings of the regime (target and held-out digits), 10 test seeds per loss in each
    assert len(test) == 2 * 3 * len(d2.TEST_SEEDS)
    assert all(c["split_seed"] == c["seed"] for c in calls)
    assert {c["grad_scale"] for c in calls} == {"ce"}  # every loss on CE's gradient scale, as the search trains
    rows = d2.read_rows(camp.trainings)
    assert len(rows) == len(calls) and len({r["key"] for r in rows}) == len(rows)
    assert camp.baselines(["clean"]) == 0  # all done: nothing trains again


def test_a_killed_run_resumes_without_training_a_done_row_twice(tmp_path, trainer, monkeypatch):
    camp = _camp(tmp_path)
    camp.baselines(["noisy"])
    full = camp.trainings.read_text()
    total = len(trainer.calls)
    lines = full.splitlines(keepends=True)
    kept = 20
    # killed while writing a row: 20 whole rows, and half of the next one without its line end
    camp.trainings.write_text("".join(lines[:1 + kept]) + lines[1 + kept][:25])
    assert len(d2.read_rows(camp.trainings)) == kept
    done = {r["key"] for r in d2.read_rows(camp.trainings)}
    again = GridTrainer()
    monkeypatch.setattr(nlfs.train, "train", again)
    assert camp.baselines(["noisy"]) == total - kept
    assert len(again.calls) == total - kept
    rows = d2.read_rows(camp.trainings)
    assert len(rows) == total and len({r["key"] for r in rows}) == total and done <= {r["key"] for r in rows}
    assert camp.trainings.read_text().count("\n") == total + 1  # the cut line is gone, not kept as a row


def test_a_training_counts_its_cpu_time_and_older_rows_gain_the_column(tmp_path, trainer):
    camp = _camp(tmp_path)
    old = [c for c in d2.COLUMNS if c != "cpu_s"]  # the file as the campaign began it
    row = {**{c: "" for c in old}, "key": "k0", "regime": "noisy", "setting": "target", "stage": "lr", "loss": "CE",
           "status": "ok", "wall_s": "500.0"}
    camp.trainings.write_text(",".join(old) + "\n" + ",".join(row[c] for c in old) + "\n")
    assert camp.rates(["noisy"]) > 0
    assert camp.trainings.read_text().splitlines()[0].split(",") == d2.COLUMNS
    rows = d2.read_rows(camp.trainings)
    assert rows[0]["key"] == "k0" and rows[0]["cpu_s"] == "" and d2._cpu_s(rows[0]) == 500.0  # wall time then
    assert all(float(r["cpu_s"]) >= 0 and d2._cpu_s(r) == float(r["cpu_s"]) for r in rows[1:])


def test_every_test_seed_draws_its_own_split_and_noise(tmp_path):
    from nlfs.data import load_dataset, make_splits, with_label_noise

    camp = d2.Campaign(trainings=tmp_path / "t.csv", results=tmp_path, workers=1, log=lambda *a: None,
                       overrides={"steps": 3, "train_size": 300, "val_size": 100})
    setting = next(s for s in d2.SETTINGS["noisy"] if s.name == "digits-asym40")
    cfgs = [camp.config(d2.Job("noisy", setting, "test", "CE", (), 0.1, s)) for s in d2.TEST_SEEDS[:2]]
    assert [c.split_seed for c in cfgs] == list(d2.TEST_SEEDS[:2])
    assert (cfgs[0].label_noise, cfgs[0].label_noise_kind) == (0.4, "asymmetric")
    ds = load_dataset("digits")
    clean = [make_splits(ds, c.val_size, c.train_size, c.split_seed) for c in cfgs]
    noisy = [with_label_noise(s, c.label_noise, ds.num_classes, c.split_seed, c.label_noise_kind)
             for s, c in zip(clean, cfgs, strict=True)]
    assert set(clean[0].train.tolist()) != set(clean[1].train.tolist())  # its own training subset
    flipped = [set(c.train[n.labels[c.train] != c.labels[c.train]].tolist()) for c, n in zip(clean, noisy, strict=True)]
    assert flipped[0] and flipped[1]
    assert flipped[0] != flipped[1]
    # two tiny real trainings through the campaign's own runner: one row each, split seed = seed
    jobs = [d2.Job("noisy", setting, "test", "CE", (), 0.1, s) for s in d2.TEST_SEEDS[:2]]
    assert camp.run(lambda index: jobs) == 2
    rows = d2.read_rows(camp.trainings)
    assert [(int(r["seed"]), int(r["split_seed"]), r["status"]) for r in rows] == [
        (s, s, "ok") for s in d2.TEST_SEEDS[:2]]
    assert all(0 <= float(r["test_acc"]) <= 1 and r["label_noise_kind"] == "asymmetric" for r in rows)


def test_search_runs_evolve_in_the_regime_target_with_its_warm_starts_and_frozen_rungs(tmp_path, trainer, monkeypatch):
    from nlfs.evolve import build_parser, config_from_args
    from nlfs.search import DEFAULT_RUNGS, DEFAULT_TARGETS, parse_target
    from nlfs.search._config import warm_genotypes
    from nlfs.spaces import get_space

    camp = _camp(tmp_path)
    argv = d2.search_argv(camp, "noisy", {})
    assert argv[argv.index("--seed-losses") + 1] == "CE;GCE;SCE;NCEandRCE"
    cfg = config_from_args(build_parser().parse_args(argv))
    assert cfg.budget == d2.CAMPAIGN.candidates and cfg.finalists == d2.CAMPAIGN.leaders
    assert cfg.race_seeds == d2.CAMPAIGN.race_seeds and cfg.eta == d2.ETA
    # scored as the campaign scores: the final model, on CE's gradient scale
    assert (cfg.score, cfg.grad_scale) == ("final", "ce")
    assert cfg.target == {**parse_target("train_size=all,epochs=8"), "label_noise": 0.4, "seeds": 2}
    cfg.resolve()
    frozen = [{k: v for k, v in r.items() if k != "level"} for r in d2.RUNGS]
    assert cfg.rungs == [{**r, "train_size": None if r["train_size"] == "all" else r["train_size"]} for r in frozen]
    # frozen when planned: the library's defaults may move, the campaign's search does not
    monkeypatch.setitem(DEFAULT_TARGETS, "fashion-mnist", {"train_size": "all", "epochs": 12, "seeds": 2})
    monkeypatch.setitem(DEFAULT_RUNGS, "fashion-mnist", ({"epochs": 3, "seeds": 1},))
    moved = config_from_args(build_parser().parse_args(d2.search_argv(camp, "noisy", {}))).resolve()
    assert (moved.rungs, moved.target) == (cfg.rungs, cfg.target)
    # the screening trains with the regime's noise too, not clean labels
    assert {cfg.train_config(r).label_noise for r in cfg.rung_list()} == {0.4}
    assert cfg.target_train_config().label_noise == 0.4
    clean = config_from_args(build_parser().parse_args(d2.search_argv(camp, "clean", {})))
    assert clean.seed_losses[0] == "CE" and clean.seed_losses[2] == "Poly1"
    assert clean.train_overrides == {} and "label_noise" not in clean.target
    # label smoothing as a tree: the catalogue's eps before the baselines stage chose one, then the chosen
    assert clean.seed_losses[1] == "-((1 - 0.1) * y + 0.1 / 10) * log(p)"
    trainer.best_eps = 0.2
    camp.baselines(["clean"])
    clean = config_from_args(build_parser().parse_args(d2.search_argv(camp, "clean")))
    assert clean.seed_losses[1] == "-((1 - 0.2) * y + 0.2 / 10) * log(p)"
    (smoothing,) = warm_genotypes(clean, get_space("gp"))[1:2]
    assert smoothing.leaves == {"y", "p"}


def test_published_constants_each_get_a_rate_and_the_better_is_the_baseline(tmp_path, trainer):
    from nlfs.losses import get

    trainer.best_eps = 0.01  # the fake trainer's validation peaks at a = 0.01: SCE's MNIST setting
    camp = _camp(tmp_path)
    camp.baselines(["noisy"])
    lr = [c for c in trainer.calls if not c["evaluate_test"] and c["epochs"] == 8 and c["label_noise"] == 0.4]
    for name, sets in d2.PUBLISHED_CONSTANTS.items():
        assert {tuple(sorted(c["constants"].items())) for c in lr if c["loss"] == name} == {
            tuple(sorted(consts.items())) for _, consts in sets}  # each setting its own rates
    target = d2.SETTINGS["noisy"][0]
    sce, _ = camp.choice(camp.index(), "noisy", target, "SCE")
    assert sce["published"] == "MNIST" and dict(sce["constants"]) == {"a": 0.01, "b": 1.0}
    assert set(sce["published_tried"]) == {"CIFAR-10", "MNIST"}
    nce, _ = camp.choice(camp.index(), "noisy", target, "NCEandRCE")
    assert nce["published"] == "CIFAR-10"  # a = 1 in both: a tie goes to the first
    tests = [c for c in trainer.calls if c["evaluate_test"] and c["loss"] == "SCE"]
    assert {tuple(sorted(c["constants"].items())) for c in tests} == {(("a", 0.01), ("b", 1.0))}
    # another noise on the target's data and model keeps the target's choices: no rates of its own
    assert not [c for c in trainer.calls if c["kind"] == "pairflip" and not c["evaluate_test"]]
    flipped = [c for c in trainer.calls if c["kind"] == "pairflip"]
    assert {(c["constants"].get("a"), c["lr"]) for c in flipped if c["loss"] == "SCE"} == {(0.01, sce["lr"])}
    assert len(flipped) == 4 * len(d2.TEST_SEEDS)
    # the search starts from the baselines as chosen
    argv = d2.search_argv(camp, "noisy")
    warm = argv[argv.index("--seed-losses") + 1].split(";")
    assert warm[2] == str(get("SCE").expr.substitute({"a": 0.01, "b": 1.0})) and "0.01" in warm[2]
    md = d2.report(camp, "noisy")
    assert "(MNIST constants, a 0.01, b 1, of CIFAR-10:" in md


def _search_run(camp, regime):
    run = camp.search_dir(regime)
    db = RunDB(run / "run.db")
    expressions = ["-y * log(p)", "p * p - y", "y - p", "y - p * p"]
    ids = [db.record({"canonical": f"e{i}", "expression": expr, "constants": {}, "sign": 1.0, "fitness": 0.01,
                      "status": "ok", "rung": 2}) for i, expr in enumerate(expressions)]
    db.close()
    best = [{"id": ids[0], "name": "r#1", "expression": "-y * log(p)", "constants": {}, "scale": 1.0, "same_as": "CE",
             "target": {"paired": 0.02}, "in_target": "held"},
            {"id": ids[1], "name": "r#2", "expression": "p * p - y", "constants": {}, "scale": 0.7, "same_as": None,
             "target": {"paired": -0.001}, "in_target": "did not hold"},
            {"id": ids[2], "name": "r#3", "expression": "y - p", "constants": {}, "scale": 1.0, "same_as": None,
             "target": {"paired": 0.004}, "in_target": "held"},
            {"id": ids[3], "name": "r#4", "expression": "y - p * p", "constants": {}, "scale": 1.0, "same_as": None,
             "target": None, "in_target": "not checked in the target"}]
    (run / "summary.json").write_text(json.dumps({"best": best}))


def test_finalists_are_the_leaders_best_in_the_target_never_a_known_twin(tmp_path):
    camp = _camp(tmp_path)
    _search_run(camp, "clean")
    # the plan's 3 finalists: only the two novel leaders the target checked, best there first; never the
    # catalogue twin (ahead in the target) nor the candidate the target never trained (a proxy lead only)
    entries = d2.pick_finalists(camp, "clean")
    assert [(e["name"], e["expression"], e["scale"]) for e in entries] == [
        ("FoundFMClean1", "y - p", 1.0), ("FoundFMClean2", "p * p - y", 0.7)]
    assert json.loads(camp.finalists_file("clean").read_text()) == entries
    assert len(list(csv.DictReader(camp.search_csv("clean").open()))) == 4
    one = _camp(tmp_path / "one", plan=dataclasses.replace(d2.CAMPAIGN, finalists=1))
    _search_run(one, "clean")
    assert [e["expression"] for e in d2.pick_finalists(one, "clean")] == ["y - p"]


def test_a_search_without_a_novel_leader_checked_in_the_target_ends_the_regime_with_no(tmp_path, trainer):
    camp = _camp(tmp_path)
    _search_run(camp, "clean")
    summary = json.loads((camp.search_dir("clean") / "summary.json").read_text())
    summary["best"] = [e for e in summary["best"] if e["same_as"] or e["target"] is None]
    (camp.search_dir("clean") / "summary.json").write_text(json.dumps(summary))
    assert d2.pick_finalists(camp, "clean") == [] and camp.finalists_file("clean").is_file()
    md = d2.report(camp, "clean")
    assert "**No.** The search ended without a novel loss checked in its target" in md
    assert "None: the search" in md.split("## Finalists")[1]
    assert camp.test(["clean"]) == 0  # nothing to test
    assert camp.baselines(["clean"]) == 0 and not camp.trainings.exists()  # nor any baseline's test seeds
    for stage in ("test (elimination, Holm)", "held-out: digits", "confirmation"):
        assert f"| {stage} | not needed (no finalist) |" in md and stage not in md.split(
            "Pending stages: ")[1].split("\n")[0]
    # picked once: a later pick keeps the file, whatever the summary says since
    (camp.search_dir("clean") / "summary.json").write_text(json.dumps({"best": []}))
    _search_run(camp, "clean")
    assert d2.pick_finalists(camp, "clean") == [] and json.loads(camp.finalists_file("clean").read_text()) == []


def test_a_search_waits_for_the_constants_its_warm_starts_take(tmp_path, trainer, monkeypatch):
    from nlfs import evolve

    said = []
    camp = _camp(tmp_path)
    camp.log = said.append
    monkeypatch.setattr(evolve, "main", lambda argv: pytest.fail("the search started"))
    assert d2.run_searches(camp, ["noisy"]) == 2 and not camp.search_dir("noisy").exists()
    assert "run `rates` first" in said[-1]
    started = []
    monkeypatch.setattr(evolve, "main", lambda argv: started.append(argv) or 0)
    camp.rates(["clean"])  # one regime ready: it runs, the other waits and the return code says so
    assert d2.run_searches(camp, ["noisy", "clean"]) == 2 and len(started) == 1
    assert started[0][started[0].index("--run-dir") + 1] == str(camp.search_dir("clean"))
    camp.rates(["noisy"])
    assert d2.run_searches(camp, ["noisy"]) == 0 and len(started) == 2


def test_confirmation_is_preregistered_before_it_runs_and_follows_the_file(tmp_path, trainer):
    camp = _camp(tmp_path)
    camp.baselines(["clean"])
    assert camp.confirm(["clean"]) == 0 and camp.preregister("clean") is None  # no file, no finalist yet
    _finalist(camp)
    camp.test(["clean"])
    assert camp.strongest("clean") == "Poly1"  # the strongest baseline by the test stage, not CE
    pre = camp.preregister("clean")
    path = camp.preregistration_file("clean")
    assert json.loads(path.read_text()) == pre
    assert (pre["finalist"]["name"], pre["baseline"]["name"], pre["seeds"]) == ("Better1", "Poly1",
                                                                                  list(d2.CONFIRM_SEEDS))
    assert "paired t-test" in pre["test"] and not any(c["seed"] in d2.CONFIRM_SEEDS for c in trainer.calls)
    # the confirmation trains what the file names: edited by hand to CE at 0.05, it trains that
    pre["baseline"] = {"name": "CE", "constants": {}, "lr": 0.05}
    path.write_text(json.dumps(pre))
    # and the finalist as pre-registered, whatever the finalists file says since
    _finalist(camp, expression="y - p")
    assert camp.preregister("clean")["baseline"]["name"] == "CE"  # an existing file is never rewritten
    n = len(trainer.calls)
    assert camp.confirm(["clean"]) == 2 * len(d2.CONFIRM_SEEDS)
    confirm = trainer.calls[n:]
    assert {(c["loss"], c["lr"]) for c in confirm} == {("Better1", 0.1), ("CE", 0.05)}
    assert {c["text"] for c in confirm if c["loss"] == "Better1"} == {pre["finalist"]["entry"]["expression"]}
    assert {c["seed"] for c in confirm} == set(d2.CONFIRM_SEEDS)
    md = d2.report(camp, "clean")
    jitter = [(((s * 7919 + n * 31) % 13) / 13 * 0.004) for s in d2.CONFIRM_SEEDS for n in (7, 2)]
    diff = statistics.fmean(0.015 + a - b for a, b in zip(jitter[::2], jitter[1::2], strict=True))
    assert f"Better1 - CE = {diff * 100:+.2f} pp" in md and "**confirmed** at α = 0.05" in md


def test_report_is_recomputed_byte_identical_and_names_pending_stages(tmp_path, trainer):
    one = dataclasses.replace(d2.CAMPAIGN, finalists=1)  # one finalist planned, one found: the family is complete
    camp = _camp(tmp_path, plan=one)
    empty = d2.report(camp, "noisy")
    assert empty.index("**No verdict yet.**") < empty.index("## Compute per stage")
    assert "Pending stages: search: screening, search: target, learning rate, test (elimination, Holm), " \
           "held-out: noise20, held-out: pairflip, held-out: digits, held-out: digits-noise20, " \
           "held-out: digits-asym40, confirmation." in empty
    camp.baselines(["clean"])
    _finalist(camp)
    camp.test(["clean"])
    camp.heldout(["clean"])
    first = d2.report(camp, "clean")
    (tmp_path / "first.md").write_text(first)
    # the committed CSV alone gives the same bytes again, in another process's order of work
    copy = d2.Campaign(trainings=tmp_path / "checkout" / "trainings.csv", results=camp.results, runs=camp.runs,
                       workers=1, overrides={"dataset": "digits"}, plan=one)
    copy.trainings.parent.mkdir()
    copy.trainings.write_text(camp.trainings.read_text())
    assert d2.report(copy, "clean").encode() == (tmp_path / "first.md").read_bytes()
    assert first.startswith("# Discovery campaign 2, clean regime")
    verdict = first.split("\n\n")[1]
    assert verdict.startswith("**Yes, in the target:** Better1 beats Poly1")
    assert "Pending stages: search: screening, search: target, confirmation." in first
    assert "| learning rate | done | 28 | " in first and "| confirmation | pending | 20 | 0 |" in first
    assert "| target | CE | 0.0125: " in first and "| 0.025 | no |" in first
    spent = sum(float(r["wall_s"]) for r in d2.read_rows(camp.trainings)) / 3600
    assert f"| all | | {sum(s.trainings for s in d2.stages(one, d2.PLAN_COSTS) if s.regime == 'clean')} |" \
           in first and first.rstrip().count(f"{spent:.2f}") >= 1
    assert "- `target`: digits (all training images)" in first  # every accuracy names its regime
    assert "| Better1 | `-y * log(p) + 2 * y * (1 - p)` | - | 0.9 |" in first and "## Finalists\n\nPending" in empty


def test_campaign_script_parses_and_names_its_stages():
    script = d2.ROOT / "bench" / "discovery2.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    usage = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert usage.returncode == 2
    assert all(f"discovery2.sh {stage}" in usage.stdout
               for stage in ("rates", "baselines", "search", "test", "heldout", "confirm", "report", "all"))
    all_line = next(line for line in script.read_text().splitlines() if line.strip().startswith("all)"))
    assert all_line.index("main rates") < all_line.index("main search") < all_line.index("main baselines")


def test_a_stage_commits_its_rows_with_the_reports_they_give(tmp_path):
    import sys

    def git(*a, cwd=tmp_path / "repo"):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a], cwd=cwd, check=True,
                              capture_output=True, text=True).stdout

    git("clone", "-q", str(d2.ROOT), str(tmp_path / "repo"), cwd=tmp_path)
    repo = tmp_path / "repo"
    for name in ("bench/discovery2.sh", "bench/discovery2.py"):  # the files under test, as they are now
        (repo / name).write_text((d2.ROOT / name).read_text())
    git("commit", "-q", "--allow-empty", "-am", "under test")  # a clean checkout: nothing differs
    csv_path = repo / "bench" / "results" / "discovery2_trainings.csv"
    csv_path.write_text("".join(csv_path.read_text().splitlines(keepends=True)[:-1]))  # one row fewer
    env = {**os.environ, "PY": sys.executable, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    out = subprocess.run(["bash", "bench/discovery2.sh", "report"], cwd=repo, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert git("log", "-1", "--format=%s") == "Discovery 2: report\n"  # the empty results folder no obstacle
    changed = git("show", "--name-only", "--format=", "HEAD").split()
    assert "bench/results/discovery2_trainings.csv" in changed and git("status", "--porcelain", "bench") == ""


def test_the_rates_stage_trains_the_warm_starts_choices_and_nothing_else(tmp_path, trainer, monkeypatch):
    from nlfs import evolve

    camp = _camp(tmp_path)
    camp.rates(["noisy"])
    assert trainer.calls and not [c for c in trainer.calls if c["evaluate_test"]]  # no test seed read
    assert {c["label_noise"] for c in trainer.calls} == {0.4} and {c["epochs"] for c in trainer.calls} == {8}
    started = []
    monkeypatch.setattr(evolve, "main", lambda argv: started.append(argv) or 0)
    assert d2.run_searches(camp, ["noisy"]) == 0 and started  # all the search needs
    n = len(trainer.calls)
    camp.baselines(["noisy"])  # the rest reuses every rate already trained
    assert not [c for c in trainer.calls[n:] if not c["evaluate_test"] and c["epochs"] == 8
                and c["kind"] == "symmetric" and c["label_noise"] == 0.4]


def test_a_failed_test_seed_is_counted_and_does_not_stall_the_campaign(tmp_path, monkeypatch):
    fake = GridTrainer(fail={("Poly1", 103)})
    monkeypatch.setattr(nlfs.train, "train", fake)
    camp = _camp(tmp_path)
    _finalist(camp)
    camp.test(["clean"])
    assert camp.test(["clean"]) == 0  # a diverged seed is a result, not trained again
    # a failed seed scores chance (issue #26 review): Poly1's mean falls below the others', so it is no longer
    # the strongest baseline (before the review its 9 survivors made it the strongest)
    target = d2.SETTINGS["clean"][0]
    assert camp.accuracies("clean", target)["Poly1"][103] == 0.1
    assert camp.strongest("clean") != "Poly1"
    assert camp.preregister("clean")["baseline"]["name"] == camp.strongest("clean")
    md = d2.report(camp, "clean")
    assert "| target | Poly1 | 9 | 1 | " in md and "| target | CE | 10 | 0 | " in md


def test_committed_reports_are_what_the_committed_files_give():
    """bench/results/discovery2_<regime>.md is recomputed byte for byte from the committed trainings CSV,
    finalists, search evaluations and pre-registrations (bench/discovery2.sh commits them together)."""
    for regime in d2.REGIMES:
        path = d2.RESULTS / f"discovery2_{regime}.md"
        assert path.read_text() == d2.report(d2.Campaign(log=lambda *a: None), regime)


def test_a_preregistration_counts_only_once_committed(tmp_path):
    def git(*a):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a], cwd=tmp_path, check=True,
                       capture_output=True)

    git("init", "-q")
    pre = tmp_path / "clean_confirmation.json"
    pre.write_text("{}")
    assert not d2.committed(pre)
    git("add", pre.name)
    git("commit", "-q", "-m", "pre-registered")
    assert d2.committed(pre)
    pre.write_text('{"edited": "after"}')
    assert not d2.committed(pre)


# ------------------------------------------------------------------------ the review's findings
class PeakTrainer(GridTrainer):
    """Like GridTrainer, but the peak over epochs (best_val_acc) rewards the larger rates: the final
    model's validation accuracy (val_acc) still peaks at each loss's best rate."""

    def __call__(self, loss, cfg, constants=None):
        res = super().__call__(loss, cfg, constants)
        return dataclasses.replace(res, best_val_acc=res.val_acc + cfg.lr)


def test_the_learning_rate_is_chosen_on_the_final_models_validation_accuracy(tmp_path, monkeypatch):
    assert d2._score({"status": "ok", "val_acc": "0.7", "best_val_acc": "0.9"}) == 0.7
    assert d2._score({"status": "diverged", "val_acc": "0.7", "best_val_acc": "0.9"}) == 0.0
    fake = PeakTrainer()
    monkeypatch.setattr(nlfs.train, "train", fake)
    camp = _camp(tmp_path)
    camp.baselines(["noisy"])
    target = [c for c in fake.calls if c["evaluate_test"] and c["epochs"] == 8]
    # on the peak, the grid would have widened upwards to its cap; on the final model, the best rates
    assert {c["lr"] for c in target if c["loss"] == "CE"} == {0.025}
    assert {c["lr"] for c in target if c["loss"] == "GCE"} == {0.1}
    md = d2.report(camp, "noisy")
    assert "by mean validation accuracy of the final model (the one the test stage tests" in md


def test_the_holm_family_is_fixed_by_the_plan_and_a_verdict_is_interim_until_it_is_done(tmp_path, trainer):
    from nlfs.stats import holm

    camp = _camp(tmp_path, plan=dataclasses.replace(d2.CAMPAIGN, finalists=1))
    camp.baselines(["clean"])
    _finalist(camp)
    camp.test(["clean"])  # the target's comparisons, not the held-out digits' yet
    rows, family = d2.comparisons(camp, "clean", camp.index())
    assert family == 1 * 3 * 2 and [r["setting"] for r in rows] == ["target"] * 3
    expected = holm([r["p_t"] for r in rows] + [1.0] * 3)  # the 3 not yet run count as p = 1
    assert [r["p_t_holm"] for r in rows] == expected[:3]
    assert expected[:3] != holm([r["p_t"] for r in rows])  # a smaller family would have given other p-values
    md = d2.report(camp, "clean")
    verdict = md.split("\n\n")[1]
    assert verdict.startswith("**Interim: 3 of 6 comparisons done.** **Yes, in the target:**")
    assert "3 of the 6 comparisons of the family (the plan's finalists x baselines x settings) done (interim)" in md
    # before the search picks its finalists the plan fixes the family (two planned: 12 comparisons); once
    # it has picked them (before any test training) the family is those picked: one found of three
    # planned makes 6, not an interim verdict for ever
    two = _camp(tmp_path / "two", plan=dataclasses.replace(d2.CAMPAIGN, finalists=2))
    assert d2.comparisons(two, "clean", two.index())[1] == 12
    three = _camp(tmp_path, plan=dataclasses.replace(d2.CAMPAIGN, finalists=3))
    assert d2.comparisons(three, "clean", three.index())[1] == 6
    camp.heldout(["clean"])
    rows, family = d2.comparisons(camp, "clean", camp.index())
    assert len(rows) == family == 6
    md = d2.report(camp, "clean")
    assert "Interim" not in md and md.split("\n\n")[1].startswith("**Yes, in the target:**")


def test_a_failed_training_scores_chance_in_every_comparison(tmp_path, monkeypatch):
    from nlfs.stats import paired_differences

    fake = GridTrainer(fail={("Better1", 101), ("Better1", 200)})
    monkeypatch.setattr(nlfs.train, "train", fake)
    camp = _camp(tmp_path)
    _finalist(camp)
    camp.test(["clean"])
    target = d2.SETTINGS["clean"][0]
    acc = camp.accuracies("clean", target)
    assert acc["Better1"][101] == 0.1 and len(acc["Better1"]) == len(d2.TEST_SEEDS)  # not judged on survivors
    rows, _ = d2.comparisons(camp, "clean", camp.index())
    vs_ce = next(r for r in rows if r["baseline"] == "CE")
    assert vs_ce["n"] == len(d2.TEST_SEEDS)
    assert vs_ce["mean_diff"] == pytest.approx(statistics.fmean(paired_differences(acc["Better1"], acc["CE"])))
    assert vs_ce["mean_diff"] < 0  # its failed seed at chance outweighs its lead on the others
    pre = camp.preregister("clean")
    assert "scores chance accuracy (0.1, 1 / classes)" in pre["test"] and pre["failed_training_scores"] == 0.1
    camp.confirm(["clean"])
    md = d2.report(camp, "clean")
    base = pre["baseline"]["name"]
    assert f"over 10 paired seeds (1 failed training(s) of Better1, 0 of {base}, at chance)" in md
    assert "| target | Better1 | 9 | 1 | " in md


def test_report_says_which_accuracy_is_which_and_names_its_limits(tmp_path, trainer):
    camp = _camp(tmp_path)
    noisy = d2.report(camp, "noisy")
    assert "except in the learning-rate table, which shows validation accuracy" in noisy
    assert "Every accuracy below is test accuracy" not in noisy
    assert "label noise 0.4 (symmetric)" in noisy and "; validation and test labels stay clean" in noisy
    limits = noisy.split("## Limits\n\n")[1].split("\n\n")[0]
    assert "MAE and TaylorCE were cut by the budget" in limits and "`optional_baselines=False`" in limits
    assert "One learning-rate seed (50)" in limits and "GCE (q=0.7)" in limits
    assert "SCE and NCEandRCE take the better of their authors' two published sets of constants" in limits
    assert "Each regime's family is Holm-corrected on its own" in limits
    camp.baselines(["clean"])
    _finalist(camp)
    clean = d2.report(camp, "clean")
    assert "validation and test labels stay clean" not in clean and "MAE" not in clean
    assert "label smoothing's eps is tuned" in clean and "Poly1 (epsilon=2)" in clean
    check = clean.split("## Finalists")[1].split("## Learning rates")[0]
    assert "gradient scale ce, seeds 0-1 all on split seed 0" in check
    assert "not over the regime's strongest baseline" in check


def test_a_trainings_key_holds_the_dataset_defaults_it_ran_with(tmp_path, monkeypatch):
    from nlfs.train import _config

    camp = _camp(tmp_path)
    job = d2.Job("clean", d2.SETTINGS["clean"][0], "test", "CE", (), 0.1, 100)
    key = camp.key(job)
    assert d2.Campaign(**{f.name: getattr(camp, f.name) for f in dataclasses.fields(camp) if f.init}).key(job) == key
    moved = {**_config.DATASET_DEFAULTS["digits"], "batch_size": 7}
    monkeypatch.setitem(_config.DATASET_DEFAULTS, "digits", moved)
    assert _camp(tmp_path).key(job) != key  # a moved default is another training, never a done row


def test_a_search_row_counts_the_seeds_it_trained_not_those_it_reused():
    def row(i, status="ok", seeds=(), cand=None, fid="f0", reason=""):
        return {"id": i, "candidate": cand, "fidelity": fid, "status": status, "reason": reason,
                "result": {"seeds": [{"seed": s} for s in seeds]} if seeds else None}

    rows = [row(1, "baseline", [0]), row(2, seeds=[0]),  # CE and a candidate at rung 0
            row(3, seeds=[0], cand=2, fid="f2"),  # promoted to the last rung: one seed there
            row(4, seeds=[0, 1, 2], cand=2, fid="f2"),  # raced: two more, the first reused
            row(5, "diverged", [0, 1], cand=2, fid="t"),  # the target: the second seed diverged
            row(6, seeds=[0], reason="fitness reused from #2"),  # a gradient twin: nothing trained
            row(7, "rejected:validity"), row(8, "error")]  # rejected before training; failed in it
    assert [r["trainings"] for r in d2.with_trainings(rows)] == [1, 1, 1, 2, 2, 0, 0, 1]


def test_a_finalist_that_is_a_catalogue_loss_at_other_constants_says_so():
    (e,) = d2.with_known_families([{"name": "F", "expression": "-(y * sqrt(p))", "constants": {}}])
    assert e["known_family"]["loss"] == "GCE" and d2.family_words(e) == "GCE (q 0.5)"
    kept = {"name": "G", "expression": "-(y * sqrt(p))", "known_family": None}  # annotated once, never again
    assert d2.with_known_families([kept]) == [kept] and d2.family_words(kept) == ""


def test_a_fresh_checkout_does_not_search_again_once_the_finalists_are_committed(tmp_path, monkeypatch):
    # the search's run directory is not committed: its finalists file is the search's record
    from nlfs import evolve

    said = []
    camp = _camp(tmp_path)
    camp.log = said.append
    _finalist(camp, "noisy")
    monkeypatch.setattr(evolve, "main", lambda argv: pytest.fail("the search started again"))
    assert d2.run_searches(camp, ["noisy"]) == 0 and not camp.search_dir("noisy").exists()
    assert "search finished" in said[-1] and "noisy_finalists.json" in said[-1]
