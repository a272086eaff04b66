"""Where candidates train: inline, a pool of local worker processes, or Ray actors.

Every executor has ``slots`` (how many candidates may be in flight), ``submit(payload) -> handle``
and ``wait_one(handles) -> (handle, result)``. A worker that dies (segfault, OOM kill) costs only
its own candidate, which comes back as an ``error`` result with the reason; the worker is replaced.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
from multiprocessing.connection import wait


def make_executor(kind: str = "local", workers: int = 1, address: str | None = None, threads: int | None = None):
    """``threads``: CPU threads per training (None: the cores shared among the workers; in this
    process, torch's setting)."""
    if kind == "ray":
        return RayExecutor(max(workers, 1), address, threads)
    if kind != "local":
        raise ValueError(f"unknown executor {kind!r}; choose local or ray")
    return InlineExecutor(threads) if workers <= 1 else ProcessExecutor(workers, threads)


class InlineExecutor:
    slots = 1

    def __init__(self, threads: int | None = None):
        self._results: dict[int, dict] = {}
        self._ids = itertools.count()
        self.threads = threads

    def submit(self, payload: dict) -> int:
        import torch

        from ._worker import evaluate_payload

        handle = next(self._ids)
        old = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            self._results[handle] = evaluate_payload(payload)
        finally:
            torch.set_num_threads(old)
        return handle

    def wait_one(self, handles):
        h = handles[0]
        return h, self._results.pop(h)

    def close(self):
        pass


def _die_with_parent(parent: int) -> None:
    """A worker whose driver is SIGKILLed must not train its candidate to the end: on Linux the
    kernel kills it with its parent (PR_SET_PDEATHSIG); elsewhere a thread notices the re-parenting."""
    import signal
    import threading
    import time

    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="nlfs-parent-watch").start()


def _worker_main(conn, threads: int, parent: int | None = None):
    import signal

    # Ctrl-C reaches the whole process group: the driver alone handles it (and ends the workers)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent is not None:
        _die_with_parent(parent)
    import torch

    torch.set_num_threads(threads)
    os.environ.setdefault("NLFS_CPP_THREADS", str(threads))
    from ._worker import evaluate_payload

    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        handle, payload = msg
        conn.send((handle, evaluate_payload(payload)))


class _Worker:
    def __init__(self, ctx, threads: int):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, threads, os.getpid()), daemon=True)
        self.proc.start()
        child.close()
        self.handle = None


class ProcessExecutor:
    """``workers`` spawned processes, each training one candidate at a time (steady state: a worker
    that finishes gets the next candidate at once)."""

    def __init__(self, workers: int, threads: int | None = None):
        self.ctx = mp.get_context("spawn")
        self.threads = threads or max(1, (os.cpu_count() or 1) // workers)
        self.workers = [_Worker(self.ctx, self.threads) for _ in range(workers)]
        self.slots = workers
        self._ids = itertools.count()
        self._done: dict[int, dict] = {}

    def submit(self, payload: dict) -> int:
        worker = next(w for w in self.workers if w.handle is None)
        handle = next(self._ids)
        worker.handle = handle
        worker.conn.send((handle, payload))
        return handle

    def wait_one(self, handles):
        while True:
            for h in handles:
                if h in self._done:
                    return h, self._done.pop(h)
            busy = [w for w in self.workers if w.handle is not None]
            ready = wait([w.conn for w in busy] + [w.proc.sentinel for w in busy])
            for i, w in enumerate(self.workers):
                if w.handle is None:
                    continue
                if w.conn in ready:
                    try:
                        handle, result = w.conn.recv()
                    except (EOFError, OSError):
                        w.proc.join(timeout=5)
                        self._replace(i, f"worker died (connection closed, exit code {w.proc.exitcode})")
                        continue
                    self._done[handle] = result
                    w.handle = None
                elif w.proc.sentinel in ready:
                    self._replace(i, f"worker died (exit code {w.proc.exitcode})")

    def _replace(self, i: int, reason: str):
        w = self.workers[i]
        self._done[w.handle] = {"status": "error", "reason": reason, "fitness": None, "wall_time": 0.0}
        w.proc.join(timeout=1)
        self.workers[i] = _Worker(self.ctx, self.threads)

    def close(self):
        for w in self.workers:
            try:
                w.conn.send(None)
            except (OSError, BrokenPipeError):
                pass
        for w in self.workers:
            w.proc.join(timeout=5)
            if w.proc.is_alive():
                w.proc.kill()


class RayExecutor:
    """One Ray actor per worker (per GPU when the cluster has GPUs); ``ray.wait`` refills the
    steady-state loop. ``address`` None starts a local Ray instance."""

    def __init__(self, workers: int, address: str | None = None, threads: int | None = None):
        try:
            import ray
        except ImportError as err:
            raise RuntimeError("the Ray executor needs ray: pip install 'nlfs[ray]'") from err
        self.ray = ray
        if not ray.is_initialized():
            if address:
                ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
            else:
                ray.init(num_cpus=max(workers, 1), include_dashboard=False, ignore_reinit_error=True,
                         log_to_driver=False, _node_ip_address="127.0.0.1")
        gpus = ray.cluster_resources().get("GPU", 0)
        self._actor_cls = ray.remote(num_gpus=1 if gpus >= workers else 0, num_cpus=1, max_restarts=0)(_RayWorker)
        self.threads = threads or max(1, (os.cpu_count() or 1) // workers)
        self.actors = [self._actor_cls.remote(self.threads) for _ in range(workers)]
        self.busy: dict = {}  # ref -> actor index
        self.slots = workers

    def submit(self, payload: dict):
        idle = next(i for i in range(len(self.actors)) if i not in self.busy.values())
        ref = self.actors[idle].evaluate.remote(payload)
        self.busy[ref] = idle
        return ref

    def wait_one(self, handles):
        ray = self.ray
        (ref,), _ = ray.wait(list(handles), num_returns=1)
        i = self.busy.pop(ref)
        try:
            return ref, ray.get(ref)
        except ray.exceptions.RayError as err:
            self.actors[i] = self._actor_cls.remote(self.threads)
            return ref, {"status": "error", "reason": f"worker died: {type(err).__name__}", "fitness": None,
                         "wall_time": 0.0}

    def close(self):
        for a in self.actors:
            try:
                self.ray.kill(a)
            except Exception:
                pass


class _RayWorker:
    def __init__(self, threads: int):
        import torch

        torch.set_num_threads(threads)
        os.environ.setdefault("NLFS_CPP_THREADS", str(threads))

    def evaluate(self, payload: dict) -> dict:
        from nlfs.search._worker import evaluate_payload

        return evaluate_payload(payload)
