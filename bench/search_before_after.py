"""Does today's search find losses that beat cross-entropy in the training a user runs? The README's
first command as it was before the target regime and as it is, each given the same wall-clock budget
on this machine, then every search's best candidates judged by one evaluation none of them ran: each
trained in the dataset's target regime (``nlfs.search.default_target``: Fashion-MNIST's whole split
for CE's plateau of 8 epochs), 3 seeds no search trained with, paired with CE trained once per seed
on the same seeds; the difference in pp with its 95% interval (``nlfs.stats.paired_by_key``).

    python -m bench.search_before_after --minutes 6.5 --workers 2

Searches (``--searches``, one after another, each with the whole machine):

- ``before``: ``python -m nlfs.evolve`` at ``--before`` (default: the commit just before the first
  target-regime commit), checked out in a temporary worktree with its C++ extension built there;
- ``now``: ``python -m nlfs.evolve`` today (screening, racing its leader to an interval, then the
  target stage);
- ``now-no-target``: today's search with ``--finalists 0`` (no racing, no target stage): the same
  budget spent on screening, which separates racing and the target stage from the rest.

Each search screens for ``--minutes`` less what its design does after screening (``TAIL_MINUTES``),
so at the default budget ``now`` is exactly the README's quick preset; a search still running
``--grace`` minutes after its budget is stopped (SIGTERM to its process group) and the report says so.
A search's best candidates are its own ranking's (``nlfs.search.best_candidates``: highest rung, then
fitness; ``--top``, CE in disguise listed but neither counted nor judged), plus every leader it
trained in its own target stage; each is judged as it is exported (expression, constants, the
gradient scale the search recorded). ``--judge short`` judges in the older regime instead (320
steps: 10,240 images, 4 epochs) and writes the older report's files; ``--judge short --before 6a97f00
--searches before,now --minutes 6`` is the older study's setup (its ``warm`` variant is
the default of then: CE and Poly1).

Writes bench/results/search_before_after_target_<dataset>.csv and .md (``--judge short``:
search_before_after_<dataset>.*). Resumable: a finished search (``WORK/<name>/done.json``) and every
judged training (``WORK/judged.json``, by ``nlfs.train.training_key``) are reused; an unfinished
search starts again. Trainings run in ``--workers`` processes with one thread each; run it under
``nice``: every process it starts inherits the niceness.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._schema import machine_name, today  # noqa: E402
from nlfs.stats import format_pp  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
# The commit just before the first target-regime commit (4a4fbc0, bench.target_curve; then the
# target spec, racing and the target stage): its quick preset screens for 5 minutes and reports the
# leaders' screening fitness alone.
BEFORE = "cf18802"
# Minutes a search needs after its screening time limit, from its preset's own figures: before, the
# screened candidates finish their rungs (5 of about 6 minutes screening); today, the rungs (the last an
# epoch of the whole split), racing the leader one step and the leader and CE trained in the target
# (about 3.5): 1 of about 6.5 minutes screening, the quick preset's.
TAIL_MINUTES = {"before": 1.0, "now": 5.5, "now-no-target": 1.0}
SEARCH_ARGS = {"before": [], "now": [], "now-no-target": ["--finalists", "0"]}
SEARCH_WHAT = {
    "before": "the README's first command at {rev} (before the target regime): screening, the screened "
              "finish their rungs",
    "now": "the README's first command today: screening, racing the leader to an interval, the leader "
           "and CE trained in the target",
    "now-no-target": "today's search with --finalists 0: screening only (no racing, no target stage)",
}
SHORT = dict(train_size=10240, epochs=4, val_size=5000)  # the older judge: 320 steps, 5x the top rung then
DEFAULT_SEEDS = (100, 101, 102)  # no search trains these (screening and racing use 0 up to --race-seeds)
CE = "CE"
STOP_WAIT_S = 60  # after SIGTERM, how long a search may take to stop before SIGKILL


# -- the searches -------------------------------------------------------------------------------------
def has_target_regime(rev: str) -> bool:
    """Whether revision ``rev`` of this repository already has the target regime."""
    out = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{rev}:nlfs/search/_target.py"],
                         capture_output=True)
    return out.returncode == 0


def has_time_limit(rev: str) -> bool:
    """Whether ``python -m nlfs.evolve`` at ``rev`` takes ``--time-limit`` (older ones: a budget only)."""
    out = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:nlfs/evolve.py"], capture_output=True, text=True)
    return "--time-limit" in out.stdout


def worktree(rev: str, work: Path) -> Path:
    """``rev`` checked out under ``work`` with its C++ extension built (once)."""
    path = work / f"before-{rev}"
    if not (path / "nlfs").is_dir():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-f", "--detach", str(path), rev], check=True)
    if not list(path.glob("nlfs/_cpp*.so")):
        # pybind11 is a build requirement only (pip's isolated build has it, the venv does not): give the
        # old revision's build its own copy, so both searches run the C++ kernels.
        tools = work / "build-tools"
        if not (tools / "pybind11").is_dir():
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(tools), "pybind11>=2.12"],
                           check=True)
        env = dict(os.environ, PYTHONPATH=str(tools))
        subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-q"], cwd=path, check=True,
                       stdout=subprocess.DEVNULL, env=env)
        if not list(path.glob("nlfs/_cpp*.so")):
            raise SystemExit(f"{path}: the C++ extension did not build; the comparison would be unfair")
    return path


def evolve_args(name: str, dataset: str, run_dir: Path, minutes: float, time_limit: bool = True) -> list[str]:
    """The arguments of search ``name`` given ``minutes`` in all: the README's command plus its dataset,
    run directory and screening time limit (a revision without ``--time-limit``: an unreachable
    budget, stopped at the budget's end)."""
    screen = minutes - TAIL_MINUTES[name]
    args = ["--dataset", dataset, "--run-dir", str(run_dir), "--no-progress", *SEARCH_ARGS[name]]
    return args + (["--time-limit", f"{screen:g}"] if time_limit else ["--budget", "100000"])


def group_cpu(pgid: int, seen: dict) -> None:
    """Record the CPU seconds of every process in group ``pgid`` (a search and its workers) in ``seen``
    (pid -> seconds so far): a worker killed with its search still counts what it had spent."""
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended meanwhile
        if int(fields[2]) == pgid:  # after the name: state, ppid, pgrp, ..., utime (12th), stime (13th)
            seen[int(stat.parent.name)] = (int(fields[11]) + int(fields[12])) / tick


def launch(cmd: list[str], cwd: Path, env: dict, cap_s: float, log: Path) -> dict:
    """Run ``cmd`` in its own process group for at most ``cap_s`` seconds (then SIGTERM to the group,
    SIGKILL after ``STOP_WAIT_S``); its output goes to ``log``. Returns wall and CPU seconds (of the
    whole group), the exit status and what stopped it."""
    cpu: dict = {}
    t0 = time.time()
    load = os.getloadavg()[0]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        stopped_by = "itself"
        try:
            while proc.poll() is None:
                group_cpu(proc.pid, cpu)
                if time.time() - t0 > cap_s:
                    stopped_by = "the cap"
                    _stop(proc)
                    break
                time.sleep(0.5)
        except BaseException:  # an interrupted study leaves no search running in its own session
            _stop(proc)
            raise
        proc.wait()
    try:  # workers the search left behind end with it
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return {"wall_s": round(time.time() - t0, 1), "cpu_s": round(sum(cpu.values()), 1), "rc": proc.returncode,
            "stopped_by": stopped_by, "load_at_start": round(load, 2)}


def _stop(proc) -> None:
    """SIGTERM to the search's process group (it writes what it has), SIGKILL if it lingers."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(STOP_WAIT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_search(name: str, work: Path, dataset: str, minutes: float, grace: float, rev: str) -> dict:
    """Search ``name`` for ``minutes`` (reused when ``WORK/<name>/done.json`` says it finished; an
    unfinished one starts again); returns its record: command, revision, wall and CPU seconds."""
    run_dir = work / name
    done = run_dir / "done.json"
    if done.is_file():
        return json.loads(done.read_text())
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a search cut short by an interrupt: its budget cannot be resumed
    run_dir.mkdir(parents=True)
    before = name == "before"
    cwd = worktree(rev, work) if before else ROOT
    limited = has_time_limit(rev) if before else True
    args = evolve_args(name, dataset, run_dir, minutes, limited)
    cmd = [sys.executable, "-m", "nlfs.evolve", *args]
    print(f"search {name}: {shlex.join(cmd[1:])} (in {cwd})", flush=True)
    env = dict(os.environ, PYTHONPATH=str(cwd))
    where = subprocess.run([sys.executable, "-c", "import nlfs; print(nlfs.__file__)"], cwd=cwd, env=env,
                           capture_output=True, text=True).stdout.strip()
    if not where.startswith(str(cwd)):
        raise RuntimeError(f"search {name}: python imports nlfs from {where or '(nowhere)'}, not from {cwd}")
    # a search without a time limit runs until the budget's end; one with it gets the grace to finish
    record = launch(cmd, cwd, env, 60 * (minutes + (grace if limited else 0)), run_dir / "evolve.log")
    record.update(name=name, revision=rev if before else git_head(), command=shlex.join(["python", *cmd[1:]]),
                  minutes=minutes, screen_minutes=minutes - TAIL_MINUTES[name])
    if not (run_dir / "run.db").is_file():
        raise RuntimeError(f"search {name} wrote no run.db (exit {record['rc']}); see {run_dir / 'evolve.log'}")
    done.write_text(json.dumps(record, indent=1))
    return record


def next_commit(rev: str) -> str:
    """The commit after ``rev`` on the way to HEAD, as ``<hash> <subject>`` ("" if none)."""
    out = subprocess.run(["git", "-C", str(ROOT), "rev-list", "--ancestry-path", "--reverse", f"{rev}..HEAD"],
                         capture_output=True, text=True).stdout.split()
    if not out:
        return ""
    return subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h %s", out[0]], capture_output=True,
                          text=True).stdout.strip()


def git_head() -> str:
    out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "nlfs"], capture_output=True,
                           text=True).stdout.strip()
    return (out.stdout.strip() or "?") + ("+changes" if dirty else "")


# -- a search's best, by its own report -----------------------------------------------------------------
def _proxy(values: list[float]) -> tuple[float | None, list | None]:
    """Mean and 95% interval of paired differences (None under two)."""
    from nlfs.stats import paired_test

    if not values:
        return None, None
    t = paired_test(values, [0.0] * len(values))
    mean = sum(values) / len(values)
    return mean, ([t.ci_low, t.ci_high] if len(values) > 1 and math.isfinite(t.ci_low) else None)


def candidates(run_dir: Path, top: int) -> list[dict]:
    """The search's ``top`` best (``best_candidates``: its report's ranking) and every leader it trained
    in its own target stage, each with its rank, the fitness the search gave it and where it was
    measured, and the search's own target check. CE in disguise (``known_twin``) is not counted
    nor judged (``judge`` False: it is CE, as the search's racing leaves it out too), only listed when
    it outranks a judged one."""
    from nlfs.losses import stored_class_reduction
    from nlfs.search import best_candidates, known_twin, read_run, row_name

    rows, config = read_run(run_dir)
    ranked = best_candidates(rows, 10**9)
    checked = {}
    for r in rows:
        if r.get("stage") == "target" and r["status"] != "baseline":
            checked[r.get("candidate") or r["id"]] = r
    normalise = config.get("grad_scale", "none") != "none"
    rungs = config.get("rungs") or []
    out, counted = [], 0
    for rank, r in enumerate(ranked, 1):
        cand = r.get("candidate") or r["id"]
        if counted >= top and cand not in checked:
            continue
        twin = known_twin(r, normalise) or ""
        if twin == "CE" and counted >= top:
            continue
        counted += twin != "CE"
        seeds = [s for s in (r.get("result") or {}).get("seeds", []) if not s.get("diverged")]
        proxy, proxy_ci = _proxy([s["paired"] for s in seeds if s.get("paired") is not None])
        spec = {k: v for k, v in (rungs[r.get("rung") or 0] if (r.get("rung") or 0) < len(rungs) else {}).items()
                if k != "seeds" and v is not None}
        where = f"rung {r.get('rung') or 0} ({', '.join(f'{k} {v}' for k, v in spec.items()) or 'base budget'}), " \
                f"{len(seeds)} seed(s)"
        own = None
        if cand in checked:
            t = checked[cand]
            tseeds = [s for s in (t.get("result") or {}).get("seeds", []) if not s.get("diverged")]
            d, ci = _proxy([s["paired"] for s in tseeds if s.get("paired") is not None])
            own = {"status": t["status"], "paired": d, "ci": ci, "seeds": len(tseeds)}
        out.append({"rank": rank, "id": r["id"], "name": row_name(r, run_dir), "expression": r["expression"],
                    "constants": dict(r.get("constants") or {}),
                    "class_reduction": stored_class_reduction(r, stored_class_reduction(config)),
                    "scale": float(r.get("scale") or 1.0), "same_as": twin, "judge": twin != "CE",
                    "fitness": r["fitness"], "proxy": proxy,
                    "proxy_ci": proxy_ci, "measured": where, "own_target": own})
    return out


# -- the judge ------------------------------------------------------------------------------------------
def judge_config(dataset: str, judge: str, target: str | None):
    """(TrainConfig of the judge's trainings without their seed, the regime in words)."""
    from nlfs.search import default_target, make_target, parse_target, training_regime
    from nlfs.train import TrainConfig

    base = TrainConfig(dataset=dataset, evaluate_test=True, threads=1, progress=False)
    if judge == "short":
        import dataclasses

        cfg = dataclasses.replace(base, **SHORT)
        return cfg, f"320 steps ({training_regime(cfg)})"
    t = make_target(parse_target(target) if target else default_target(dataset))
    cfg = t.apply(base)
    return cfg, f"{t.describe()} ({training_regime(cfg)})"


def loss_of(c: dict | None) -> dict | str:
    """What makes a judged loss what it is (CE for None)."""
    if c is None:
        return CE
    return {k: c[k] for k in ("expression", "constants", "class_reduction", "scale")}


def job(c: dict | None, cfg, seed: int) -> tuple[str, dict]:
    """(training key, payload) of loss ``c`` (None: CE) trained with ``cfg`` and ``seed``."""
    import dataclasses

    from nlfs.train import training_key

    train = dataclasses.replace(cfg, seed=seed).to_dict()
    key = training_key({"loss": loss_of(c), "train": train})
    payload = {"train": train, "seeds": [seed], "rejection": False}
    payload.update({"loss": CE} if c is None else {**loss_of(c), "name": c["name"]})
    return key, payload


def train_jobs(jobs: list[tuple[str, dict]], workers: int):
    """Yield (key, result) for each (key, payload) as it finishes, ``workers`` processes of one thread."""
    from nlfs.search import make_executor, run_jobs

    executor = make_executor("local", min(workers, max(len(jobs), 1)), threads=1)
    try:
        yield from run_jobs(executor, jobs)
    finally:
        executor.close()


class Judged:
    """The judged trainings by training key, in ``WORK/judged.json`` (written after each one)."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.is_file() else {}

    def put(self, key: str, record: dict) -> None:
        self.data[key] = record
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=0))
        os.replace(tmp, self.path)


def record_of(out: dict, seed: int) -> dict:
    """One judged training from ``evaluate_payload``'s result."""
    s = (out.get("per_seed") or [{}])[0]
    test = (out.get("result") or {}).get("test_acc")
    return {"seed": seed, "status": out["status"], "acc": s.get("acc"), "test_acc": test,
            "diverged": bool(s.get("diverged")), "reason": out.get("reason") or s.get("reason") or "",
            "wall_s": round(out.get("wall_time", 0.0), 1)}


def judge(losses: list[dict], cfg, seeds: list[int], judged: Judged, workers: int) -> int:
    """Train CE and every loss of ``losses`` with each seed where ``judged`` has no result yet (CE first,
    then by rank, so an interrupted judge has the searches' best first); returns how many trained."""
    todo, seen = [], set()
    for c in [None, *sorted(losses, key=lambda c: c["rank"])]:
        for seed in seeds:
            key, payload = job(c, cfg, seed)
            if key not in judged.data and key not in seen:
                seen.add(key)
                todo.append((key, payload))
    print(f"judge: {len(todo)} training(s) to run, {len(judged.data)} reused", flush=True)
    payloads = dict(todo)
    for key, out in train_jobs(todo, workers) if todo else ():
        seed = payloads[key]["seeds"][0]
        rec = record_of(out, seed)
        if rec["status"] == "error":  # not kept: an error is retried on resume
            print(f"judge: {payloads[key].get('name', CE)} seed {seed} failed: {rec['reason']}", flush=True)
            continue
        judged.put(key, rec)
        print(f"judge: {payloads[key].get('name', CE)} seed {seed}: {rec['status']}, validation accuracy "
              f"{rec['acc']}, {rec['wall_s']} s", flush=True)
    return len(todo)


def by_seed(c: dict | None, cfg, seeds: list[int], judged: Judged) -> dict[int, dict]:
    return {s: judged.data[k] for s in seeds if (k := job(c, cfg, s)[0]) in judged.data}


def compare(mine: dict[int, dict], ce: dict[int, dict], metric: str = "acc") -> dict:
    """Loss against CE on the seeds both have: mean paired difference, its 95% interval, wins; a
    diverged seed makes the loss ``diverged`` (no difference)."""
    from nlfs.stats import paired_by_key

    if any(r["diverged"] for r in mine.values()):
        return {"status": "diverged", "n": len(mine), "diverged": sum(r["diverged"] for r in mine.values())}
    a = {s: r[metric] for s, r in mine.items() if r.get(metric) is not None}
    b = {s: r[metric] for s, r in ce.items() if r.get(metric) is not None}
    if not set(a) & set(b):
        return {"status": "not judged", "n": 0}
    t = paired_by_key(a, b)
    ci = [t.ci_low, t.ci_high] if math.isfinite(t.ci_low) else ([t.mean_diff] * 2 if t.std_diff == 0 else None)
    return {"status": "ok", "n": t.n, "diff": t.mean_diff, "ci": ci, "wins": t.wins,
            "acc": sum(a.values()) / len(a), "ce": sum(b[s] for s in a if s in b) / t.n}


def standing(cmp: dict) -> str:
    """ahead / behind (the interval excludes 0), level within noise, or what kept it from a figure."""
    if cmp["status"] != "ok":
        return cmp["status"]
    ci = cmp["ci"]
    if ci is None:
        return "no interval"
    if ci[0] > 0:
        return "ahead"
    if ci[1] < 0:
        return "behind"
    return "level within noise"


def pp(cmp: dict) -> str:
    """A comparison's difference in pp with its interval, the unit left to the caller (or why there is none)."""
    if cmp["status"] == "diverged":
        return f"diverged ({cmp['diverged']} of {cmp['n']} seeds)"
    if cmp["status"] != "ok":
        return cmp["status"]
    return format_pp(cmp["diff"], cmp["ci"], unit="")


def verdict(results: list[dict], regime: str) -> str:
    """One line from the numbers: each search's best (``best``: its first judged candidate) against CE
    in the judge's regime, and whether any judged candidate is ahead."""
    firsts = [r for r in results if r["best"]]
    if not firsts:
        return "no search produced a candidate"
    parts = [f"{r['label']} {pp(r['val'])} pp ({standing(r['val'])}"
             + (f"; test {pp(r['test'])} pp)" if r.get("test", {}).get("status") == "ok" else ")")
             if r["val"]["status"] == "ok" else f"{r['label']} {pp(r['val'])}" for r in firsts]
    ahead = [r["label"] for r in firsts if standing(r["val"]) == "ahead"]
    head = (f"the best of {', '.join(ahead)} is ahead of CE" if ahead else "no search's best is ahead of CE")
    others = [r for r in results if not r["best"] and standing(r["val"]) == "ahead"]
    tail = ("; also ahead: " + ", ".join(f"{r['label']} #{r['rank']} {pp(r['val'])} pp" for r in others)
            if others else f"; none of the {len(results)} judged candidates is ahead" if not ahead else "")
    return f"{head} in the {regime.split(' (')[0]} (validation accuracy vs CE, same seeds, 95% interval): " \
           f"{'; '.join(parts)}{tail}."


def between(results: list[dict]) -> list[tuple[str, dict]]:
    """Each pair of searches' bests compared directly, seed by seed (``per_seed``)."""
    firsts = [r for r in results if r["best"] and r["val"]["status"] == "ok"]
    return [(f"{b['label']} - {a['label']}", compare(b["per_seed"], a["per_seed"]))
            for i, a in enumerate(firsts) for b in firsts[i + 1:]]


# -- the report -----------------------------------------------------------------------------------------
COLUMNS = ["dataset", "judge_regime", "search", "revision", "rank", "name", "expression", "same_as", "scale",
           "search_fitness", "search_measured", "search_target_pp", "seeds", "acc", "ce_acc", "diff_pp",
           "ci_low_pp", "ci_high_pp", "wins", "standing", "test_acc", "ce_test_acc", "test_diff_pp",
           "test_ci_low_pp", "test_ci_high_pp"]


def _f(x, scale=1.0, digits=4):
    return "" if x is None else f"{scale * x:.{digits}f}"


def csv_row(r: dict, dataset: str, regime: str) -> dict:
    v, t = r["val"], r["test"]
    ok, tok = v["status"] == "ok", t["status"] == "ok"
    own = r["own_target"]
    return {"dataset": dataset, "judge_regime": regime, "search": r["search"], "revision": r["revision"],
            "rank": r["rank"], "name": r["name"], "expression": r["expression"], "same_as": r["same_as"],
            "scale": f"{r['scale']:.6g}", "search_fitness": _f(r["fitness"]), "search_measured": r["measured"],
            "search_target_pp": "" if own is None else format_pp(own["paired"], own["ci"], unit=""),
            "seeds": v.get("n", 0), "acc": _f(v.get("acc")), "ce_acc": _f(v.get("ce")),
            "diff_pp": _f(v.get("diff"), 100, 3),
            "ci_low_pp": _f(v["ci"][0], 100, 3) if ok and v["ci"] else "",
            "ci_high_pp": _f(v["ci"][1], 100, 3) if ok and v["ci"] else "", "wins": v.get("wins", ""),
            "standing": standing(v), "test_acc": _f(t.get("acc")), "ce_test_acc": _f(t.get("ce")),
            "test_diff_pp": _f(t.get("diff"), 100, 3),
            "test_ci_low_pp": _f(t["ci"][0], 100, 3) if tok and t["ci"] else "",
            "test_ci_high_pp": _f(t["ci"][1], 100, 3) if tok and t["ci"] else ""}


def write_outputs(results, searches, pairs, ce, regime, args, command, cost) -> str:
    """The CSV and the Markdown report; returns the Markdown."""
    before_note = ""
    if any(s["name"] == "before" for s in searches):
        has = "has" if has_target_regime(args.before) else "has no"
        after = next_commit(args.before)
        before_note = f"`before` is {args.before} (its tree {has} nlfs/search/_target.py)" + (
            f"; the commit after it: `{after[:120]}`." if after else ".")
    name = args.dataset.replace("-", "_")
    stem = f"search_before_after_{name}" if args.judge == "short" else f"search_before_after_target_{name}"
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    with (out / f"{stem}.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(csv_row(r, args.dataset, regime) for r in results)
    ce_val = [r["acc"] for r in ce.values() if r.get("acc") is not None]
    ce_test = [r["test_acc"] for r in ce.values() if r.get("test_acc") is not None]
    lines = [f"# The README search before and after the target regime, judged in the "
             f"{'target' if args.judge == 'target' else '320-step regime'} ({args.dataset})", "",
             f"{today()}, {machine_name()}. Command: `{command}`.", "",
             f"**Verdict:** {verdict(results, regime)}", "",
             "## The searches", "",
             *([before_note, ""] if before_note else []),
             f"Each search had {args.minutes:g} minutes of wall time on this machine, one after another: it "
             f"screened for that less what it does after screening, and was to be stopped {args.grace:g} "
             "minutes after its budget. Fitness below is the search's own, at its screening rungs (a proxy).", "",
             "| search | revision | what | command | screening | wall s | CPU s | load at start | stopped by |",
             "|---|---|---|---|---:|---:|---:|---:|---|"]
    for s in searches:
        lines.append(f"| {s['label']} | {s['revision']} | {s['what']} | `{s['command']}` | "
                     f"{s['screen_minutes']:g} min | {s['wall_s']:.0f} | {s['cpu_s']:.0f} | {s['load_at_start']:g} "
                     f"| {s['stopped_by']} |")
    lines += ["", "## Judged", "",
              f"Regime of every figure in this section: {regime}. Seeds {args.seeds}, none of which a search "
              f"trained with; CE trained once per seed ({_f(sum(ce_val) / len(ce_val)) if ce_val else '-'} mean "
              f"best validation accuracy, {_f(sum(ce_test) / len(ce_test)) if ce_test else '-'} test accuracy of "
              "the final model). Each loss is trained as its search exports it (expression, constants, the "
              "gradient scale the search recorded), CE as is. Δ: the loss's accuracy minus CE's with the same "
              "seed, mean in pp [95% t-interval]; validation is best over the training's evaluations "
              "(the split the searches selected on), test is the final model's (a split no search saw). "
              "Candidates: each search's best "
              f"{args.top} by its own ranking (highest rung, then fitness; rank: its place there), and every "
              "leader its own target stage trained; CE in disguise is not judged (it is CE)"
              + (": " + "; ".join(f"{s['label']} {', '.join(s['skipped'])}" for s in searches if s.get("skipped"))
                 if any(s.get("skipped") for s in searches) else "")
              + ". A search's best: its first judged candidate (in bold).", "",
              "| search | rank | loss | formula as trained | search's fitness, pp [CI] (measured at) | "
              "search's own target check, pp [CI] | Δ val vs CE, pp [CI] | wins | Δ test vs CE, pp [CI] |",
              "|---|---:|---|---|---|---|---|---:|---|"]
    for r in results:
        twin = f" [= {r['same_as']}]" if r["same_as"] else ""
        own = r["own_target"]
        own_text = "-" if own is None else (f"{format_pp(own['paired'], own['ci'], unit='')} ({own['seeds']} seed(s))"
                                            if own["status"] == "ok" else own["status"])
        fit = format_pp(r["proxy"], r["proxy_ci"], unit="") if r["proxy"] is not None else f"{r['fitness']:.4f}"
        name = f"**{r['name']}**" if r["best"] else r["name"]
        lines.append(f"| {r['label']} | {r['rank']} | {name} | `{r['expression']}`{twin} | {fit} "
                     f"({r['measured']}) | {own_text} | {pp(r['val'])} | "
                     f"{r['val'].get('wins', '-')}/{r['val'].get('n', 0)} | {pp(r['test'])} |")
    if pairs:
        lines += ["", "Searches' bests against each other (validation accuracy, same seeds, pp [95% CI]): "
                  + "; ".join(f"{k} {pp(c)}" for k, c in pairs) + "."]
    lines += ["", f"Cost: {cost}."]
    md = "\n".join(lines) + "\n"
    (out / f"{stem}.md").write_text(md)
    return md


# -- the command line -----------------------------------------------------------------------------------
def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m bench.search_before_after", description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", default=BEFORE, help="the revision of the 'before' search (default: %(default)s, "
                    "the commit before the first target-regime commit)")
    ap.add_argument("--searches", default="before,now,now-no-target",
                    help=f"which searches, in order (of {', '.join(TAIL_MINUTES)}; default: %(default)s)")
    ap.add_argument("--minutes", type=float, default=6.5, help="wall-clock budget of each search (default: "
                    "%(default)s, the README's quick preset in all)")
    ap.add_argument("--grace", type=float, default=3.0, help="minutes past the budget before a search is stopped")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--top", type=int, default=2, help="each search's best by its own ranking to judge")
    ap.add_argument("--judge", default="target", choices=["target", "short"],
                    help="target: the dataset's target regime (default); short: 320 steps (the older report)")
    ap.add_argument("--target", default=None, metavar="SPEC", help="the judge's regime as nlfs.evolve's --target "
                    "(default: the dataset's, nlfs.search.default_target)")
    ap.add_argument("--seeds", default=",".join(map(str, DEFAULT_SEEDS)), help="the judge's seeds")
    ap.add_argument("--workers", type=int, default=2, help="judged trainings at once, one thread each")
    ap.add_argument("--work", default="runs/before_after_target", help="searches and judged trainings (resumable)")
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--report-only", action="store_true", help="write the report from what WORK holds; train "
                    "nothing")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.searches.split(",") if n.strip()]
    bad = [n for n in names if n not in TAIL_MINUTES]
    if bad or not names:
        ap.error(f"--searches: unknown {', '.join(bad) or '(none given)'}; known: {', '.join(TAIL_MINUTES)}")
    short = [n for n in names if args.minutes - TAIL_MINUTES[n] <= 0]
    if short:
        ap.error(f"--minutes {args.minutes:g}: {', '.join(short)} needs more than {TAIL_MINUTES[short[0]]:g} "
                 "(its time after screening)")
    try:
        args.seeds = sorted({int(s) for s in args.seeds.split(",") if s.strip()})
    except ValueError:
        ap.error(f"--seeds: expected integers separated by commas, got {args.seeds!r}")
    if len(args.seeds) < 2:
        ap.error("--seeds: an interval needs at least 2 seeds")
    if args.top < 1 or args.workers < 1:
        ap.error("--top and --workers must be >= 1")
    if args.target is not None:
        from nlfs.search import parse_target

        try:
            parse_target(args.target)
        except ValueError as err:
            ap.error(str(err))
    if "before" in names and subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet",
                                             f"{args.before}^{{commit}}"], capture_output=True).returncode:
        ap.error(f"--before: {args.before!r} is not a revision of this repository")
    args.names = names
    return args


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    command = shlex.join(["python", "-m", "bench.search_before_after", *argv])
    work = (ROOT / args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if "before" in args.names and has_target_regime(args.before):
        print(f"note: {args.before} already has the target regime (nlfs/search/_target.py)", file=sys.stderr)
    searches = []
    for name in args.names:
        done = work / name / "done.json"
        if args.report_only and not done.is_file():
            print(f"search {name}: not finished in {work}; left out", file=sys.stderr)
            continue
        rec = run_search(name, work, args.dataset, args.minutes, args.grace, args.before)
        label = f"before ({rec['revision']})" if name == "before" else name
        searches.append({**rec, "label": label, "what": SEARCH_WHAT[name].format(rev=args.before)})
    if not searches:
        print(f"python -m bench.search_before_after: error: no finished search in {work}; nothing to report",
              file=sys.stderr)
        return 2
    cfg, regime = judge_config(args.dataset, args.judge, args.target)
    found = {s["name"]: candidates(work / s["name"], args.top) for s in searches}
    judged = Judged(work / "judged.json")
    if not args.report_only:
        judge([c for cs in found.values() for c in cs if c["judge"]], cfg, args.seeds, judged, args.workers)
    ce = by_seed(None, cfg, args.seeds, judged)
    results = []
    for s in searches:
        mine = [c for c in found[s["name"]] if c["judge"]]
        s["skipped"] = [f"{c['name']} (rank {c['rank']})" for c in found[s["name"]] if not c["judge"]]
        for c in mine:
            seeds = by_seed(c, cfg, args.seeds, judged)
            results.append({**c, "search": s["name"], "label": s["label"], "revision": s["revision"],
                            "best": c is mine[0], "per_seed": seeds, "val": compare(seeds, ce, "acc"),
                            "test": compare(seeds, ce, "test_acc")})
    walls = [r["wall_s"] for r in judged.data.values()]
    cost = (f"{len(walls)} judged trainings, {sum(walls) / 3600:.2f} hours of one-thread training "
            f"({sum(walls) / max(len(walls), 1):.0f} s each on average); searches "
            f"{sum(s['cpu_s'] for s in searches) / 3600:.2f} CPU-hours")
    md = write_outputs(results, searches, between(results), ce, regime, args, command, cost)
    print(md)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)  # a stopped study stops its search and its trainings too
    sys.exit(main())
