import dataclasses
import json
import math
import os
import re

import pytest
import torch

import nlfs.train
from nlfs import transfer
from nlfs._io import write_table
from nlfs.search import RunDB
from nlfs.train import TrainConfig, TrainResult
from nlfs.transfer._entries import CATALOGUE_ALL
from tests.runs import csv_rows, drawn_split

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small ops: one thread is as fast, far faster on a busy CPU


class FakeTrainer:
    """Records every call; accuracy depends on (loss, seed); ``fail`` = {(loss, seed): 'diverged'|'raise'}."""

    def __init__(self, fail=None):
        self.calls = []
        self.fail = fail or {}

    def __call__(self, loss, cfg, constants=None):
        self.calls.append((loss, cfg, constants))
        how = self.fail.get((loss, cfg.seed))
        if how == "raise":
            raise RuntimeError("out of memory (fake)")
        bonus = {"CE": 0.0, "NGL": 0.01}.get(loss, -0.02)
        acc = 0.80 + bonus + 0.003 * cfg.seed + (0.001 if cfg.seed % 2 else 0.0) * (loss != "CE")
        diverged = how == "diverged"
        return TrainResult(val_acc=acc, best_val_acc=acc, test_acc=None if diverged else acc,
                           final_train_loss=0.5, train_acc=acc, steps=10, epochs=1.0, wall_time=0.01,
                           device="cpu", dataset=cfg.dataset, model=cfg.model, augment=cfg.augment,
                           seed=cfg.seed, loss=str(loss), loss_text="", backend="torch",
                           diverged=diverged, reason="loss is NaN by step 3" if diverged else "")


CFG = TrainConfig(dataset="digits", model="surrogate", steps=5)


def test_parse_losses_separators():
    e = transfer.parse_losses("CE,-y*log(p)+0.1*(1-p)**2")
    assert [x.label for x in e] == ["CE", "-y*log(p)+0.1*(1-p)**2"]
    e = transfer.parse_losses(["cross_entropy;max(p, y) * -y * log(p)", "mine=-y * log(p + 0.01)"])
    assert [x.loss for x in e] == ["CE", "max(p, y) * -y * log(p)", "-y * log(p + 0.01)"]
    assert e[2].label == "mine"
    assert [x.label for x in transfer.parse_losses("all")] == list(CATALOGUE_ALL)


def test_same_config_except_loss_and_resume(tmp_path, monkeypatch):
    fake = FakeTrainer()
    monkeypatch.setattr(nlfs.train, "train", fake)
    entries = transfer.parse_losses("NGL;Focal")  # CE is added as the reference
    rows = transfer.run_transfer(entries, CFG, [0, 1, 2], tmp_path, log=lambda *a: None, plot=False)
    assert len(fake.calls) == 9 and len(rows) == 9
    by_seed = {}
    for _, cfg, _ in fake.calls:
        by_seed.setdefault(cfg.seed, set()).add(repr(dataclasses.replace(cfg, seed=0)))
    assert len(set().union(*by_seed.values())) == 1  # one config for every run, seed aside
    assert {c.seed for _, c, _ in fake.calls} == {0, 1, 2}
    assert {x for x, _, _ in fake.calls} == {"CE", "NGL", "Focal"}
    # a second invocation trains nothing; adding a seed trains only that seed
    transfer.run_transfer(entries, CFG, [0, 1, 2], tmp_path, log=lambda *a: None, plot=False)
    assert len(fake.calls) == 9
    transfer.run_transfer(entries, CFG, [0, 1, 2, 3], tmp_path, log=lambda *a: None, plot=False)
    assert len(fake.calls) == 12 and {c.seed for _, c, _ in fake.calls[9:]} == {3}
    rows = csv_rows(tmp_path / "transfer.csv")
    assert len(rows) == 12
    for col in ("loss", "seed", "model", "dataset", "augment", "test_acc", "val_acc", "status", "reason",
                "wall_time", "expression", "backend", "epochs"):
        assert col in rows[0]
    md = (tmp_path / "transfer.md").read_text()
    assert "| NGL | 4 | 0 | 81." in md and "p (Wilcoxon)" in md
    # another configuration in the same file is refused, not mixed in
    with pytest.raises(SystemExit):
        transfer.run_transfer(entries, dataclasses.replace(CFG, steps=6), [0], tmp_path,
                              log=lambda *a: None, plot=False)


def test_resume_only_rows_whose_whole_configuration_matches(tmp_path, monkeypatch):
    fake = FakeTrainer()
    monkeypatch.setattr(nlfs.train, "train", fake)
    run = lambda entries, cfg=CFG: transfer.run_transfer(entries, cfg, [0, 1], tmp_path,  # noqa: E731
                                                         log=lambda *a: None, plot=False)
    run(transfer.parse_losses("mine=-y * log(p + 0.01)"))
    assert len(fake.calls) == 4  # CE and mine, 2 seeds
    run(transfer.parse_losses("mine=-y * log(p + 0.01)"))
    assert len(fake.calls) == 4  # the same: nothing to train
    run(transfer.parse_losses("mine=-y * log(p + 0.02)"))  # a changed loss under the same label
    assert len(fake.calls) == 6 and {c[0] for c in fake.calls[4:]} == {"-y * log(p + 0.02)"}
    run([transfer.LossEntry("mine", "-y * log(p + a)", {"a": 0.02})])
    assert len(fake.calls) == 8
    run([transfer.LossEntry("mine", "-y * log(p + a)", {"a": 0.02})])
    assert len(fake.calls) == 8
    run([transfer.LossEntry("mine", "-y * log(p + a)", {"a": 0.03})])  # other constants
    assert len(fake.calls) == 10
    run([transfer.LossEntry("mine", "-y * log(p + a)", {"a": 0.03})], dataclasses.replace(CFG, backend="cpp"))
    assert len(fake.calls) == 14  # another backend: every row again
    rows = csv_rows(tmp_path / "transfer.csv")
    assert len(rows) == 4 and all(r["constants"] == '{"a": 0.03}' for r in rows if r["loss"] == "mine")


