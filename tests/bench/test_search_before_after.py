"""bench/search_before_after.py: each search's best judged in the target regime, paired with CE trained
once per seed; the report's figures, verdict and regimes; resuming reuses finished searches and judged
trainings; a search is stopped at its budget with its workers. Real trainings on digits (a few steps),
searches faked by a tiny in-process search."""

import json
import os
import subprocess
import sys
import time

import pytest

from bench import search_before_after as sba
from nlfs.search import PRESETS, SearchConfig
from tests.runs import csv_rows, run_search

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LEAD = "-y * log(p) + 0.3 * p * y"
OTHER = "-y * log(p + 0.2)"
TARGET = "train_size=300,steps=20,val_size=100"


def fake_launch(calls):
    """A search in-process instead of ``python -m nlfs.evolve``: digits, two seed losses, 4 steps; the
    target stage (a 20-step target) unless the command says ``--finalists 0``."""

    def launch(cmd, cwd, env, cap_s, log):
        calls.append(cmd)
        run_dir = cmd[cmd.index("--run-dir") + 1]
        finalists = int(cmd[cmd.index("--finalists") + 1]) if "--finalists" in cmd else 1
        cfg = SearchConfig(run_dir=run_dir, algorithm="gp", space="gp", dataset="digits", train_size=300, val_size=100,
                           backend="torch", progress=False, budget=2, gp_population=4, seed=0,
                           rungs=[{"steps": 4, "seeds": 3}], seed_losses=(LEAD, OTHER), seed_mutants=0,
                           filters=("validity", "duplicate"), finalists=finalists, race_seeds=0, grad_scale="ce",
                           warm_starts_compete=True,  # the candidates come in as warm starts
                           target={"train_size": 300, "steps": 4, "val_size": 100, "seeds": 1}, threads=1)
        run_search(cfg)
        return {"wall_s": 1.0, "cpu_s": 2.0, "rc": 0, "stopped_by": "itself", "load_at_start": 0.5}

    return launch


def argv(tmp_path, *extra):
    return ["--dataset", "digits", "--searches", "before,now,now-no-target", "--minutes", "6.5", "--target", TARGET,
            "--seeds", "5,6", "--workers", "1", "--top", "1", "--work", str(tmp_path / "work"),
            "--results", str(tmp_path / "results"), *extra]


