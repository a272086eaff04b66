"""``nlfs.discover``: a search on a user's data held in memory, on a user's own training loop (a
fitness function), resumed after SIGKILL; the result's register/export; what reaches the workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import nlfs
from nlfs.search import make_executor, read_run, run_jobs

ROOT = Path(__file__).resolve().parents[1]

# A plain PyTorch training loop on scikit-learn's breast-cancer table (569 rows, 30 features): a
# linear model trained full-batch for a share of 40 steps, scored by validation accuracy.
FITNESS_SOURCE = '''
import torch
from sklearn.datasets import load_breast_cancer

_x, _y = load_breast_cancer(return_X_y=True)
X = torch.tensor((_x - _x.mean(0)) / _x.std(0), dtype=torch.float32)
Y = torch.tensor(_y)


def fitness(loss, seed, budget):
    perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(seed))
    train, val = perm[:400], perm[400:]
    torch.manual_seed(seed)
    model = torch.nn.Linear(X.shape[1], 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(max(1, round(40 * budget))):
        opt.zero_grad()
        loss(model(X[train]), Y[train]).backward()
        opt.step()
    with torch.no_grad():
        return (model(X[val]).argmax(1) == Y[val]).float().mean().item()
'''

# one thread per training: two on busy shared cores are several times slower
SMALL = dict(seed_losses=("CE", "Poly1"), seed_mutants=1, population=3, initial=3, threads=1, progress=False,
             log=lambda m: None)


def _fitness_namespace() -> dict:
    namespace: dict = {}
    exec(FITNESS_SOURCE, namespace)
    return namespace


@pytest.fixture(scope="module")
def table():
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer(return_X_y=True)


@pytest.fixture(scope="module")
def found(tmp_path_factory, table):
    """A search on the table held in memory (nlfs trains its MLP), payloads recorded on the way."""
    from nlfs.search import InlineExecutor

    run_dir = tmp_path_factory.mktemp("discover") / "table"
    sizes = []
    submit = InlineExecutor.submit

    def recording(self, payload):
        sizes.append(len(json.dumps(payload, default=str)))
        return submit(self, payload)

    InlineExecutor.submit = recording
    try:
        result = nlfs.discover(data=table, budget=3, run_dir=run_dir, rungs=[{"epochs": 1, "seeds": 2}],
                               target={"train_size": "all", "epochs": 2, "seeds": 2}, finalists=1, race_seeds=0,
                               backend="torch", **SMALL)
    finally:
        InlineExecutor.submit = submit
    return result, sizes


def test_discover_on_arrays_reports_where_each_difference_was_measured(found):
    result, _ = found
    assert (result.run_dir / "data.pt").is_file() and (result.run_dir / "run.db").is_file()
    _, config = read_run(result.run_dir)
    assert config["dataset"] == str((result.run_dir / "data.pt").resolve())  # the workers' one copy
    best = result.best
    assert best and all(b.regime.startswith("screening rung 0 (epochs 1), 2 seed(s)") for b in best)
    assert all(b.vs_ce_pp is not None and b.ci_pp is not None and b.ci_pp[0] <= b.vs_ce_pp <= b.ci_pp[1]
               for b in best)
    checked = [b for b in best if b.target_regime is not None]
    assert len(checked) == 1 and checked[0].target_regime.startswith("target: all training samples, 2 epochs")
    assert checked[0].target_vs_ce_pp is not None
    text = result.report()
    assert text == str(result) and "verdict:" in text and best[0].name in text
    # a table's model is the MLP and its rows are samples, not images
    assert "model mlp" in text and "training samples" in text and "training images" not in text
    assert "model surrogate" not in (result.run_dir / "hall_of_fame.md").read_text()


def test_payloads_carry_a_path_not_the_data(found, table):
    """In-memory data reaches a worker as the run directory's data.pt (read once per process), never
    inside a candidate's payload: every payload is a small fraction of the data's size."""
    result, sizes = found
    data_bytes = table[0].astype("float32").nbytes
    assert sizes and max(sizes) < data_bytes / 20
    assert (result.run_dir / "data.pt").stat().st_size > data_bytes


def test_calling_discover_again_resumes_the_run(found):
    result, _ = found
    rows_before, _ = read_run(result.run_dir)
    again = nlfs.discover(run_dir=result.run_dir, budget=4, threads=1, progress=False, log=lambda m: None)
    rows_after, _ = read_run(result.run_dir)
    def key(rows):
        return [(r["id"], r["expression"], r["status"], r["fitness"]) for r in rows]

    assert key(rows_after)[: len(rows_before)] == key(rows_before)  # nothing redone or lost
    assert result.summary["counts"]["trained"] == 3 and again.summary["counts"]["trained"] == 4


def test_a_resumed_run_goes_on_with_its_own_data_only(found, table):
    result, _ = found
    rows = read_run(result.run_dir)[0]
    x, y = table
    flipped = y.copy()
    flipped[0] = 1 - flipped[0]  # one label: other data
    quiet = dict(threads=1, progress=False, log=lambda m: None)
    with pytest.raises(ValueError, match="data given now differs in its (train|val|test) part.*new run_dir"):
        nlfs.discover(data=(x, flipped), run_dir=result.run_dir, **quiet)
    with pytest.raises(ValueError, match="searches .*data.pt, not digits"):
        nlfs.discover(data="digits", run_dir=result.run_dir, **quiet)
    # the model and the target are the run's too: another one is refused, the same one resumes
    with pytest.raises(ValueError, match="drop model or give the values it was started with"):
        nlfs.discover(data=table, model="surrogate-narrow", run_dir=result.run_dir, **quiet)
    with pytest.raises(ValueError, match="drop target or give"):
        nlfs.discover(data=table, target="train_size=all,epochs=50", run_dir=result.run_dir, **quiet)
    assert [r["id"] for r in read_run(result.run_dir)[0]] == [r["id"] for r in rows]  # refused before any training
    nlfs.discover(data=table, run_dir=result.run_dir, target="train_size=all,epochs=2", **quiet)  # as started


def test_register_and_export(found, tmp_path):
    result, _ = found
    names = result.register(k=2)
    assert names and names == [b.name for b in result.best[:2]]  # new losses only: CE and Poly1 are known
    logits, target = torch.randn(5, 2), torch.tensor([0, 1, 1, 0, 1])
    assert torch.isfinite(nlfs.Loss(names[0], backend="torch")(logits, target))
    entries = nlfs.losses.read_losses_file(result.export(tmp_path / "found.json", k=2))
    assert [e["name"] for e in entries] == names
    module = result.export(tmp_path / "found.py", k=2)
    namespace: dict = {}
    exec(module.read_text(), namespace)  # registers them again: the same losses, so no conflict
    cls = namespace[nlfs.losses.python_name(names[0])]
    assert torch.allclose(cls(backend="torch")(logits, target), nlfs.Loss(names[0], backend="torch")(logits, target))
    # the module holds the same losses as the .json: no known loss in disguise among them
    known = [e["name"] for e in result.summary["best"] if e.get("known")]
    everything = result.export(tmp_path / "all.py").read_text()  # every loss the result shows
    assert known and not any(f"{name!r}" in everything for name in known)
    assert sum(f"{name!r}" in module.read_text() for name in names) == len(names)


def test_fitness_function_is_paired_with_ce_on_the_same_seeds_and_budgets(tmp_path):
    namespace = _fitness_namespace()
    calls = []

    def fitness(loss, seed, budget):
        assert isinstance(loss, torch.nn.Module)
        calls.append((loss.spec.name, seed, budget))
        return namespace["fitness"](loss, seed, budget)

    options = {**SMALL, "seed_losses": ("Poly1",)}  # first, so promoted: a leader for the target that is not CE
    result = nlfs.discover(fitness=fitness, budget=4, run_dir=tmp_path / "fit", workers=1, race_seeds=0,
                           rungs=[{"budget": 0.25, "seeds": 1}, {"budget": 0.5, "seeds": 2}], **options)
    assert calls, "the fitness function ran in this process"
    assert {b for _, _, b in calls} <= {0.25, 0.5, 1.0} and 1.0 in {b for _, _, b in calls}  # the target
    ce = [(s, b) for name, s, b in calls if name == "CE"]
    assert all((s, b) in ce for name, s, b in calls if name != "CE")  # every score has CE's beside it
    assert len(ce) == len(set(ce))  # and CE is scored once per seed and budget, shared by all
    best = result.best
    assert best and all(b.regime.startswith("your fitness function, budget") for b in best)
    text = result.report()
    assert "your fitness function" in text and "target: your fitness function, budget 1" in text
    for wrong in ("surrogate", "training images", "epochs", "val acc"):
        assert wrong not in text, wrong


def _ahead_of_ce(loss, seed, budget):
    """A score without training: CE 0.5, any other loss ahead of it by 3 to 6 points depending on the
    seed (so a lead with an interval, and a chance estimate, at every rung and in the target)."""
    return 0.5 if loss.spec.name == "CE" else 0.53 + 0.01 * (seed % 4)


def test_a_fitness_runs_verdict_points_to_your_own_loop_not_to_nlfs_trainer(tmp_path):
    result = nlfs.discover(fitness=_ahead_of_ce, budget=3, run_dir=tmp_path / "fit", race_seeds=0,
                           rungs=[{"budget": 0.25, "seeds": 3}], **SMALL)
    assert result.summary["ahead_of_ce"] and result.best[0].vs_ce_pp > 0
    verdict = result.verdict
    assert "your own training loop" in verdict and "Discovery.register" in verdict and "more seeds" in verdict
    text = result.report()
    for tool in ("nlfs.eliminate", "nlfs.transfer"):  # nlfs's trainer, not the user's loop
        assert tool not in text, tool
    assert result.summary["chance"] is not None and text.count("your own training loop") == 2  # verdict, chance


def test_bad_calls_are_refused_before_any_work(tmp_path, table):
    with pytest.raises(ValueError, match="data or fitness"):
        nlfs.discover(data=table, fitness=lambda loss, seed, budget: 0.0, run_dir=tmp_path / "a")
    with pytest.raises(TypeError, match="fitness must be a function"):
        nlfs.discover(fitness=3, run_dir=tmp_path / "b")
    with pytest.raises(TypeError, match="unknown options.*'epoch'"):
        nlfs.discover(data=table, epoch=3, run_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="rung 0: a fitness function's rungs take budget"):
        nlfs.discover(fitness=lambda loss, seed, budget: 0.0, rungs=[{"epochs": 1}], run_dir=tmp_path / "d",
                      progress=False, log=lambda m: None)
    with pytest.raises(TypeError, match="model must be a model's name or 'module:factory'.*got Linear"):
        nlfs.discover(data=table, model=torch.nn.Linear(30, 2), run_dir=tmp_path / "e")
    with pytest.raises(ValueError, match=r"resize must be S or \(H, W\)"):
        nlfs.discover(data=table, resize=(8, 8, 8), run_dir=tmp_path / "f")
    assert not any((tmp_path / d / "run.db").exists() for d in "abcd")
    with pytest.raises(ValueError, match=r"seed loss '-y\*log\(p' \(seed_losses, --seed-losses\): expected '\)'"):
        nlfs.discover(data="digits", seed_losses=["-y*log(p"], run_dir=tmp_path / "g", progress=False)
    assert not any((tmp_path / d).exists() for d in "efg")


def _record_pid(log_path, blob):
    """A fitness function holding ``blob`` (its closure's data); logs its process and how many times
    that process received the shared objects."""
    def fitness(loss, seed, budget):
        from nlfs.search._worker import INSTALLS

        with open(log_path, "a") as fh:
            fh.write(f"{os.getpid()} {INSTALLS[0]} {len(blob)}\n")
        return 0.5
    return fitness


def test_a_fitness_function_reaches_each_worker_once(tmp_path):
    """Two worker processes, six jobs: the function (and the 4 MB its closure holds) is unpickled once
    per worker, while every payload stays a few hundred bytes."""
    log = tmp_path / "calls.txt"
    fitness = _record_pid(str(log), b"x" * 4_000_000)
    jobs = [(i, {"fitness": True, "expression": "-y * log(p)", "constants": {}, "reduction": "class_sum",
                 "budget": 0.5, "seeds": [i], "rejection": False, "backend": "torch"}) for i in range(6)]
    assert max(len(json.dumps(p)) for _, p in jobs) < 400
    executor = make_executor("local", workers=2, threads=1, shared={"fitness": fitness})
    try:
        results = dict(run_jobs(executor, jobs))
    finally:
        executor.close()
    assert all(r["status"] == "ok" and r["per_seed"][0]["acc"] == 0.5 for r in results.values()), results
    lines = [line.split() for line in log.read_text().splitlines()]
    assert len(lines) == 6 and {int(n) for _, _, n in lines} == {4_000_000}
    assert {installs for _, installs, _ in lines} == {"1"}  # received once in each process
    assert len({pid for pid, _, _ in lines}) <= 2 and str(os.getpid()) not in {pid for pid, _, _ in lines}


RESUMABLE = '''
import sys
import time
{fitness}

LOG = None  # where each finished call is logged: the command line's, or set by the test


def logged(loss, seed, budget):
    score = fitness(loss, seed, budget)
    time.sleep(0.05)
    with open(LOG, "a") as fh:  # one line per finished call: loss, seed, budget
        fh.write(f"{{loss.spec.name}}\\t{{seed}}\\t{{budget}}\\n")
    return score


def search(run_dir):
    import nlfs

    return nlfs.discover(fitness=logged, budget=4, run_dir=run_dir, workers=1, race_seeds=0,
                         seed_losses=("CE", "Poly1"), seed_mutants=1, population=3, initial=3, threads=1,
                         progress=False, rungs=[{{"budget": 0.25, "seeds": 1}}, {{"budget": 0.5, "seeds": 2}}])


if __name__ == "__main__":
    LOG = sys.argv[2]
    search(sys.argv[1])
'''


def _recorded_calls(run_dir: Path) -> set:
    """(loss name, seed, budget) of every score run.db holds: CE's baselines and each candidate's seeds."""
    rows, config = read_run(run_dir)
    budgets = [r["budget"] for r in config["rungs"]] + [1.0]
    out = set()
    for r in rows:
        if r["status"] not in ("ok", "baseline"):
            continue
        name = "CE" if r["status"] == "baseline" else str(nlfs.parse(r["expression"]))
        for s in (r.get("result") or {}).get("seeds", []):
            out.add((name, s["seed"], budgets[r.get("rung") or 0]))
    return out


def test_fitness_run_resumes_after_sigkill_without_scoring_anything_twice(tmp_path):
    script = tmp_path / "search.py"
    script.write_text(RESUMABLE.format(fitness=FITNESS_SOURCE))
    run_dir, log = tmp_path / "run", tmp_path / "calls.tsv"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(run_dir), str(log)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240  # the interpreter's start on busy cores included
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and len(log.read_text().splitlines()) >= 8:
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"the search ended before it could be killed: {proc.stderr.read().decode()[-500:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _recorded_calls(run_dir)
    n_before = len(log.read_text().splitlines())
    assert before, "some scores were recorded before the kill"

    resumed: dict = {"__name__": "resumed"}  # the same script's function, resumed in this process
    exec(script.read_text(), resumed)
    resumed["LOG"] = str(log)
    resumed["search"](run_dir)
    after_kill = [tuple(line.split("\t")) for line in log.read_text().splitlines()[n_before:]]
    again = [(name, int(seed), float(budget)) for name, seed, budget in after_kill]
    assert again, "the resumed run scored what was left"
    assert not before & set(again), sorted(before & set(again))  # nothing recorded was scored twice
    assert (run_dir / "summary.json").is_file()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["counts"]["trained"] == 4 and summary["best"]


def _ahead_by_seed(loss, seed, budget):
    # the same scores as _ahead_of_ce, written otherwise: another function
    return 0.5 if loss.spec.name == "CE" else 0.53 + (seed % 4) / 100


def test_a_run_resumes_only_with_the_fitness_function_it_was_scored_by(tmp_path):
    from nlfs.search._runner import fitness_identity

    run_dir = tmp_path / "fit"
    nlfs.discover(fitness=_ahead_of_ce, budget=2, run_dir=run_dir, race_seeds=0,
                  rungs=[{"budget": 0.25, "seeds": 1}], target={"budget": 1.0, "seeds": 1}, **SMALL)
    rows = len(nlfs.search.read_run(run_dir)[0])
    quiet = dict(threads=1, progress=False, log=lambda m: None)
    with pytest.raises(ValueError, match="another fitness function than this _ahead_by_seed.*start a new run_dir"):
        nlfs.discover(fitness=_ahead_by_seed, budget=4, run_dir=run_dir, **quiet)
    assert len(nlfs.search.read_run(run_dir)[0]) == rows  # refused before anything was scored
    # the saved configuration decides: another setting is refused, as the CLI's --resume refuses it
    with pytest.raises(ValueError, match="drop epochs, rungs or give the values it was started with"):
        nlfs.discover(fitness=_ahead_of_ce, budget=4, run_dir=run_dir, epochs=9, rungs=[{"budget": 0.1}], **quiet)
    with pytest.raises(TypeError, match="unknown options \\['bogus'\\]"):
        nlfs.discover(fitness=_ahead_of_ce, budget=4, run_dir=run_dir, bogus=1, **quiet)
    assert len(nlfs.search.read_run(run_dir)[0]) == rows
    again = nlfs.discover(fitness=_ahead_of_ce, budget=4, run_dir=run_dir, race_seeds=0,  # as started: no change
                          rungs=[{"budget": 0.25, "seeds": 1}], **quiet)
    assert len(nlfs.search.read_run(run_dir)[0]) > rows and again.best
    # a comment, a blank line or another place in the file leave the function what it was
    same: dict = {}
    exec("\n\n\ndef _ahead_of_ce(loss, seed, budget):\n    # a comment\n\n"
         "    return 0.5 if loss.spec.name == 'CE' else 0.53 + 0.01 * (seed % 4)\n", same)
    assert fitness_identity(same["_ahead_of_ce"])["digest"] == fitness_identity(_ahead_of_ce)["digest"]
    assert fitness_identity(_ahead_by_seed)["digest"] != fitness_identity(_ahead_of_ce)["digest"]


def _fails(loss, seed, budget):
    raise ZeroDivisionError("a bug in my loop")


def test_a_fitness_function_that_fails_on_ce_can_be_fixed_in_the_same_run_dir(tmp_path):
    run_dir = tmp_path / "fails"
    quiet = SMALL
    settings = dict(budget=5, run_dir=run_dir, race_seeds=0, rungs=[{"budget": 0.25, "seeds": 1}],
                    target={"budget": 1.0, "seeds": 1})
    with pytest.raises(RuntimeError, match="a bug in my loop.*fix your fitness function.*this run_dir"):
        nlfs.discover(fitness=_fails, **settings, **quiet)
    assert not nlfs.search.read_run(run_dir)[0]  # nothing scored: the fixed function may take the run
    found = nlfs.discover(fitness=_ahead_of_ce, **settings, **quiet)
    assert found.best and nlfs.search.read_run(run_dir)[0]
    with pytest.raises(ValueError, match="another fitness function"):  # scored now: it is that function's
        nlfs.discover(fitness=_fails, **settings, **quiet)


def test_discover_again_with_target_baselines_trains_them_and_nothing_else(tmp_path):
    run_dir = tmp_path / "fit"
    novel = "-y * log(p) + 0.3 * y * sin(3 * p)"  # a leader to train in the target: no known loss
    nlfs.discover(fitness=_ahead_of_ce, budget=1, run_dir=run_dir, race_seeds=0, rungs=[{"budget": 0.25, "seeds": 1}],
                  target={"budget": 1.0, "seeds": 2}, **{**SMALL, "seed_losses": (novel,), "seed_mutants": 0},
                  warm_starts_compete=True)
    rows = len(nlfs.search.read_run(run_dir)[0])
    assert any(r.get("stage") == "target" for r in nlfs.search.read_run(run_dir)[0])
    assert nlfs.search.read_target_baselines(run_dir) == []
    again = nlfs.discover(fitness=_ahead_of_ce, run_dir=run_dir, target_baselines=("LabelSmoothingCE",),
                          threads=1, progress=False, log=lambda m: None)
    assert len(nlfs.search.read_run(run_dir)[0]) == rows  # no candidate, no CE trained again
    assert sorted((t["name"], t["seed"]) for t in nlfs.search.read_target_baselines(run_dir)) == [
        ("LabelSmoothingCE", 0), ("LabelSmoothingCE", 1)]
    assert [b["name"] for b in again.summary["target"]["baselines"]] == ["LabelSmoothingCE"]