def test_failures_reported_not_dropped(tmp_path, monkeypatch):
    fake = FakeTrainer(fail={("NGL", 1): "diverged", ("Focal", 0): "raise"})
    monkeypatch.setattr(nlfs.train, "train", fake)
    entries = transfer.parse_losses("CE;NGL;Focal")
    transfer.run_transfer(entries, CFG, list(range(5)), tmp_path, log=lambda *a: None)
    rows = csv_rows(tmp_path / "transfer.csv")
    st = {(r["loss"], r["seed"]): r for r in rows}
    assert st[("NGL", "1")]["status"] == "diverged" and "NaN" in st[("NGL", "1")]["reason"]
    assert st[("NGL", "1")]["test_acc"] == ""
    assert st[("Focal", "0")]["status"] == "error" and "out of memory" in st[("Focal", "0")]["reason"]
    md = (tmp_path / "transfer.md").read_text()
    assert "| NGL | 4 | 1 |" in md and "| Focal | 4 | 1 |" in md
    assert "NGL seed 1: diverged" in md and "Focal seed 0: error" in md
    assert (tmp_path / "transfer.png").stat().st_size > 1000
    # failed pairs are finished: not retrained, except errors with retry_errors
    n = len(fake.calls)
    transfer.run_transfer(entries, CFG, list(range(5)), tmp_path, log=lambda *a: None, plot=False)
    assert len(fake.calls) == n
    fake.fail = {}
    transfer.run_transfer(entries, CFG, list(range(5)), tmp_path, retry_errors=True,
                          log=lambda *a: None, plot=False)
    assert [(c[0], c[1].seed) for c in fake.calls[n:]] == [("Focal", 0)]
    assert "| Focal | 5 | 0 |" in (tmp_path / "transfer.md").read_text()


def _tiny_run_db(path):
    db = RunDB(path / "run.db")
    base = dict(canonical="c", genotype=None, sign=1, stage=None, reason="", seed=0, dataset="digits",
                backend="torch", model="surrogate", wall_time=1.0, fingerprint=None, phenotype=None,
                result=None)
    db.record(dict(base, expression="-y * log(p)", constants={}, fitness=0.80, status="baseline", size=3))
    db.record(dict(base, expression="-y * log(p + c0)", constants={"c0": 0.05}, fitness=0.91,
                   status="ok", size=5))
    db.record(dict(base, expression="-y * log(p + c0)", constants={"c0": 0.05}, fitness=0.90,
                   status="ok", size=5))  # same expression and constants: skipped by top()
    db.record(dict(base, expression="-y * (1 - p) * log(p)", constants={}, fitness=0.88, status="ok",
                   size=7))
    db.record(dict(base, expression="p * y", constants={}, fitness=None, status="rejected:integrity",
                   size=3))
    db.record(dict(base, expression="exp(p)", constants={}, fitness=0.99, status="diverged", size=2))
    db.close()


def test_from_run(tmp_path, monkeypatch):
    run = tmp_path / "search1"
    run.mkdir()
    _tiny_run_db(run)
    got = transfer.losses_from_run(run, 3)
    assert [e.loss for e in got] == ["-y * log(p + c0)", "-y * (1 - p) * log(p)"]
    assert got[0].constants == {"c0": 0.05} and got[1].constants is None
    assert got[0].label.startswith("search1#")
    fake = FakeTrainer()
    monkeypatch.setattr(nlfs.train, "train", fake)
    out = tmp_path / "out"
    assert transfer.main(["--from-run", str(run), "--top", "1", "--seeds", "2", "--dataset", "digits",
                          "--steps", "3", "--out", str(out), "--no-plot"]) == 0
    # verifying a run's losses trains the regime's strongest published ones beside them (clean labels here)
    assert [(c[0], c[2]) for c in fake.calls] == [("CE", None), ("-y * log(p + c0)", {"c0": 0.05}),
                                                  ("LabelSmoothingCE", None), ("Poly1", None)] * 2
    rows = csv_rows(out / "transfer.csv")
    assert '"c0": 0.05' in rows[1]["constants"]
    with pytest.raises(FileNotFoundError):
        transfer.losses_from_run(tmp_path / "nope")


def test_from_run_hands_on_no_known_loss_in_disguise(tmp_path):
    # CE and Poly-1 written otherwise rank first in the search; the next tool gets the new losses only,
    # as the search's verdict and exports do
    run = tmp_path / "search2"
    run.mkdir()
    _tiny_run_db(run)
    db = RunDB(run / "run.db")
    base = dict(canonical="k", genotype=None, sign=1, stage=None, reason="", seed=0, dataset="digits",
                backend="torch", model="surrogate", wall_time=1.0, fingerprint=None, phenotype=None, result=None)
    db.record(dict(base, expression="-(y * log(p))", constants={}, fitness=0.95, status="ok", size=4))
    db.record(dict(base, expression="-y * log(p) + 2 * y * (1 - p)", constants={}, fitness=0.94, status="ok", size=9))
    db.close()
    got = transfer.losses_from_run(run, 1)
    assert [e.loss for e in got] == ["-y * log(p + c0)"]


def test_list_presets(capsys):
    assert transfer.main(["--list-presets"]) == 0
    text = capsys.readouterr().out
    for name in ("fashion-mnist-cpu", "fashion-mnist-resnet-cpu", "cifar10-wrn28-10-cutmix",
                 "cifar100-wrn28-10-autoaugment", "cifar10-effnetv2s-finetune"):
        assert name in text
    for p in transfer.PRESETS.values():
        transfer.build_config(p).resolved()  # every preset is a valid TrainConfig


def test_end_to_end_digits_real_trainer(tmp_path):
    out = tmp_path / "e2e"
    assert transfer.main(["--dataset", "digits", "--losses", "CE,NGL", "--seeds", "2", "--steps", "6",
                          "--val-size", "100", "--backend", "torch", "--out", str(out)]) == 0
    rows = csv_rows(out / "transfer.csv")
    assert sorted((r["loss"], r["seed"]) for r in rows) == [("CE", "0"), ("CE", "1"), ("NGL", "0"),
                                                            ("NGL", "1")]
    assert all(r["status"] == "ok" and 0 <= float(r["test_acc"]) <= 1 for r in rows)
    assert all(r["backend"] == "torch" and r["steps"] == "6" for r in rows)
    md = (out / "transfer.md").read_text()
    assert "| **CE** | 2 | 0 |" in md and "| NGL | 2 | 0 |" in md
    assert (out / "transfer.png").is_file()


class NanLoss(torch.nn.Module):
    def forward(self, logits, target):
        return logits.sum() * float("nan")


def test_real_nan_loss_is_reported(tmp_path):
    # the real trainer reports diverged=True for a NaN loss; the runner keeps and counts it
    entries = [transfer.LossEntry("bad", NanLoss())]
    rows = transfer.run_transfer(entries, dataclasses.replace(CFG, steps=3, val_size=100, backend="torch"),
                                 [0], tmp_path, log=lambda *a: None, plot=False)
    bad = next(r for r in rows if r["loss"] == "bad")
    assert bad["status"] == "diverged" and "NaN" in bad["reason"] and bad["test_acc"] is None
    assert next(r for r in rows if r["loss"] == "CE")["status"] == "ok"
    assert "| bad | 0 | 1 |" in (tmp_path / "transfer.md").read_text()