def test_each_search_best_is_judged_in_the_target_paired_with_ce_and_a_rerun_trains_nothing(tmp_path, monkeypatch):
    calls, built = [], []
    monkeypatch.setattr(sba, "launch", fake_launch(calls))
    monkeypatch.setattr(sba, "worktree", lambda rev, work: built.append(rev) or sba.ROOT)
    assert sba.main(argv(tmp_path)) == 0
    assert len(calls) == 3 and built == [sba.BEFORE]
    assert "--finalists" in calls[2] and "--finalists" not in calls[1]

    rows = csv_rows(tmp_path / "results" / "search_before_after_target_digits.csv")
    by_search = {}
    for r in rows:
        by_search.setdefault(r["search"], []).append(r)
    assert set(by_search) == {"before", "now", "now-no-target"}
    # now: its best (rank 1) and the leader its own target stage checked, with that check in the row
    checked = [r for r in by_search["now"] if r["search_target_pp"]]
    assert len(checked) == 1 and checked[0]["expression"] in (LEAD, OTHER)
    assert not any(r["search_target_pp"] for r in by_search["now-no-target"])
    assert all(r["search_measured"].startswith("rung 0 (steps 4") for r in rows)

    cfg, regime = sba.judge_config("digits", "target", TARGET)
    assert cfg.train_size == 300 and cfg.steps == 20 and cfg.epochs is None and cfg.threads == 1
    judged = json.loads((tmp_path / "work" / "judged.json").read_text())
    ce = {s: judged[sba.job(None, cfg, s)[0]] for s in (5, 6)}  # CE once per seed, shared by every search
    losses = {json.dumps(sba.loss_of(c), sort_keys=True) for name in by_search
              for c in sba.candidates(tmp_path / "work" / name, 1) if c["judge"]}
    assert len(losses) < len(rows)  # the searches found the same losses: judged once each
    assert len(judged) == (len(losses) + 1) * 2
    for r in rows:
        c = next(c for c in sba.candidates(tmp_path / "work" / r["search"], 1) if c["name"] == r["name"])
        mine = {s: judged[sba.job(c, cfg, s)[0]] for s in (5, 6)}
        diffs = [mine[s]["acc"] - ce[s]["acc"] for s in (5, 6)]
        assert float(r["diff_pp"]) == pytest.approx(100 * sum(diffs) / 2, abs=1e-3)
        assert r["seeds"] == "2" and r["judge_regime"] == regime
        assert float(r["ce_acc"]) == pytest.approx((ce[5]["acc"] + ce[6]["acc"]) / 2, abs=1e-4)
        tdiffs = [mine[s]["test_acc"] - ce[s]["test_acc"] for s in (5, 6)]
        assert float(r["test_diff_pp"]) == pytest.approx(100 * sum(tdiffs) / 2, abs=1e-3)
        if r["standing"] in ("ahead", "behind", "level within noise"):
            lo, hi = float(r["ci_low_pp"]), float(r["ci_high_pp"])
            assert lo <= float(r["diff_pp"]) <= hi

    md = (tmp_path / "results" / "search_before_after_target_digits.md").read_text()
    assert sba.machine_name() in md and sba.today() in md and "python -m bench.search_before_after" in md
    assert f"Regime of every figure in this section: {regime}" in md and "**Verdict:**" in md
    assert f"before ({sba.BEFORE})" in md and "--finalists 0" in md

    # resumed: nothing searched or trained again, the same report
    monkeypatch.setattr(sba, "launch", lambda *a, **k: pytest.fail("a finished search ran again"))
    monkeypatch.setattr(sba, "train_jobs", lambda jobs, workers: pytest.fail(f"trained again: {len(jobs)}"))
    assert sba.main(argv(tmp_path)) == 0
    assert csv_rows(tmp_path / "results" / "search_before_after_target_digits.csv") == rows
    # the older report's regime and file names stay available
    assert sba.main(argv(tmp_path, "--judge", "short", "--report-only")) == 0
    short = csv_rows(tmp_path / "results" / "search_before_after_digits.csv")
    assert short and all(r["standing"] == "not judged" and "320 steps" in r["judge_regime"] for r in short)


