"""run_jobs, the one submit/wait loop: completion order, a lazily pulled job source, interrupts that end
the workers; executors train with a set number of threads."""

import os
import signal
import time

import pytest
import torch

import nlfs.train
from nlfs.search import InlineExecutor, ProcessExecutor, default_threads, make_executor, run_jobs
from tests.processes import alive


class ReversedExecutor:
    """``slots`` jobs in flight; the last submitted finishes first. Records every submission."""

    def __init__(self, slots=3):
        self.slots, self.submitted, self.closed = slots, [], 0

    def submit(self, payload):
        self.submitted.append(payload)
        return len(self.submitted) - 1

    def wait_one(self, handles):
        h = max(handles)
        return h, {"status": "ok", "echo": self.submitted[h]}

    def close(self):
        self.closed += 1


def test_every_job_is_yielded_once_in_the_order_they_finish():
    ex = ReversedExecutor(slots=3)
    got = [(job, out["echo"]) for job, out in run_jobs(ex, [(i, f"p{i}") for i in range(7)])]
    assert sorted(got) == [(i, f"p{i}") for i in range(7)]
    assert [j for j, _ in got][:3] == [2, 3, 4]  # the third submitted came back first, then refills
    assert ex.closed == 0  # a loop that ran to its end leaves the executor to its owner


def test_the_source_is_pulled_only_when_a_slot_is_free_and_may_depend_on_results():
    ex = ReversedExecutor(slots=2)
    told: list = []
    pulls: list = []

    def source():  # an ask-and-tell algorithm: job n+2 needs the result of job n
        n = len(pulls)
        if n >= 6:
            return None
        if n >= 2 and n - 2 not in told:
            return None  # nothing now: wait for a result
        pulls.append(n)
        return n, n

    seen = []
    for job, _ in run_jobs(ex, source):
        seen.append((job, len(pulls)))
        told.append(job)
    assert sorted(j for j, _ in seen) == list(range(6))
    assert seen[0] == (1, 2)  # two pulled (the slots), not all six, before the first result


def test_nothing_now_with_nothing_in_flight_ends_the_loop():
    assert list(run_jobs(ReversedExecutor(), lambda: None)) == []


def test_an_exception_in_the_loop_stops_the_executor():
    class Failing(ReversedExecutor):
        def wait_one(self, handles):
            raise KeyboardInterrupt

    ex = Failing()
    with pytest.raises(KeyboardInterrupt):
        list(run_jobs(ex, [(1, 1), (2, 2)]))
    assert ex.closed == 1  # no terminate method: its close ends it


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")
def test_interrupt_in_the_consumer_ends_the_worker_processes(capfd):
    """Ctrl-C while a worker trains: the workers ignore SIGINT themselves (no traceback of theirs) and the
    driver's interrupt terminates them; the result that came first was yielded."""
    ex = ProcessExecutor(2, threads=1)
    pids = [w.proc.pid for w in ex.workers]
    quick = {"loss": "CE", "train": {"no_such_field": 1}}  # an error result at once
    slow = {"loss": "CE", "rejection": False,
            "train": dict(dataset="digits", steps=100_000, train_size=400, val_size=200, backend="torch",
                          evaluate_test=False)}
    got = []
    try:
        with pytest.raises(KeyboardInterrupt):
            for job, out in run_jobs(ex, [("quick", quick), ("quick", quick), ("slow", slow)]):
                got.append((job, out["status"]))
                if len(got) < 2:
                    continue
                time.sleep(2)  # the slow one is training now
                for pid in pids:
                    os.kill(pid, signal.SIGINT)  # a terminal's Ctrl-C reaches every process in its group
                time.sleep(1)
                assert all(alive(p) for p in pids)  # ignored by the workers: the driver decides
                raise KeyboardInterrupt
        deadline = time.time() + 10
        while time.time() < deadline and any(alive(p) for p in pids):
            time.sleep(0.1)
        assert not any(alive(p) for p in pids), "a worker kept training after the interrupt"
        assert got == [("quick", "error"), ("quick", "error")]
    finally:
        ex.close()
    assert "Traceback" not in capfd.readouterr().err


def _fake_train(seen):
    def train(loss, cfg, constants=None):
        seen.append((torch.get_num_threads(), os.environ.get("NLFS_CPP_THREADS")))
        return nlfs.train.TrainResult(val_acc=0.5, best_val_acc=0.5, test_acc=None, final_train_loss=0.1,
                                      train_acc=0.5, steps=1, epochs=1.0, wall_time=0.0, device="cpu",
                                      dataset=cfg.dataset, model=cfg.model, augment=cfg.augment, seed=cfg.seed,
                                      loss=str(loss), loss_text="", backend="torch", diverged=False, reason="")

    return train


def test_the_inline_executor_trains_with_its_threads_and_restores_them(monkeypatch):
    seen: list = []
    monkeypatch.setattr(nlfs.train, "train", _fake_train(seen))
    monkeypatch.setenv("NLFS_CPP_THREADS", "7")
    old = torch.get_num_threads()
    want = 1 if old != 1 else 2
    ex = make_executor("local", 1, threads=want)
    assert isinstance(ex, InlineExecutor)
    ((_, out),) = run_jobs(ex, [(0, {"loss": "CE", "rejection": False, "train": {"dataset": "digits"}})])
    assert out["status"] == "ok"
    assert seen == [(want, str(want))]
    assert torch.get_num_threads() == old and os.environ["NLFS_CPP_THREADS"] == "7"


def test_every_executor_has_a_set_thread_count():
    assert make_executor("local", 1).threads == default_threads(1) == max(1, os.cpu_count() or 1)
    assert default_threads(2) == max(1, (os.cpu_count() or 1) // 2)
    assert make_executor("local", 1, threads=3).threads == 3


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")
def test_a_worker_ignores_ctrl_c_while_it_starts(capfd):
    ex = ProcessExecutor(1, threads=1)
    try:
        pid = ex.workers[0].proc.pid
        os.kill(pid, signal.SIGINT)  # still importing torch: the disposition came with the process
        ((_, out),) = run_jobs(ex, [(0, {"loss": "CE", "train": {"no_such_field": 1}})])
        assert out["status"] == "error" and "no_such_field" in out["reason"] and alive(pid)
    finally:
        ex.close()
    assert "Traceback" not in capfd.readouterr().err