def test_machine_date_without_bench(monkeypatch):
    import sys

    from nlfs._io import machine_name, today

    monkeypatch.setitem(sys.modules, "bench._schema", None)  # import raises ImportError
    machine, date = machine_name(), today()
    assert "cores" in machine and len(date) == 10


def fake_grid_trainer(monkeypatch, best: dict, peak: dict | None = None):
    """Each loss's final validation accuracy falls with the distance (in log) of its lr from ``best[loss]``;
    its peak over epochs (``best_val_acc``) from ``peak[loss]`` where given. Returns the calls."""
    calls = []

    def fake(loss, cfg, constants=None):
        calls.append((loss, cfg.lr, cfg.seed, cfg.evaluate_test))
        acc = 0.8 - abs(math.log(cfg.lr / best[loss])) * 0.01 + 0.001 * cfg.seed
        top = 0.9 - abs(math.log(cfg.lr / (peak or best)[loss])) * 0.01
        return TrainResult(val_acc=acc, best_val_acc=top, test_acc=acc if cfg.evaluate_test else None,
                           final_train_loss=0.5, train_acc=acc, steps=10, epochs=1.0, wall_time=0.01,
                           device="cpu", dataset=cfg.dataset, model=cfg.model, augment=cfg.augment,
                           seed=cfg.seed, loss=str(loss), loss_text="", backend="torch", lr=cfg.lr)

    monkeypatch.setattr(nlfs.train, "train", fake)
    return calls


def test_learning_rate_grid_is_the_same_for_every_loss_and_reads_no_test(tmp_path, monkeypatch):
    calls = fake_grid_trainer(monkeypatch, {"CE": 0.1, "NGL": 0.4})  # each loss has its own best learning rate
    rows = transfer.run_transfer(transfer.parse_losses("NGL"), CFG, [0, 1, 2], tmp_path, log=lambda *a: None,
                                 plot=False, lr_grid=[0.05, 0.1, 0.2, 0.4], lr_seeds=[10, 11])
    grid_calls = [c for c in calls if c[2] in (10, 11)]
    # NGL's best, 0.4, is the grid's edge: 0.8 is tried too, and 0.4 is then interior
    assert sorted({(c[0], c[1]) for c in grid_calls}) == sorted(
        [("CE", x) for x in (0.05, 0.1, 0.2, 0.4)] + [("NGL", x) for x in (0.05, 0.1, 0.2, 0.4, 0.8)])
    assert len(grid_calls) == 2 * 9 and not any(c[3] for c in grid_calls)  # validation only
    final = [c for c in calls if c[2] in (0, 1, 2)]
    assert all(c[3] for c in final)  # the test split is read by the final runs, once each
    assert {(c[0], c[1]) for c in final} == {("CE", 0.1), ("NGL", 0.4)}
    assert {(r["loss"], r["lr"]) for r in rows} == {("CE", 0.1), ("NGL", 0.4)}
    text = (tmp_path / "transfer.md").read_text()
    assert "NGL 0.4 (0.05: " in text and "0.8: " in text and "on an edge" not in text
    n = len(calls)  # resumed: nothing trained again
    transfer.run_transfer(transfer.parse_losses("NGL"), CFG, [0, 1, 2], tmp_path, log=lambda *a: None,
                          plot=False, lr_grid=[0.05, 0.1, 0.2, 0.4], lr_seeds=[10, 11])
    assert len(calls) == n


def test_a_learning_rate_is_chosen_by_the_model_the_test_runs_test_not_the_peak(tmp_path, monkeypatch):
    """The final runs report the final model's test accuracy: the rate is the one whose final model
    validates best, where the peak over epochs would choose another."""
    fake_grid_trainer(monkeypatch, {"CE": 0.1}, peak={"CE": 0.2})
    rows = transfer.run_transfer([], CFG, [0], tmp_path, log=lambda *a: None, plot=False,
                                 lr_grid=[0.05, 0.1, 0.2, 0.4], lr_seeds=[10])
    assert [r["lr"] for r in rows] == [0.1]


def test_a_learning_rate_left_on_an_edge_after_widening_says_so(tmp_path, monkeypatch):
    """Widening stops at --lr-widen points; a rate still at an edge then is reported as on an edge. With
    --lr-widen 0 the grid is the one given."""
    calls = fake_grid_trainer(monkeypatch, {"CE": 10.0})  # better and better upwards
    transfer.run_transfer([], CFG, [0], tmp_path / "two", log=lambda *a: None, plot=False,
                          lr_grid=[0.05, 0.1], lr_seeds=[10], lr_widen=2)
    assert sorted(c[1] for c in calls if c[2] == 10) == [0.05, 0.1, 0.2, 0.4]
    assert re.search(r"CE 0\.4 \(0\.05: 75\.70, 0\.1: [\d.]+, 0\.2: [\d.]+, 0\.4: 77\.78; on an edge\)",
                     (tmp_path / "two" / "transfer.md").read_text())
    calls.clear()
    transfer.run_transfer([], CFG, [0], tmp_path / "none", log=lambda *a: None, plot=False,
                          lr_grid=[0.05, 0.1], lr_seeds=[10], lr_widen=0)
    assert sorted(c[1] for c in calls if c[2] == 10) == [0.05, 0.1]


def test_a_learning_rate_csv_from_before_the_final_model_rule_is_trained_again_or_read_by_the_peak(
        tmp_path, monkeypatch):
    """A learning-rate row without the final model's validation accuracy (written when the choice read
    the peak) cannot be scored by today's rule: it is trained again and stays in the file; with
    ``lr_by="peak"`` (the old rule) it is read as it was chosen, and nothing trains."""
    calls = fake_grid_trainer(monkeypatch, {"CE": 0.1})
    run = dict(log=lambda *a: None, plot=False, lr_grid=[0.05, 0.1, 0.2], lr_seeds=[10])
    transfer.run_transfer([], CFG, [0], tmp_path / "old", **run)
    path = tmp_path / "old" / "transfer_lr.csv"
    old = [{k: v for k, v in r.items() if k not in ("val_acc", "config_hash")} for r in csv_rows(path)]
    write_table(path, old, list(old[0]))
    (tmp_path / "peak").mkdir()
    write_table(tmp_path / "peak" / "transfer_lr.csv", old, list(old[0]))
    calls.clear()
    transfer.run_transfer([], CFG, [0], tmp_path / "peak", **run, lr_by="peak")
    assert [c for c in calls if c[2] == 10] == []  # the old rows decide, as they did
    assert "by mean peak validation accuracy over epochs" in (tmp_path / "peak" / "transfer.md").read_text()
    transfer.run_transfer([], CFG, [0], tmp_path / "old", **run)
    assert sorted(c[1] for c in calls if c[2] == 10) == [0.05, 0.1, 0.2]
    rows = csv_rows(path)
    assert len(rows) == 6 and sum(bool(r["val_acc"]) for r in rows) == 3  # the old rows kept beside the new


