"""``--pack K`` in nlfs.transfer and nlfs.eliminate: the losses of one seed (and learning rate) train as
one packed network, every row as unpacked (to float tolerance), and a run stopped between packs
resumes without training a finished pair again."""

import json
import sqlite3

import pytest

import nlfs.train
from nlfs import eliminate as elim
from nlfs import transfer
from nlfs.search import RunDB, SearchConfig
from nlfs.train import TrainConfig
from tests.runs import csv_rows

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VAL = 100  # validation images: float-level differences of the packed kernels may flip one or two
# 20 steps at lr 0.3: CE and Focal reach 60-75 % on digits (shorter, nothing trains; longer, the
# float-level differences of the packed kernels grow chaotically on this tiny task)
STEPS, LR = 20, 0.3
CFG = TrainConfig(dataset="digits", model="surrogate", steps=STEPS, lr=LR, train_size=300, val_size=VAL,
                  backend="torch", threads=1)
TRAIN_GRID, TRAIN = nlfs.train.train_grid, nlfs.train.train


class Trainings:
    """Every training the tools ran in this process: packs (``nlfs.train.train_grid``, which the worker
    calls for a ``{"pack": [...]}`` job) and single trainings (``nlfs.train.train``); ``stop_at``: the
    ``stop_at``-th pack is stopped by a KeyboardInterrupt before it trains (a killed run)."""

    def __init__(self, monkeypatch, stop_at=None):
        self.packs, self.singles, self.stop_at = [], [], stop_at

        def train_grid(losses, cfg, seeds=(0,), **kw):
            if self.stop_at is not None and len(self.packs) + 1 == self.stop_at:
                raise KeyboardInterrupt
            self.packs.append([(_name(loss), seed, cfg.lr, cfg.evaluate_test) for loss in losses for seed in seeds])
            return TRAIN_GRID(losses, cfg, seeds, **kw)

        def train(loss, cfg, **kw):
            self.singles.append((_name(loss), cfg.seed, cfg.lr, cfg.evaluate_test))
            return TRAIN(loss, cfg, **kw)

        monkeypatch.setattr(nlfs.train, "train_grid", train_grid)
        monkeypatch.setattr(nlfs.train, "train", train)

    def trained(self) -> list[tuple]:
        return [m for p in self.packs for m in p] + self.singles


def _name(loss) -> str:
    return str(getattr(loss, "expr", loss))


def _close(a, b, tolerance) -> bool:
    return (a in (None, "")) == (b in (None, "")) and (a in (None, "") or abs(float(a) - float(b)) <= tolerance)


def assert_same_rows(packed: list[dict], alone: list[dict], keys: list[str], values: list[str], tolerance):
    def index(rows):
        return {tuple(r[k] for k in keys): r for r in rows}

    packed, alone = index(packed), index(alone)
    assert packed.keys() == alone.keys()
    for key, row in alone.items():
        assert packed[key]["status"] == row["status"] == "ok", key
        for v in values:
            assert _close(packed[key][v], row[v], tolerance), (key, v, packed[key][v], row[v])


def test_transfer_packs_one_seed_and_learning_rate_and_gives_the_rows_of_one_at_a_time(tmp_path, monkeypatch):
    # lr 1e-5 learns nothing: every loss chooses LR, so the final runs of one seed share a pack
    common = ["--losses", "CE,NGL,Focal", "--seeds", "2", "--dataset", "digits", "--steps", str(STEPS), "--train-size",
              "300", "--val-size", str(VAL), "--backend", "torch", "--threads", "1", "--lr-grid", f"{LR},1e-5",
              "--lr-widen", "0", "--lr-seeds", "1", "--no-plot"]
    alone = Trainings(monkeypatch)
    assert transfer.main([*common, "--out", str(tmp_path / "one")]) == 0
    assert alone.packs == [] and len(alone.singles) == 3 * 2 + 3 * 2
    packed = Trainings(monkeypatch)
    assert transfer.main([*common, "--out", str(tmp_path / "packed"), "--pack", "3"]) == 0
    assert packed.singles == []
    # the learning-rate grid seed by seed, then lr by lr; the final runs seed by seed: every pack full
    assert [{(lr, test) for _, _, lr, test in p} for p in packed.packs] == [
        {(1e-5, False)}, {(LR, False)}, {(LR, True)}, {(LR, True)}]
    assert [sorted(loss for loss, *_ in p) for p in packed.packs] == [sorted(["CE", "NGL", "Focal"])] * 4
    assert sorted(packed.trained()) == sorted(alone.trained())
    assert_same_rows(csv_rows(tmp_path / "packed" / "transfer_lr.csv"), csv_rows(tmp_path / "one" / "transfer_lr.csv"),
                     ["loss", "lr", "seed", "run_key"], ["val_acc", "best_val_acc"], 2 / VAL)
    final = csv_rows(tmp_path / "one" / "transfer.csv")
    assert {float(r["lr"]) for r in final} == {LR} and len(final) == 6
    assert_same_rows(csv_rows(tmp_path / "packed" / "transfer.csv"), final,
                     ["loss", "seed", "lr", "run_key", "config_hash", "steps"], ["best_val_acc", "val_acc"], 2 / VAL)
    assert_same_rows(csv_rows(tmp_path / "packed" / "transfer.csv"), final, ["loss", "seed"], ["test_acc"],
                     3 / 360)  # digits' test split: 360 images
    with pytest.raises(SystemExit, match="2"):
        transfer.main(["--losses", "CE", "--pack", "0", "--out", str(tmp_path / "x")])


