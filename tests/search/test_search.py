"""Tiny end-to-end searches on digits (CPU), resume after SIGKILL, failure handling."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import nlfs
from nlfs.search import Search, SearchConfig
from tests.runs import run_search

FAST = dict(dataset="digits", steps=40, train_size=400, val_size=200, backend="torch", progress=False)


def _cfg(tmp_path, **kw):
    base = dict(run_dir=str(tmp_path / "run"), budget=3, population=2, sample=2, initial=2, seed=1,
                gp_population=3, baseline=False, **FAST)
    base.update(kw)
    return SearchConfig(**base)


def _trained(rows):
    return [r for r in rows if r["status"] in ("ok", "diverged", "error")
            and not (r.get("reason") or "").startswith("fitness reused")]


@pytest.mark.parametrize("algorithm, space", [("regularized", "nlfs"), ("gp", "gp")])
def test_each_algorithm_runs_a_tiny_search(tmp_path, algorithm, space):
    rows = run_search(_cfg(tmp_path, algorithm=algorithm, space=space))
    trained = _trained(rows)
    assert len(trained) == 3
    assert all(r["status"] in ("ok", "diverged") for r in trained)
    assert any(r["status"] == "ok" for r in trained)
    assert all(0 <= r["fitness"] <= 1 for r in trained if r["status"] == "ok")
    assert all(r["reason"] for r in trained if r["status"] == "diverged")
    assert all(0 < r["cpu_time"] for r in trained)  # the trainings' own CPU seconds, beside their wall time
    for r in rows:  # every row is complete and its expression parses
        nlfs.parse(r["expression"])
        assert r["dataset"] == "digits" and r["status"] and r["canonical"]
    assert len({r["canonical"] for r in trained}) == len(trained)


def test_user_defined_space_from_toml(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text('unary = ["log", "exp"]\nbinary = ["add", "mul", "sub"]\nleaves = ["y", "p", "1"]\n'
                    "max_depth = 4\n")
    rows = run_search(_cfg(tmp_path, algorithm="gp", space=str(path), budget=2))
    ops = {n.op for r in _trained(rows) for n in nlfs.parse(r["expression"]).nodes()}
    assert ops <= {"log", "exp", "add", "mul", "sub", "neg", "y", "p", "num"}


def test_same_seed_reproduces_the_run(tmp_path):
    a = run_search(_cfg(tmp_path / "a"))
    b = run_search(_cfg(tmp_path / "b"))
    key = lambda rows: [(r["expression"], r["status"], r["fitness"]) for r in rows]
    assert key(a) == key(b)


def test_existing_run_dir_is_not_overwritten(tmp_path):
    run_search(_cfg(tmp_path, budget=1))
    with pytest.raises(FileExistsError, match="--resume"):
        Search(_cfg(tmp_path, budget=1))


def test_nan_producing_candidate_is_recorded_as_failed(tmp_path, monkeypatch):
    import nlfs.train as train_mod

    real_train = train_mod.train
    calls = {"n": 0}

    class NaNAfterTwoSteps(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.steps = inner, 0

        def forward(self, logits, target):
            self.steps += 1
            out = self.inner(logits, target)
            return out * float("nan") if self.steps > 2 else out

    def flaky_train(spec, cfg, **kw):
        calls["n"] += 1
        if calls["n"] == 1:  # the first trained candidate's loss turns NaN mid-training
            return real_train(NaNAfterTwoSteps(nlfs.Loss(spec, backend="torch")), cfg, **kw)
        return real_train(spec, cfg, **kw)

    monkeypatch.setattr(train_mod, "train", flaky_train)
    rows = run_search(_cfg(tmp_path))
    trained = _trained(rows)
    assert trained[0]["status"] == "diverged" and trained[0]["fitness"] is None
    assert "nan" in trained[0]["reason"].lower()
    assert all(r["status"] == "ok" for r in trained[1:]) and len(trained) == 3


def _evolve_cmd(run_dir, budget, resume=False):
    cmd = [sys.executable, "-m", "nlfs.evolve", "--budget", str(budget), "--no-progress", "--workers", "1"]
    if resume:  # the run's saved configuration decides the rest
        return cmd + ["--resume", str(run_dir)]
    return cmd + ["--dataset", "digits", "--steps", "40", "--train-size", "400", "--val-size", "200", "--backend",
                  "torch", "--seed", "3", "--population", "2", "--sample", "2", "--initial", "2", "--run-dir",
                  str(run_dir), "--finalists", "0"]  # screening only: the target stage has test_target_stage


def _db_rows(path):
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT expression, status, fitness FROM evaluations ORDER BY id").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def test_sigkill_then_resume_loses_nothing_and_repeats_nothing(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    budget = 4
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "killed"
    subprocess.run(_evolve_cmd(ref_dir, budget), check=True, env=env, capture_output=True, timeout=600)
    reference = _db_rows(ref_dir / "run.db")

    proc = subprocess.Popen(_evolve_cmd(run_dir, budget), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    # kill once the baseline and at least two trained candidates are recorded
    while time.time() < deadline:
        rows = _db_rows(run_dir / "run.db") if (run_dir / "run.db").exists() else []
        if sum(r[1] in ("ok", "diverged") for r in rows) >= 2 or proc.poll() is not None:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; raise the budget"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _db_rows(run_dir / "run.db")
    assert 0 < len(before) < len(reference)

    subprocess.run(_evolve_cmd(run_dir, budget, resume=True), check=True, env=env, capture_output=True,
                   timeout=600)
    after = _db_rows(run_dir / "run.db")
    assert after[: len(before)] == before  # nothing recorded was redone or lost
    assert after == reference  # and the resumed run is the run that was never killed
    trained = [r[0] for r in after if r[1] in ("ok", "diverged")]
    assert len(trained) == len(set(trained)) == budget


def test_outputs_for_a_person(tmp_path):
    run_dir = tmp_path / "out"
    res = subprocess.run(_evolve_cmd(run_dir, 4), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    # the best new loss: the warm starts (CE, label smoothing, Poly1) are known losses, shown but never exported
    best = next(e["name"] for e in json.loads((run_dir / "summary.json").read_text())["best"] if not e["known"])
    assert "CE" in res.stdout and best in res.stdout and best.startswith("out#")
    for name in ("hall_of_fame.md", "fitness.png", "best_losses.py", "summary.json", "run.db"):
        assert (run_dir / name).exists(), name
    assert Path(run_dir / "fitness.png").read_bytes()[:4] == b"\x89PNG"
    namespace = {}
    exec((run_dir / "best_losses.py").read_text(), namespace)
    module = namespace[nlfs.losses.python_name(best)](backend="torch")
    z = torch.randn(4, 10, requires_grad=True)
    module(z, torch.tensor([1, 2, 3, 4])).backward()
    assert torch.isfinite(z.grad).all()


class _HoldingExecutor:
    """Two slots; results come back only when waited for, oldest first (like slow workers)."""

    slots = 2

    def __init__(self):
        self.submitted = []

    def submit(self, payload):
        self.submitted.append(payload["expression"])
        return len(self.submitted) - 1

    def wait_one(self, handles):
        h = min(handles)
        return h, {"status": "ok", "fitness": 0.5 + h / 100, "wall_time": 0.0}

    def close(self):
        pass


class _ScriptedAlgorithm:
    def __init__(self, genotypes):
        self.todo, self.told = list(genotypes), []

    def ask(self):
        return self.todo.pop(0) if self.todo else None

    def tell(self, genotype, fitness, status, eval_id=None):
        self.told.append((str(genotype), fitness, status))

    def done(self):
        return not self.todo


def test_identical_candidates_in_flight_are_trained_once(tmp_path):
    a, b = nlfs.parse("-y * log(p + 0.1)"), nlfs.parse("-y * log(p + 0.2)")
    s = Search(_cfg(tmp_path, algorithm="gp", space="gp", budget=5, filters=("validity", "duplicate")))
    s.algo = _ScriptedAlgorithm([a, a, b])
    executor = _HoldingExecutor()
    rows = s.run(executor=executor)
    s.close()
    assert executor.submitted == [str(a), str(b)]
    dup = [r for r in rows if r["status"] == "rejected:duplicate"]
    assert len(dup) == 1 and dup[0]["fitness"] == 0.5  # the copy got the original's fitness, untrained
    assert ("-y * log(p + 0.1)", 0.5, "rejected:duplicate") in s.algo.told


def test_two_processes_cannot_run_one_search(tmp_path):
    first = Search(_cfg(tmp_path, budget=1))
    try:
        with pytest.raises(RuntimeError, match="another process"):
            Search(_cfg(tmp_path, budget=1), resume=True)
    finally:
        first.close()
    Search(_cfg(tmp_path, budget=1), resume=True).close()  # free again once the first has closed


def test_damaged_run_directories_give_a_message_not_a_traceback(tmp_path, capsys):
    import pickle

    from nlfs.evolve import main
    from nlfs.search import RunDB, RunDirError
    from nlfs.search._db import read_run

    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "run.db").write_bytes(b"this is not sqlite" * 100)
    assert main(["--resume", str(garbage), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "run.db" in err and "damaged" in err and "Traceback" not in err
    with pytest.raises(RunDirError, match="damaged"):
        read_run(garbage)

    empty = tmp_path / "empty"
    RunDB(empty / "run.db").close()  # a database without the saved configuration
    assert main(["--resume", str(empty), "--no-progress"]) == 2
    assert "no saved search configuration" in capsys.readouterr().err

    assert main(["--resume", str(tmp_path / "nowhere"), "--no-progress"]) == 2
    assert "no run to resume" in capsys.readouterr().err

    # a state that would run code when unpickled is refused, and nothing runs
    run = tmp_path / "run"
    run_search(_cfg(run, budget=1))
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    db = RunDB(run / "run" / "run.db")
    db.save_state(Evil())
    db.close()
    assert main(["--resume", str(run / "run"), "--no-progress"]) == 2
    assert "cannot be loaded" in capsys.readouterr().err and not marker.exists()
    # a real state round-trips through the restricted unpickler
    db = RunDB(run / "run" / "run.db")
    from nlfs.search import RegularizedEvolution
    from nlfs.spaces import get_space

    state = {"algorithm": RegularizedEvolution(get_space("nlfs"), 0, 2, 2, 2), "pending": []}
    db.save_state(state)
    assert pickle.dumps(db.load_state()) == pickle.dumps(state)
    db.close()


def test_reports_open_a_run_read_only(tmp_path):
    from nlfs.search import RunDB
    from nlfs.search._db import read_run

    run_search(_cfg(tmp_path, budget=1))
    path = tmp_path / "run" / "run.db"
    before = path.read_bytes()
    rows, cfg = read_run(tmp_path / "run")
    assert rows and cfg["dataset"] == "digits" and path.read_bytes() == before
    db = RunDB(path, readonly=True)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        db.conn.execute("DELETE FROM evaluations")
    db.close()


def test_an_interrupt_that_lands_just_after_commit_stays_an_interrupt(tmp_path):
    # Ctrl-C between COMMIT and the end of the block: the row is recorded, and the KeyboardInterrupt
    # (not sqlite's "cannot rollback - no transaction is active") reaches the caller
    from nlfs.search import RunDB

    db = RunDB(tmp_path / "run.db")
    real = db.conn

    class Cursor:
        def __init__(self):
            self.cur = real.cursor()

        @property
        def lastrowid(self):
            return self.cur.lastrowid

        def execute(self, sql, *args):
            out = self.cur.execute(sql, *args)
            if sql == "COMMIT":
                raise KeyboardInterrupt
            return out

    class Connection:
        in_transaction = property(lambda self: real.in_transaction)

        def cursor(self):
            return Cursor()

    db.conn = Connection()
    with pytest.raises(KeyboardInterrupt):
        db.record({"canonical": "c", "expression": "-y * log(p)", "constants": {}, "sign": 1, "fitness": 0.5,
                   "status": "ok", "dataset": "digits", "size": 3})
    db.conn = real
    assert db.count() == 1
    db.close()


def test_the_baseline_every_candidate_is_paired_with_is_the_catalogues_ce():
    from nlfs.search import CE_EXPRESSION

    assert nlfs.Loss("CE").spec.expr == nlfs.Loss(CE_EXPRESSION).spec.expr