def test_a_learning_rate_csv_of_other_settings_stops_the_transfer_before_any_training(tmp_path, monkeypatch):
    calls = fake_grid_trainer(monkeypatch, {"CE": 0.1})
    run = dict(log=lambda *a: None, plot=False, lr_grid=[0.05, 0.1, 0.2], lr_seeds=[10])
    with pytest.raises(KeyboardInterrupt):  # killed during the grid: only the learning-rate CSV holds runs
        _kill_after(calls, 2, lambda: transfer.run_transfer([], CFG, [0], tmp_path, **run))
    assert len(csv_rows(tmp_path / "transfer_lr.csv")) == 2 and not (tmp_path / "transfer.csv").exists()
    calls.clear()
    with pytest.raises(SystemExit, match="learning-rate runs of another configuration"):
        transfer.run_transfer([], dataclasses.replace(CFG, steps=CFG.steps + 1), [0], tmp_path, **run)
    assert calls == []


def _kill_after(calls: list, n: int, run):
    """Run ``run`` with the trainer raising KeyboardInterrupt once ``calls`` holds ``n`` calls."""
    train = nlfs.train.train

    def killing(*a, **kw):
        if len(calls) >= n:
            raise KeyboardInterrupt
        return train(*a, **kw)

    nlfs.train.train = killing
    try:
        return run()
    finally:
        nlfs.train.train = train


def test_the_report_lists_the_rates_of_the_grid_chosen_from_and_a_one_value_grid_is_kept(tmp_path, monkeypatch):
    calls = fake_grid_trainer(monkeypatch, {"CE": 10.0})  # better and better upwards
    run = dict(log=lambda *a: None, plot=False, lr_seeds=[10])
    transfer.run_transfer([], CFG, [0], tmp_path, **run, lr_grid=[0.05, 0.1], lr_widen=2)
    transfer.run_transfer([], CFG, [0], tmp_path / "one", **run, lr_grid=[0.1])
    assert [c[1] for c in calls if c[2] == 10][-1:] == [0.1] and len([c for c in calls if c[2] == 10]) == 5
    assert "CE 0.1 (0.1: " in (tmp_path / "one" / "transfer.md").read_text()
    with pytest.raises(SystemExit):  # the grid is part of the configuration: another one needs another --out
        transfer.run_transfer([], CFG, [0], tmp_path, **run, lr_grid=[0.05, 0.1, 0.2])
    transfer.run_transfer([], CFG, [0], tmp_path, **run, lr_grid=[0.05, 0.1], lr_widen=0)
    text = (tmp_path / "transfer.md").read_text()
    assert re.search(r"CE 0\.1 \(0\.05: [\d.]+, 0\.1: [\d.]+; on an edge\)", text)  # not 0.2 and 0.4


def test_two_unnamed_modules_of_one_class_keep_their_own_learning_rates(tmp_path, monkeypatch):
    """Modules whose repr hides their settings have one run key; their learning-rate runs stay apart by label."""
    calls = []

    def fake(loss, cfg, constants=None):
        calls.append(cfg.lr)
        best = 0.2 if getattr(loss, "label_smoothing", 0.0) else 0.1
        acc = 0.8 - abs(math.log(cfg.lr / best)) * 0.01
        return TrainResult(val_acc=acc, best_val_acc=acc, test_acc=acc if cfg.evaluate_test else None,
                           final_train_loss=0.5, train_acc=acc, steps=10, epochs=1.0, wall_time=0.01,
                           device="cpu", dataset=cfg.dataset, model=cfg.model, augment=cfg.augment,
                           seed=cfg.seed, loss=str(loss), loss_text="", backend="torch", lr=cfg.lr)

    monkeypatch.setattr(nlfs.train, "train", fake)
    entries = [transfer.LossEntry("plain", torch.nn.CrossEntropyLoss()),
               transfer.LossEntry("smoothed", torch.nn.CrossEntropyLoss(label_smoothing=0.3))]
    rows = transfer.run_transfer(entries, CFG, [0], tmp_path, log=lambda *a: None, plot=False,
                                 lr_grid=[0.05, 0.1, 0.2, 0.4], lr_seeds=[10])
    assert {r["loss"]: r["lr"] for r in rows if r["loss"] != "CE"} == {"plain": 0.1, "smoothed": 0.2}