def test_transfer_stopped_between_packs_resumes_without_training_a_pair_twice(tmp_path, monkeypatch):
    entries = transfer.parse_losses("NGL;Focal")  # CE is added as the reference
    first = Trainings(monkeypatch, stop_at=2)
    with pytest.raises(KeyboardInterrupt):
        transfer.run_transfer(entries, CFG, [0, 1, 2], tmp_path, log=lambda *a: None, plot=False, pack=3)
    assert len(first.trained()) == 3 and len(csv_rows(tmp_path / "transfer.csv")) == 3
    second = Trainings(monkeypatch)
    rows = transfer.run_transfer(entries, CFG, [0, 1, 2], tmp_path, log=lambda *a: None, plot=False, pack=3)
    assert second.singles == [] and [len(p) for p in second.packs] == [3, 3]
    assert not {m[:2] for m in first.trained()} & {m[:2] for m in second.trained()}
    assert sorted((r["loss"], r["seed"]) for r in rows) == sorted(
        (loss, seed) for loss in ("CE", "NGL", "Focal") for seed in (0, 1, 2))
    assert all(r["status"] == "ok" for r in rows)


EXPRS = ["-y * log(p) * 2", "-y * (1 - p) ** 3 * log(p)", "y * (1 - p) ** 2"]


def make_run(path):
    db = RunDB(path / "run.db")
    db.set_meta("config", SearchConfig(run_dir=str(path), seed=0, dataset="digits", steps=STEPS, train_size=300,
                                       val_size=VAL, backend="torch", progress=False,
                                       train_overrides={"lr": LR}).to_dict())
    for i, e in enumerate(EXPRS):
        db.record({"canonical": e, "expression": e, "constants": {}, "sign": 1.0, "dataset": "digits", "size": 5,
                   "fitness": 0.5 + 0.01 * i, "status": "ok"})
    db.close()
    return path


def scores(run) -> list[tuple]:
    return sqlite3.connect(run / "run.db").execute(
        "SELECT candidate, round, seed, status, fitness FROM elimination ORDER BY candidate, round, seed").fetchall()


def test_elimination_packs_each_round_and_seed_and_scores_as_one_at_a_time(tmp_path, monkeypatch):
    rounds = ["--keep", "2,1", "--seeds-per-round", "2,3", "--threads", "1"]  # round 2 trains seed 3 only
    one, packed_run = tmp_path / "one" / "run", tmp_path / "packed" / "run"  # candidates are named <run>#<id>
    alone = Trainings(monkeypatch)
    assert elim.main(["--run-dir", str(make_run(one)), *rounds]) == 0
    assert alone.packs == [] and len(alone.singles) == 4 * 2 + 3
    packed = Trainings(monkeypatch)
    assert elim.main(["--run-dir", str(make_run(packed_run)), *rounds, "--pack", "4"]) == 0
    # round 1: CE and 3 candidates on seed 1, then on seed 2; round 2: CE and the 2 kept on seed 3 (the
    # same trainings on seeds 1 and 2 are round 1's)
    assert packed.singles == [] and [len(p) for p in packed.packs] == [4, 4, 3]
    assert [{seed for _, seed, *_ in p} for p in packed.packs] == [{1}, {2}, {3}]
    assert sorted(packed.trained()) == sorted(alone.trained())
    alone_scores, packed_scores = scores(one), scores(packed_run)
    assert [r[:4] for r in packed_scores] == [r[:4] for r in alone_scores] and len(alone_scores) == 11
    assert {r[3] for r in alone_scores} == {"ok"}
    assert all(abs(p[4] - a[4]) <= 2 / VAL for p, a in zip(packed_scores, alone_scores)), (packed_scores, alone_scores)
    survivors = [[f["name"] for f in json.loads((run / "finalists.json").read_text())] for run in (one, packed_run)]
    assert survivors[0] == survivors[1] and len(survivors[0]) == 1
    with pytest.raises(SystemExit, match="2"):
        elim.main(["--run-dir", str(one), "--pack", "0"])


def test_elimination_stopped_between_packs_resumes_without_training_a_pair_twice(tmp_path, monkeypatch):
    run = make_run(tmp_path / "run")
    protocol = elim.Protocol.from_lists(keep=(2,), seeds=(3,), budget_scale=(1,), models=("surrogate",))
    first = Trainings(monkeypatch, stop_at=2)
    with pytest.raises(KeyboardInterrupt):
        elim.eliminate(run, protocol, log=lambda m: None, threads=1, pack=4)
    assert len(first.trained()) == 4 and len(scores(run)) == 4
    second = Trainings(monkeypatch)
    e = elim.Elimination(run, protocol, log=lambda m: None, threads=1, pack=4)
    try:
        e.run()
    finally:
        e.close()
    assert second.singles == [] and [len(p) for p in second.packs] == [4, 4] and e.trained == 8
    assert not {m[:2] for m in first.trained()} & {m[:2] for m in second.trained()}
    assert len(scores(run)) == 4 * 3
