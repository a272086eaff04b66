"""Parallel evaluation: local worker processes and a real local Ray instance on loopback."""

import os
import signal
import threading
import time

import pytest

from nlfs.search import ProcessExecutor, SearchConfig
from tests.processes import alive, children
from tests.runs import run_search

FAST = dict(dataset="digits", steps=40, train_size=400, val_size=200, backend="torch", progress=False,
            baseline=False)


def _cfg(run_dir, **kw):
    base = dict(run_dir=str(run_dir), algorithm="gp", space="gp", budget=4, gp_population=4, seed=2, **FAST)
    base.update(kw)
    return SearchConfig(**base)


def _records(rows):
    return sorted((r["expression"], r["status"], r["fitness"]) for r in rows)


def test_worker_killed_mid_evaluation_costs_only_its_candidate(tmp_path):
    executor = ProcessExecutor(2, threads=1)
    killed = {}

    def assassin():
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            busy = [w for w in executor.workers if w.handle is not None]
            if len(busy) == 2:
                time.sleep(1.0)  # let it get into training
                w = busy[0]
                killed["pid"] = w.proc.pid
                os.kill(w.proc.pid, signal.SIGKILL)
                return
            time.sleep(0.02)

    t = threading.Thread(target=assassin, daemon=True)
    t.start()
    try:
        rows = run_search(_cfg(tmp_path / "run", algorithm="regularized", space="nlfs", population=2, sample=2,
                              initial=2, budget=4), executor)
    finally:
        executor.close()
    t.join(timeout=5)
    assert killed, "no worker was killed"
    errors = [r for r in rows if r["status"] == "error"]
    assert len(errors) == 1 and "worker died" in errors[0]["reason"]
    trained = [r for r in rows if r["status"] in ("ok", "diverged", "error")
               and not (r.get("reason") or "").startswith("fitness reused")]
    assert len(trained) == 4  # the search went on to spend its budget


@pytest.fixture(scope="module")
def pool_records(tmp_path_factory):
    """GP records from two local worker processes (one torch thread each)."""
    executor = ProcessExecutor(2, threads=1)
    try:
        return _records(run_search(_cfg(tmp_path_factory.mktemp("pool"), workers=2), executor))
    finally:
        executor.close()


def test_two_local_workers_give_the_same_gp_records_as_one(tmp_path, pool_records):
    executor = ProcessExecutor(1, threads=1)  # same thread count: CPU convolutions sum in the same order
    try:
        one = _records(run_search(_cfg(tmp_path / "one"), executor))
    finally:
        executor.close()
    assert one == pool_records


def test_ray_executor_matches_the_local_pool(tmp_path, pool_records):
    ray = pytest.importorskip("ray")
    from nlfs.search import RayExecutor

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    executor = RayExecutor(2, threads=1)
    try:
        got = _records(run_search(_cfg(tmp_path / "ray", workers=2, executor="ray"), executor))
    finally:
        executor.close()
        ray.shutdown()
    assert got == pool_records


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs Linux /proc")
def test_workers_stop_when_the_driver_is_killed(tmp_path):
    """A SIGKILLed driver's workers stop within seconds, not at the end of their candidate."""
    import subprocess
    import sys

    code = ("from nlfs.search import Search, SearchConfig\n"
            f"cfg = SearchConfig(run_dir={str(tmp_path / 'run')!r}, algorithm='gp', space='gp', budget=4, "
            "gp_population=4, seed=2, dataset='digits', steps=100000, train_size=400, val_size=200, "
            "backend='torch', progress=False, baseline=False, workers=2, filters=('validity',))\n"
            "Search(cfg).run()\n")
    driver = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.time() + 120
        workers = set()
        while time.time() < deadline and len(workers) < 2:
            time.sleep(0.5)
            workers = {p for p in children(driver.pid) if alive(p)}
            workers = {p for p in workers if "spawn_main" in open(f"/proc/{p}/cmdline").read()}
        assert len(workers) == 2, "the workers never started"
        time.sleep(3)  # they are training now (100,000 steps: minutes)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        t0 = time.time()
        while time.time() - t0 < 10 and any(alive(p) for p in workers):
            time.sleep(0.2)
        assert not any(alive(p) for p in workers), "workers outlived their driver by 10 s"
    finally:
        if driver.poll() is None:
            driver.kill()


def test_a_result_says_its_cpu_time_beside_its_wall_time():
    from nlfs.search import evaluate_payload
    from nlfs.train import TrainConfig

    train = TrainConfig(dataset="digits", steps=5, train_size=200, val_size=100, backend="torch", progress=False)
    out = evaluate_payload({"loss": "CE", "train": train.to_dict(), "rejection": False})
    assert out["status"] == "ok" and 0 < out["cpu_time"] and out["wall_time"] > 0



def test_a_bad_score_fails_the_job_before_any_training(monkeypatch):
    import nlfs.train
    from nlfs.search import evaluate_payload
    from nlfs.train import TrainConfig

    monkeypatch.setattr(nlfs.train, "train", lambda *a, **k: pytest.fail("trained"))
    train = TrainConfig(dataset="digits", steps=5, train_size=200, val_size=100, backend="torch", progress=False)
    bad = evaluate_payload({"loss": "CE", "train": train.to_dict(), "score": "peak"})
    assert bad["status"] == "error" and "score must be one of" in bad["reason"] and bad["cpu_time"] >= 0