def test_tuned_baselines_meet_the_found_loss_at_their_best_constant_each_with_its_own_rate(tmp_path, monkeypatch):
    """--tune-baselines: GCE's q and label smoothing's a each from a grid widened past an edge, every value
    with its own learning rate; the final runs train the baseline under its name at the chosen value, and
    the runs that chose it are not trained again, then or on a resume."""
    calls = []
    best_q, best_a = 0.4, 0.1  # GCE's best is below its grid (0.5, 0.7, 1): the grid widens downwards

    def fake(loss, cfg, constants=None):
        calls.append((loss, dict(constants or {}), cfg.lr, cfg.seed, cfg.evaluate_test))
        c = dict(constants or {})
        acc = 0.8 - abs(math.log(cfg.lr / 0.1)) * 0.01
        if loss == "GCE":
            acc -= abs(math.log(c.get("q", 0.7) / best_q)) * 0.02
        if loss == "LabelSmoothingCE":
            acc -= abs(math.log(c.get("a", 0.1) / best_a)) * 0.02
        return TrainResult(val_acc=acc, best_val_acc=acc, test_acc=acc if cfg.evaluate_test else None,
                           final_train_loss=0.5, train_acc=acc, steps=10, epochs=1.0, wall_time=0.01,
                           device="cpu", dataset=cfg.dataset, model=cfg.model, augment=cfg.augment,
                           seed=cfg.seed, loss=str(loss), loss_text="", backend="torch", lr=cfg.lr)

    monkeypatch.setattr(nlfs.train, "train", fake)
    entries = [transfer.LossEntry(b, b, baseline=True) for b in ("GCE", "LabelSmoothingCE", "SCE")]
    run = dict(log=lambda *a: None, plot=False, lr_grid=[0.05, 0.1, 0.2], lr_seeds=[10], tune_baselines=True)
    rows = transfer.run_transfer(entries, CFG, [0, 1], tmp_path, **run)
    tried_q = sorted({c[1]["q"] for c in calls if c[0] == "GCE"})
    assert tried_q == [0.25, 0.5, 0.7, 1.0] and not any(c[4] for c in calls if c[3] == 10)
    assert sorted({c[1]["a"] for c in calls if c[0] == "LabelSmoothingCE"}) == [0.05, 0.1, 0.2]
    assert {c[1].get("q") for c in calls if c[0] == "GCE" and c[3] == 10 and c[2] == 0.1} == {0.25, 0.5, 0.7, 1.0}
    final = {(r["loss"], json.dumps(r["constants"]) if r["constants"] else "", r["lr"]) for r in rows}
    assert final == {("CE", "", 0.1), ("GCE", json.dumps({"q": 0.5}), 0.1),
                     ("LabelSmoothingCE", json.dumps({"a": 0.1}), 0.1), ("SCE", "", 0.1)}
    gce_grid = [c for c in calls if c[0] == "GCE" and c[3] == 10]
    assert len(gce_grid) == len({(c[1]["q"], c[2]) for c in gce_grid})  # each (q, lr) trained once
    text = (tmp_path / "transfer.md").read_text()
    assert re.search(r"GCE q 0\.5 \(0\.25: [\d.]+, 0\.5: [\d.]+, 0\.7: [\d.]+, 1: [\d.]+\)", text)
    assert "LabelSmoothingCE a 0.1 (0.05: " in text and "SCE" not in text.split("tuned like")[1].split(".\n")[0]
    assert "- GCE: `y * (1 - exp(q * log(p))) / q` (q 0.5)" in text
    n = len(calls)
    transfer.run_transfer(entries, CFG, [0, 1], tmp_path, **run)
    assert len(calls) == n  # resumed: nothing trained again
    assert "- GCE: `y * (1 - exp(q * log(p))) / q` (q 0.5)" in (tmp_path / "transfer.md").read_text()  # read back
    untuned = transfer.run_transfer(entries, CFG, [0], tmp_path / "published", **{**run, "tune_baselines": False})
    assert {r["constants"] for r in untuned} == {""}
    assert ("Baselines at their published constants (`--tune-baselines` tunes GCE's q, LabelSmoothingCE's a"
            in (tmp_path / "published" / "transfer.md").read_text())


def test_cli_tune_baselines_reaches_the_runs(tmp_path, monkeypatch):
    calls = fake_grid_trainer(monkeypatch, {"CE": 0.1, "GCE": 0.1, "NGL": 0.1})
    assert transfer.main(["--losses", "NGL", "--baselines", "GCE", "--dataset", "digits", "--seeds", "1",
                          "--steps", "3", "--lr-grid", "0.05,0.1,0.2", "--lr-seeds", "9", "--tune-baselines",
                          "--no-plot", "--out", str(tmp_path)]) == 0
    assert {c[0] for c in calls} == {"CE", "GCE", "NGL"}
    assert "Baselines' constants tuned like the learning rate" in (tmp_path / "transfer.md").read_text()
    constants = {r["loss"]: r["constants"] for r in csv_rows(tmp_path / "transfer.csv")}
    assert constants["GCE"] == '{"q": 0.7}'  # q ties here: the grid's middle


def test_tune_baselines_without_a_learning_rate_grid_stops_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit):
        transfer.main(["--losses", "CE,GCE", "--tune-baselines", "--out", str(tmp_path / "x")])
    assert "--tune-baselines needs --lr-grid" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_grid_choice_widens_past_an_edge_until_the_best_is_interior():
    grid = [0.05, 0.1, 0.2]
    assert transfer.grid_choice({}, grid) == (None, [0.05, 0.1, 0.2])
    assert transfer.grid_choice({0.05: 0.7, 0.1: 0.8, 0.2: 0.6}, grid) == (0.1, [])  # interior: done
    assert transfer.grid_choice({0.05: 0.8, 0.1: 0.7, 0.2: 0.6}, grid) == (None, [0.025])  # lower edge: half of it
    assert transfer.grid_choice({0.025: 0.79, 0.05: 0.8, 0.1: 0.7, 0.2: 0.6}, grid) == (0.05, [])
    assert transfer.grid_choice({0.05: 0.6, 0.1: 0.7, 0.2: 0.8}, grid) == (None, [0.4])  # upper edge: twice it
    rising = {0.05: 0.6, 0.1: 0.7, 0.2: 0.8, 0.4: 0.85, 0.8: 0.9}
    assert transfer.grid_choice(rising, grid, max_added=2) == (0.8, [])  # capped: left on its edge
    assert transfer.on_edge(0.8, [0.05, 0.1, 0.2, 0.4, 0.8]) and not transfer.on_edge(0.1, grid)
    assert transfer.grid_choice(rising, grid, limit=1.0) == (0.8, [])  # a bounded constant: 1.6 would pass 1
    assert transfer.grid_choice({0.05: 0.7, 0.1: 0.7, 0.2: 0.7}, grid) == (0.1, [])  # a tie: the middle
    assert transfer.grid_choice({0.05: 0.7, 0.1: 0.7, 0.2: 0.7}, grid, prefer=0.2) == (None, [0.4])  # or nearest


def test_losses_file_registers_finalists_with_constants_and_scale(tmp_path):
    """A campaign's finalists are named in a JSON file (found_losses.json's format) before any is shipped:
    transfer trains each as that file defines it (constants and gradient scale), keyed by all of it."""
    import nlfs.losses

    path = tmp_path / "finalists.json"
    path.write_text(json.dumps([{"name": "test_finalist_a", "expression": "-y * log(p) * c0",
                                 "constants": {"c0": 1.0}, "scale": 0.5}]))
    out = tmp_path / "out"
    args = ["--losses-file", str(path), "--losses", "CE,test_finalist_a", "--seeds", "1", "--dataset", "digits",
            "--steps", "4", "--train-size", "200", "--val-size", "100", "--backend", "torch", "--out", str(out),
            "--no-plot"]
    try:
        assert transfer.main(args) == 0
        rows = {r["loss"]: r for r in csv_rows(out / "transfer.csv")}
        assert set(rows) == {"CE", "test_finalist_a"} and rows["test_finalist_a"]["status"] == "ok"
        assert nlfs.losses.get("test_finalist_a").scale == 0.5
        # the same file with another scale is another loss: trained again, not resumed
        key = rows["test_finalist_a"]["run_key"]
        path.write_text(json.dumps([{"name": "test_finalist_a", "expression": "-y * log(p) * c0",
                                     "constants": {"c0": 1.0}, "scale": 2.0}]))
        assert transfer.main(args) == 0
        assert {r["loss"]: r for r in csv_rows(out / "transfer.csv")}["test_finalist_a"]["run_key"] != key
    finally:
        nlfs.losses._CATALOGUE.pop("test_finalist_a", None)
    bad = tmp_path / "bad.json"
    bad.write_text("[{")
    assert transfer.main(["--losses-file", str(bad), "--losses", "CE", "--out", str(out)]) == 2