def test_an_unfinished_search_starts_again_and_a_finished_one_is_reused(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(sba, "launch", fake_launch(calls))
    (tmp_path / "now").mkdir()
    (tmp_path / "now" / "left.txt").write_text("from a killed study")
    rec = sba.run_search("now", tmp_path, "digits", 6.5, 1.0, sba.BEFORE)
    assert len(calls) == 1 and not (tmp_path / "now" / "left.txt").exists()
    assert rec["screen_minutes"] == pytest.approx(1.0) and rec["stopped_by"] == "itself"
    assert sba.run_search("now", tmp_path, "digits", 6.5, 1.0, sba.BEFORE) == rec and len(calls) == 1


def test_search_commands_share_one_budget():
    now = sba.evolve_args("now", "fashion-mnist", "R", 6.5)
    # at the default budget, today's search screens exactly as the README's first command does
    assert now[now.index("--time-limit") + 1] == f"{PRESETS['quick']['time_limit'] / 60:g}"
    assert now[:4] == ["--dataset", "fashion-mnist", "--run-dir", "R"] and "--finalists" not in now
    screen = sba.evolve_args("now-no-target", "fashion-mnist", "R", 6.5)
    assert screen[screen.index("--finalists") + 1] == "0" and screen[screen.index("--time-limit") + 1] == "5.5"
    assert sba.evolve_args("before", "digits", "R", 6.5, time_limit=False)[-2:] == ["--budget", "100000"]
    with pytest.raises(SystemExit):
        sba.parse_args(["--minutes", "5"])  # today's search needs its 5.5 minutes after screening
    with pytest.raises(SystemExit):
        sba.parse_args(["--searches", "now,later"])
    with pytest.raises(SystemExit):
        sba.parse_args(["--seeds", "3"])  # one seed has no interval


def test_the_default_before_is_the_last_commit_without_the_target_regime():
    if subprocess.run(["git", "-C", str(sba.ROOT), "cat-file", "-e", f"{sba.BEFORE}^{{commit}}"]).returncode:
        pytest.skip("this checkout has no history")
    assert not sba.has_target_regime(sba.BEFORE) and sba.has_time_limit(sba.BEFORE)
    assert sba.has_target_regime("HEAD")
    child = subprocess.run(["git", "-C", str(sba.ROOT), "rev-list", "--ancestry-path", "--reverse",
                            f"{sba.BEFORE}..HEAD"], capture_output=True, text=True).stdout.split()[0]
    touched = subprocess.run(["git", "-C", str(sba.ROOT), "show", "--name-only", "--format=", child],
                             capture_output=True, text=True).stdout
    assert "target" in touched  # the next commit starts the target regime


def test_a_search_past_its_cap_is_stopped_with_its_workers(tmp_path):
    pid_file = tmp_path / "child.pid"
    script = ("import subprocess, sys, time; c = subprocess.Popen([sys.executable, '-c', 'import time; "
              f"time.sleep(60)']); open({str(pid_file)!r}, 'w').write(str(c.pid))\n"
              "while time.process_time() < 0.5: pass\ntime.sleep(60)")
    t0 = time.time()
    rec = sba.launch([sys.executable, "-c", script], tmp_path, dict(os.environ), 3, tmp_path / "log")
    assert rec["stopped_by"] == "the cap" and time.time() - t0 < 30 and rec["wall_s"] >= 3
    assert rec["cpu_s"] >= 0.4  # the group's CPU time, read while it ran
    child = int(pid_file.read_text())
    for _ in range(50):  # the worker got the group's SIGTERM too (reaped by init shortly after)
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        state = open(f"/proc/{child}/stat").read().rsplit(")", 1)[1].split()[0] if os.path.exists(
            f"/proc/{child}/stat") else "X"
        if state in ("Z", "X"):
            break
        time.sleep(0.1)
    else:
        pytest.fail("the search's worker outlived it")


def _cmp(diff, lo, hi, n=3):
    return {"status": "ok", "n": n, "diff": diff, "ci": [lo, hi], "wins": 2, "acc": 0.9, "ce": 0.9 - diff}


def test_the_verdict_reads_the_intervals():
    assert sba.standing(_cmp(0.004, 0.001, 0.007)) == "ahead"
    assert sba.standing(_cmp(-0.004, -0.007, -0.001)) == "behind"
    assert sba.standing(_cmp(0.004, -0.001, 0.009)) == "level within noise"
    assert sba.standing({"status": "diverged", "n": 3, "diverged": 1}) == "diverged"
    regime = "target: all training images, 8 epochs, clean labels, augmentation none (fashion-mnist ...)"
    rows = [dict(label="before (abc)", rank=2, best=True, val=_cmp(-0.001, -0.004, 0.002)),
            dict(label="now", rank=1, best=True, val=_cmp(-0.005, -0.008, -0.002)),
            dict(label="now", rank=2, best=False, val=_cmp(0.003, 0.001, 0.005))]
    v = sba.verdict(rows, regime)
    assert v.startswith("no search's best is ahead of CE in the target: all training images, 8 epochs")
    assert "before (abc) -0.10 [-0.40, +0.20] pp (level within noise)" in v
    assert "now -0.50 [-0.80, -0.20] pp (behind)" in v and "also ahead: now #2 +0.30 [+0.10, +0.50] pp" in v
    rows[0]["val"] = _cmp(0.003, 0.001, 0.005)
    rows.pop()
    v = sba.verdict(rows, regime)
    assert v.startswith("the best of before (abc) is ahead of CE") and "also ahead" not in v
    rows[0]["val"] = {"status": "diverged", "n": 3, "diverged": 2}
    assert "before (abc) diverged (2 of 3 seeds);" in sba.verdict(rows, regime)
    assert "none of the 2 judged candidates is ahead" in sba.verdict(rows, regime)


def test_compare_pairs_by_seed_and_a_diverged_seed_fails_the_loss():
    ce = {s: {"acc": 0.80 + 0.01 * s, "diverged": False} for s in range(3)}
    mine = {s: {"acc": 0.80 + 0.01 * s + d, "diverged": False} for s, d in zip(range(3), (0.002, 0.004, 0.003))}
    c = sba.compare(mine, ce)
    assert c["diff"] == pytest.approx(0.003) and c["wins"] == 3 and c["ci"][0] < 0.003 < c["ci"][1]
    same = sba.compare(ce, ce)  # CE in disguise trained identically: zero, with a zero-width interval
    assert same["diff"] == 0 and same["ci"] == [0.0, 0.0] and sba.standing(same) == "level within noise"
    mine[1] = {"acc": None, "diverged": True}
    assert sba.compare(mine, ce)["status"] == "diverged"
    assert sba.compare({}, ce)["status"] == "not judged"


def test_an_interrupted_study_stops_its_running_search(tmp_path, monkeypatch):
    pid_file = tmp_path / "search.pid"
    script = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    polls = []

    def interrupted(pgid, seen):  # the study gets Ctrl-C (or SIGTERM) while the search runs
        polls.append(pgid)
        if pid_file.exists():
            raise KeyboardInterrupt

    monkeypatch.setattr(sba, "group_cpu", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sba.launch([sys.executable, "-c", script], tmp_path, dict(os.environ), 600, tmp_path / "log")
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):  # stopped and reaped, not left in its own session
        os.kill(pid, 0)


def test_the_candidates_are_the_search_ranking_and_its_target_checked_leaders_without_ce(tmp_path, monkeypatch):
    import nlfs.search

    def row(i, expression, fitness, **kw):
        seeds = [{"seed": s, "acc": 0.5, "paired": fitness + 0.001 * (s - 1), "diverged": False} for s in range(3)]
        return {"id": i, "status": "ok", "expression": expression, "constants": {}, "fitness": fitness, "rung": 1,
                "size": 4, "scale": 1.5, "result": {"seeds": seeds}, **kw}

    rows = [row(1, "-y * log(p)", 0.02), row(2, LEAD, 0.01), row(3, OTHER, 0.0), row(4, "-y * log(p) * p", -0.01),
            row(5, OTHER, -0.004, stage="target", candidate=3, rung=2)]
    config = {"grad_scale": "ce", "rungs": [{"steps": 4, "seeds": 1}, {"steps": 8, "seeds": 3}]}
    monkeypatch.setattr(nlfs.search, "read_run", lambda run_dir: (rows, config))
    got = sba.candidates(tmp_path / "run", 1)
    assert [(c["rank"], c["expression"], c["judge"]) for c in got] == [(1, "-y * log(p)", False), (2, LEAD, True),
                                                                        (3, OTHER, True)]
    assert got[0]["same_as"] == "CE" and got[1]["scale"] == 1.5 and got[1]["own_target"] is None
    assert got[2]["own_target"]["paired"] == pytest.approx(-0.004) and got[2]["own_target"]["seeds"] == 3
    assert got[1]["proxy"] == pytest.approx(0.01) and got[1]["proxy_ci"][0] < 0.01 < got[1]["proxy_ci"][1]
    assert got[1]["measured"] == "rung 1 (steps 8), 3 seed(s)" and got[1]["name"] == "run#2"


def test_a_report_without_a_finished_search_writes_nothing(tmp_path, capsys):
    assert sba.main(argv(tmp_path, "--report-only")) == 2
    assert "no finished search" in capsys.readouterr().err and not (tmp_path / "results").exists()


def test_todays_search_at_the_default_budget_is_the_readmes_quick_preset(tmp_path):
    from nlfs.search._config import PRESETS

    args = sba.evolve_args("now", "fashion-mnist", tmp_path, sba.parse_args([]).minutes)
    assert float(args[args.index("--time-limit") + 1]) * 60 == PRESETS["quick"]["time_limit"]