def test_workers_train_what_one_process_trains(tmp_path):
    """--workers 2 gives the rows one process gives (lr grid and final runs, same accuracies), and a loss
    registered only in this process (--losses-file) reaches the spawned workers as what it is."""
    import nlfs.losses

    path = tmp_path / "finalists.json"
    path.write_text(json.dumps([{"name": "test_finalist_w", "expression": "-y * log(p) * c0",
                                 "constants": {"c0": 1.5}, "scale": 0.5}]))
    common = ["--losses-file", str(path), "--losses", "CE,test_finalist_w", "--seeds", "2", "--dataset", "digits",
              "--steps", "4", "--train-size", "200", "--val-size", "100", "--backend", "torch", "--threads", "1",
              "--lr-grid", "0.05,0.2", "--lr-widen", "0", "--lr-seeds", "8,9", "--no-plot"]
    try:
        assert transfer.main([*common, "--out", str(tmp_path / "one")]) == 0
        assert transfer.main([*common, "--out", str(tmp_path / "two"), "--workers", "2"]) == 0
    finally:
        nlfs.losses._CATALOGUE.pop("test_finalist_w", None)

    def table(name, cols):
        return sorted(tuple(r[c] for c in cols) for r in csv_rows(tmp_path / name / "transfer.csv"))

    def lr_table(name):
        return sorted((r["loss"], r["lr"], r["seed"], r["best_val_acc"], r["run_key"])
                      for r in csv_rows(tmp_path / name / "transfer_lr.csv"))

    cols = ["loss", "seed", "lr", "status", "test_acc", "best_val_acc", "run_key"]
    assert table("two", cols) == table("one", cols) and len(table("one", cols)) == 4
    assert lr_table("two") == lr_table("one") and len(lr_table("one")) == 8
    with pytest.raises(SystemExit, match="2"):
        transfer.main(["--losses", "CE", "--workers", "0", "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux /proc")
def test_sigterm_mid_training_leaves_no_worker_and_no_leaked_semaphore(tmp_path):
    """--workers 2 stopped by SIGTERM: the workers end with the driver and nothing is reported leaked."""
    import signal
    import subprocess
    import sys
    import time

    from tests.processes import alive, children

    code = ("import sys\nfrom nlfs import transfer\n"
            "cfg = transfer.build_config(dict(dataset='digits', model='surrogate', steps=100000, train_size=400, "
            "val_size=200, backend='torch'))\n"
            "transfer.run_transfer(transfer.parse_losses('CE;NGL'), cfg, [0], sys.argv[1], log=print, plot=False, "
            "workers=2)\n")
    driver = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    workers: set = set()
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(workers) < 2:
            time.sleep(0.5)
            workers = {p for p in children(driver.pid) if alive(p)}
            workers = {p for p in workers if "spawn_main" in open(f"/proc/{p}/cmdline").read()}
        assert len(workers) == 2, "the workers never started"
        time.sleep(3)  # training now
        driver.send_signal(signal.SIGTERM)
        _, err = driver.communicate(timeout=60)  # the pipes close once every process holding them is gone
    finally:
        if driver.poll() is None:
            driver.kill()
        for p in workers:
            if alive(p):
                os.kill(p, signal.SIGKILL)
    assert not any(alive(p) for p in workers)
    assert "leaked" not in err and "Traceback" not in err
def test_from_run_trains_candidates_with_their_scale(tmp_path, monkeypatch):
    """--from-run used to train the search's candidates at scale 1: they carry the scale they were
    found with (and their name <run>#<id>), and the CSV records it with the label noise."""
    run = tmp_path / "search2"
    run.mkdir()
    db = RunDB(run / "run.db")
    db.record(dict(canonical="c", sign=1, seed=0, dataset="digits", expression="-y * log(p) * 0.5", constants={},
                   fitness=0.9, status="ok", size=5, scale=4.0))
    db.close()
    got = transfer.losses_from_run(run, 1)
    assert got[0].label == "search2#1" and got[0].scale == 4.0
    fake = FakeTrainer()
    monkeypatch.setattr(nlfs.train, "train", fake)
    out = tmp_path / "out"
    assert transfer.main(["--from-run", str(run), "--seeds", "1", "--dataset", "digits", "--steps", "3",
                          "--label-noise", "0.2", "--out", str(out), "--no-plot"]) == 0
    assert [getattr(c[0], "scale", 1.0) for c in fake.calls] == [1.0, 4.0, 1.0, 1.0, 1.0]
    assert [c[0] for c in fake.calls][2:] == ["GCE", "SCE", "NCEandRCE"]  # under label noise, the noisy regime's
    rows = {r["loss"]: r for r in csv_rows(out / "transfer.csv")}
    assert rows["search2#1"]["scale"] == "4.0" and rows["CE"]["label_noise"] == "0.2"
    md = (out / "transfer.md").read_text()
    assert "label noise 0.2" in md and "(scale 4)" in md


def test_losses_file_takes_what_every_tool_writes(tmp_path, monkeypatch, capsys):
    """--losses-file tuned.json / elimination.json / finalists.json trains those losses (their names,
    constants, scales); a file of another kind is one line and exit 2, not a KeyError."""
    import nlfs.losses

    run = tmp_path / "myrun"
    run.mkdir()
    (run / "elimination.json").write_text(json.dumps({"survivors": [
        {"label": "myrun#4", "expression": "-y * log(p) * c0", "constants": {"c0": 1.5}, "scale": 0.25}]}))
    (run / "tuned.json").write_text(json.dumps([
        {"id": 4, "tuned_name": "myrun#4-tuned", "expression": "-y * log(p) * c0", "best_constants": {"c0": 1.7},
         "initial_constants": {"c0": 1.5}, "scale": 0.3}]))
    fake = FakeTrainer()
    monkeypatch.setattr(nlfs.train, "train", fake)
    try:
        for name, label in (("elimination.json", "myrun#4"), ("tuned.json", "myrun#4-tuned")):
            out = tmp_path / name
            assert transfer.main(["--losses-file", str(run / name), "--seeds", "1", "--dataset", "digits",
                                  "--steps", "3", "--out", str(out), "--no-plot"]) == 0
            assert sorted(r["loss"] for r in csv_rows(out / "transfer.csv")) == sorted(["CE", label])
        assert nlfs.losses.get("myrun#4-tuned").scale == 0.3
        (run / "rounds.json").write_text(json.dumps({"rounds": [1, 2]}))
        assert transfer.main(["--losses-file", str(run / "rounds.json"), "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert "is not a list of losses" in err and "Traceback" not in err
    finally:
        for name in ("myrun#4", "myrun#4-tuned"):
            nlfs.losses._CATALOGUE.pop(nlfs.losses._key(name), None)


def test_split_per_seed_gives_each_seed_its_own_subset_and_noise(tmp_path, monkeypatch):
    fake = FakeTrainer()
    monkeypatch.setattr(nlfs.train, "train", fake)
    noisy = dataclasses.replace(CFG, train_size=300, label_noise=0.4)
    entries = transfer.parse_losses("NGL")

    def run(out, per_seed):
        return transfer.run_transfer(entries, noisy, [0, 1], tmp_path / out, log=lambda *a: None, plot=False,
                                     split_per_seed=per_seed)

    run("fixed", False)
    fixed = {(loss, c.seed): drawn_split(c) for loss, c, _ in fake.calls}
    assert fixed[("CE", 0)] == fixed[("CE", 1)] == fixed[("NGL", 1)]  # one subset and one noise for all seeds
    assert len(fixed[("CE", 0)][0]) == 300 and fixed[("CE", 0)][1]  # labels were flipped
    n = len(fake.calls)
    run("per", True)
    per = {(loss, c.seed): drawn_split(c) for loss, c, _ in fake.calls[n:]}
    (subset0, flipped0), (subset1, flipped1) = per[("CE", 0)], per[("CE", 1)]
    assert subset0 != subset1 and flipped0 != flipped1  # each seed its own training subset and noise
    assert per[("NGL", 0)] == per[("CE", 0)] and per[("NGL", 1)] == per[("CE", 1)]  # every loss shares a seed's
    assert {(r["seed"], r["split_seed"]) for r in csv_rows(tmp_path / "per" / "transfer.csv")} == {
        ("0", "0"), ("1", "1")}
    assert {r["split_seed"] for r in csv_rows(tmp_path / "fixed" / "transfer.csv")} == {"0"}
    md = (tmp_path / "per" / "transfer.md").read_text()
    assert "split_seed = seed" in md and "each seed its own validation split, training subset and label noise" in md
    assert "split_seed = seed" not in (tmp_path / "fixed" / "transfer.md").read_text()
    n = len(fake.calls)
    run("per", True)
    run("fixed", False)
    assert len(fake.calls) == n  # both resume: nothing trained again
    with pytest.raises(SystemExit, match="another configuration"):  # never mixed into a fixed split's CSV
        run("fixed", True)


def test_cli_split_seed_takes_a_number_or_per_seed(tmp_path, monkeypatch, capsys):
    fake = FakeTrainer()
    monkeypatch.setattr(nlfs.train, "train", fake)
    args = ["--losses", "NGL", "--dataset", "digits", "--steps", "5", "--seeds", "2", "--no-plot"]
    assert transfer.main([*args, "--split-seed", "per-seed", "--out", str(tmp_path / "per")]) == 0
    assert [c.split_seed for _, c, _ in fake.calls] == [c.seed for _, c, _ in fake.calls] and len(fake.calls) == 4
    assert transfer.main([*args, "--split-seed", "3", "--out", str(tmp_path / "three")]) == 0
    assert {r["split_seed"] for r in csv_rows(tmp_path / "three" / "transfer.csv")} == {"3"}
    capsys.readouterr()
    with pytest.raises(SystemExit) as err:
        transfer.main([*args, "--split-seed", "each", "--out", str(tmp_path / "bad")])
    assert err.value.code == 2 and "expected an integer or per-seed, got 'each'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def _gains_trainer(gains: dict, fail=None):
    """A FakeTrainer whose test accuracy is 0.8 + ``gains[loss]`` plus a small per-seed wobble."""

    class Trainer(FakeTrainer):
        def __call__(self, loss, cfg, constants=None):
            result = super().__call__(loss, cfg, constants)
            acc = 0.8 + gains[loss] + 0.003 * cfg.seed + 0.001 * (cfg.seed % 3) * (loss != "CE")
            if result.diverged:
                return result
            return dataclasses.replace(result, test_acc=acc, val_acc=acc, best_val_acc=acc)

    return Trainer(fail)


def _against(md: str) -> dict:
    """The rows of transfer.md's "Against the strongest baseline" table, by loss."""
    section = md.split("## Against the strongest baseline", 1)[1].split("## Setup", 1)[0]
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    return {cells[0].strip("| "): [c.strip("| ") for c in cells] for cells in rows[1:]}


SMALL, BIG = "-y * log(p) + 0.1 * p", "-y * log(p) + 0.2 * p"


def test_every_contender_is_compared_with_the_strongest_baseline(tmp_path, monkeypatch):
    """Beating CE is no claim when label smoothing beats CE too: each contender against the strongest
    baseline on its seeds, Holm-corrected; the summary says which beats it."""
    gains = {"CE": 0.0, "LabelSmoothingCE": 0.02, "Poly1": 0.005, SMALL: 0.01, BIG: 0.03}
    monkeypatch.setattr(nlfs.train, "train", _gains_trainer(gains))
    out = tmp_path / "out"
    assert transfer.main(["--losses", f"small={SMALL};big={BIG}", "--baselines", "regime", "--seeds", "6",
                          "--dataset", "digits", "--steps", "3", "--out", str(out), "--no-plot"]) == 0
    md = (out / "transfer.md").read_text()
    rows = _against(md)
    assert rows["small"][1:4] == ["LabelSmoothingCE", "0,1,2,3,4,5", "-1.00"] and rows["small"][-1] == "no"
    assert rows["big"][1:4] == ["LabelSmoothingCE", "0,1,2,3,4,5", "+1.00"] and rows["big"][-1] == "**yes**"
    assert "Against the strongest baseline on each loss's seeds (Holm over 2): big beats it." in md
    assert set(rows) == {"small", "big"}  # the baselines are compared against, never contenders


def test_a_published_loss_under_another_label_or_an_expression_baseline_is_a_baseline(tmp_path, monkeypatch):
    gains = {"CE": 0.0, "LabelSmoothingCE": 0.02, "Poly1": 0.0, "y * (1 - p)": 0.04, SMALL: 0.01}
    monkeypatch.setattr(nlfs.train, "train", _gains_trainer(gains))
    out = tmp_path / "out"
    assert transfer.main(["--losses", f"LS=LabelSmoothingCE;found={SMALL}", "--baselines", "Poly1,y * (1 - p)",
                          "--seeds", "4", "--dataset", "digits", "--steps", "3", "--out", str(out), "--no-plot"]) == 0
    rows = _against((out / "transfer.md").read_text())
    assert set(rows) == {"found"} and rows["found"][1] == "y * (1 - p)" and rows["found"][-1] == "no"


def test_the_strongest_baseline_is_chosen_on_the_contenders_own_seeds(tmp_path, monkeypatch):
    """found diverged on seeds 0-2; over all six seeds label smoothing has the higher mean, over 3-5 (the
    seeds found finished) Poly1 does: Poly1 is the one to beat."""
    gains = {"CE": 0.0, "LabelSmoothingCE": 0.02, "Poly1": 0.015, SMALL: 0.018}
    late = {0: -0.08, 1: -0.08, 2: -0.08, 3: 0.05, 4: 0.05, 5: 0.05}

    class Trainer(type(_gains_trainer(gains))):
        def __call__(self, loss, cfg, constants=None):
            result = super().__call__(loss, cfg, constants)
            bump = late.get(cfg.seed, 0.0) if loss == "Poly1" else 0.0
            return result if result.diverged else dataclasses.replace(result, test_acc=result.test_acc + bump)

    monkeypatch.setattr(nlfs.train, "train", Trainer({(SMALL, s): "diverged" for s in (0, 1, 2)}))
    out = tmp_path / "out"
    assert transfer.main(["--losses", f"found={SMALL}", "--baselines", "regime", "--seeds", "6", "--dataset",
                          "digits", "--steps", "3", "--out", str(out), "--no-plot"]) == 0
    rows = _against((out / "transfer.md").read_text())
    assert rows["found"][1:3] == ["Poly1", "3,4,5"] and rows["found"][3].startswith("-")


def test_a_baseline_missing_a_seed_keeps_a_loss_from_beating_the_field(tmp_path, monkeypatch):
    gains = {"CE": 0.0, "LabelSmoothingCE": 0.05, "Poly1": 0.0, BIG: 0.03}
    fail = {("LabelSmoothingCE", 2): "raise"}
    monkeypatch.setattr(nlfs.train, "train", _gains_trainer(gains, fail))
    out = tmp_path / "out"
    assert transfer.main(["--losses", f"big={BIG}", "--baselines", "regime", "--seeds", "6", "--dataset", "digits",
                          "--steps", "3", "--out", str(out), "--no-plot"]) == 0
    md = (out / "transfer.md").read_text()
    rows = _against(md)
    assert rows["big"][1] == "Poly1" and rows["big"][-1] == "no"  # ahead of Poly1, but LS is missing seed 2
    assert "Not finished on every seed of a loss above (so no loss beats the field until they are): " \
           "LabelSmoothingCE." in md


def test_without_the_regimes_baselines_a_win_is_not_a_claim_against_the_field(tmp_path, monkeypatch):
    gains = {"CE": 0.0, BIG: 0.03}
    monkeypatch.setattr(nlfs.train, "train", _gains_trainer(gains))
    out = tmp_path / "out"
    assert transfer.main(["--losses", f"big={BIG}", "--baselines", "none", "--label-noise", "0.4", "--seeds", "5",
                          "--dataset", "digits", "--steps", "3", "--out", str(out), "--no-plot"]) == 0
    md = (out / "transfer.md").read_text()
    assert _against(md)["big"][-1] == "**yes**"
    assert "the regime's GCE, SCE, NCEandRCE absent: not a claim against the field" in md
    assert "The regime's strongest known losses GCE, SCE, NCEandRCE did not run here" in md


def test_baselines_default_to_the_regimes_when_verifying_a_run_and_are_checked():
    assert transfer.baselines_of(None, verifying=True, label_noise=0.0) == ["LabelSmoothingCE", "Poly1"]
    assert transfer.baselines_of(None, verifying=True, label_noise=0.4) == ["GCE", "SCE", "NCEandRCE"]
    assert transfer.baselines_of(None, verifying=False, label_noise=0.4) == []
    assert transfer.baselines_of("regime", verifying=False, label_noise=0.0) == ["LabelSmoothingCE", "Poly1"]
    assert transfer.baselines_of("none", verifying=True, label_noise=0.0) == []
    assert transfer.baselines_of("", verifying=True, label_noise=0.0) == []
    assert transfer.baselines_of("GCE,y * (1 - p)", verifying=True, label_noise=0.0) == ["GCE", "y * (1 - p)"]
    with pytest.raises(ValueError, match="--baselines: 'GCEE': unknown loss 'GCEE'"):
        transfer.baselines_of("GCEE", verifying=True, label_noise=0.0)


def test_a_bad_baseline_is_one_line_before_any_training(tmp_path, capsys):
    assert transfer.main(["--losses", "CE", "--baselines", "GCEE", "--seeds", "1", "--dataset", "digits",
                          "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "--baselines: 'GCEE': unknown loss 'GCEE'" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_baseline_that_raised_on_every_seed_keeps_a_claim_open(tmp_path, monkeypatch):
    gains = {"CE": 0.0, "LabelSmoothingCE": 0.05, "Poly1": 0.0, BIG: 0.03}
    fail = {("LabelSmoothingCE", s): "raise" for s in range(5)}  # a worker error, not the loss's doing
    monkeypatch.setattr(nlfs.train, "train", _gains_trainer(gains, fail))
    out = tmp_path / "out"
    assert transfer.main(["--losses", f"big={BIG}", "--baselines", "regime", "--seeds", "5", "--dataset", "digits",
                          "--steps", "3", "--out", str(out), "--no-plot"]) == 0
    rows = _against((out / "transfer.md").read_text())
    assert rows["big"][1] == "Poly1" and rows["big"][-1] == "no"
