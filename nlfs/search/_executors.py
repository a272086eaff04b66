"""Where trainings run: inline, a pool of local worker processes, or Ray actors, and the one loop that
feeds them (:func:`run_jobs`).

Every executor has ``slots`` (how many jobs may be in flight), ``submit(payload) -> handle``,
``wait_one(handles) -> (handle, result)``, ``close()`` and ``terminate()`` (stop now, work in flight
lost). A payload is what :func:`nlfs.search.evaluate_payload` takes. A worker that dies (segfault,
OOM kill) costs only its own job, which comes back as an ``error`` result with the reason; the
worker is replaced. Every executor trains with a set number of torch (and C++ evaluator) threads:
several trainings sharing a machine must not each take every core.

``shared`` (e.g. ``{"fitness": f}``, a user's fitness function) reaches each worker once, not with
every payload: inline, by reference (it runs in this process); to a worker process, pickled by value
with cloudpickle when the worker starts (so a function defined in a notebook or a script's
``__main__`` works, closures and the data they hold included); to Ray actors, ``ray.put`` once and
handed to each actor as it starts.

:class:`PackingExecutor` wraps any of them: jobs that train the same budget (equal ``train`` dict and
seeds) go to a worker together, as one ``{"pack": [...]}`` payload trained in one packed network.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing as mp
import os
from multiprocessing.connection import wait


def default_threads(workers: int) -> int:
    """Threads per training when ``workers`` train at once: an equal share of the cores."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def default_workers(device: str) -> int:
    """One worker per core on a CPU (each trains with one thread: two threads per worker on busy
    cores are many times slower), one on a GPU."""
    import torch

    if device != "cpu" and (device.startswith("cuda") or torch.cuda.is_available()):
        return 1
    return max(1, min(os.cpu_count() or 1, 8))


def make_executor(kind: str = "local", workers: int = 1, address: str | None = None,
                  threads: int | None = None, shared: dict | None = None, pack: int = 1):
    """``local`` (inline with one worker, else that many processes) or ``ray``; each training uses
    ``threads`` threads (default :func:`default_threads`); ``shared`` reaches every worker once.
    ``pack`` > 1 trains up to that many jobs of one budget as one packed network in a worker
    (:class:`PackingExecutor`: a GPU feature; on a CPU it is slower)."""
    if int(pack) < 1:
        raise ValueError(f"pack must be at least 1, got {pack}")
    threads = threads or default_threads(workers)
    if kind == "ray":
        inner = RayExecutor(max(workers, 1), address, threads, shared)
    elif kind != "local":
        raise ValueError(f"unknown executor {kind!r}; choose local or ray")
    else:
        inner = InlineExecutor(threads, shared) if workers <= 1 else ProcessExecutor(workers, threads, shared)
    return inner if int(pack) == 1 else PackingExecutor(inner, int(pack))


def _pickled(shared: dict | None) -> bytes | None:
    """``shared`` as bytes a worker process can load: cloudpickle, by value (functions of
    ``__main__`` or a notebook have no module a worker could import)."""
    if not shared:
        return None
    import cloudpickle

    return cloudpickle.dumps(shared)


def _install(blob: bytes | None) -> None:
    import pickle

    from ._worker import install_shared

    if blob is not None:
        install_shared(pickle.loads(blob))


def run_jobs(executor, jobs):
    """Run jobs on ``executor``, yielding ``(job, result)`` as each finishes (in the order they finish).

    ``jobs`` gives ``(job, payload)`` pairs: an iterable, or a callable. It is pulled only when a slot
    is free, so a job may depend on results already yielded (an algorithm's ask after its tell); a
    callable (or an iterable's item) may give ``None`` for "nothing now", which ends the loop once
    nothing is in flight; an iterable also ends when exhausted. Callers record each result as it
    comes, so a killed run resumes from what was yielded. On an exception or interrupt raised here,
    and when the consumer raises or stops while jobs are in flight, the executor is terminated
    (``terminate``, else ``close``): nothing keeps training."""
    pull = jobs if callable(jobs) else _puller(iter(jobs))
    in_flight: dict = {}  # handle -> job
    try:
        while True:
            while len(in_flight) < executor.slots:
                item = pull()
                if item is None or item is _EXHAUSTED:
                    break
                job, payload = item
                in_flight[executor.submit(payload)] = job
            if not in_flight:
                return
            handle, result = executor.wait_one(list(in_flight))
            yield in_flight.pop(handle), result
    except GeneratorExit:  # the consumer stopped (or raised): what is in flight has no one to take it
        if in_flight:
            _stop(executor)
        raise
    except BaseException:
        _stop(executor)
        raise


def _stop(executor) -> None:
    """End the executor's workers now: ``terminate`` where it has one, else ``close``."""
    getattr(executor, "terminate", executor.close)()


_EXHAUSTED = object()


def _puller(iterator):
    def pull():
        return next(iterator, _EXHAUSTED)

    return pull


class _ThreadSetting:
    """Torch's and the C++ evaluator's thread counts set for one job, restored after it."""

    def __init__(self, threads: int):
        self.threads = threads

    def __enter__(self):
        import torch

        from ..backends import cpp_threads

        self.saved = (torch.get_num_threads(), os.environ.get("NLFS_CPP_THREADS"), cpp_threads())
        torch.set_num_threads(self.threads)
        os.environ["NLFS_CPP_THREADS"] = str(self.threads)
        if self.saved[2] is not None:
            cpp_threads(self.threads)
        return self

    def __exit__(self, *exc):
        import torch

        from ..backends import cpp_threads

        torch_threads, env, cpp = self.saved
        torch.set_num_threads(torch_threads)
        if env is None:
            os.environ.pop("NLFS_CPP_THREADS", None)
        else:
            os.environ["NLFS_CPP_THREADS"] = env
        if cpp is not None:
            cpp_threads(cpp)


class InlineExecutor:
    """Trains in this process, one job at a time (at submit), with ``threads`` threads."""

    slots = 1

    def __init__(self, threads: int | None = None, shared: dict | None = None):
        from ._worker import install_shared

        self.threads = threads or default_threads(1)
        self._results: dict[int, dict] = {}
        self._ids = itertools.count()
        if shared:
            install_shared(shared)
        self._shared = bool(shared)

    def submit(self, payload: dict) -> int:
        from ._worker import evaluate_payload

        handle = next(self._ids)
        with _ThreadSetting(self.threads):
            self._results[handle] = evaluate_payload(payload)
        return handle

    def wait_one(self, handles):
        h = handles[0]
        return h, self._results.pop(h)

    def close(self):
        from ._worker import SHARED

        self._results.clear()
        if self._shared:
            SHARED.clear()

    def terminate(self):
        self.close()


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


def _worker_main(conn, threads: int, parent: int | None = None, shared: bytes | None = None):
    import signal

    # Ctrl-C reaches the whole process group: the driver decides (it terminates the workers), so a
    # worker prints no traceback of its own
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent is not None:
        _die_with_parent(parent)
    import torch

    torch.set_num_threads(threads)
    os.environ["NLFS_CPP_THREADS"] = str(threads)
    _thread_lock_for_tqdm()
    import warnings

    from ..data import UnlearnableClassWarning
    from ._worker import evaluate_payload

    warnings.simplefilter("ignore", UnlearnableClassWarning)  # the driver said it when it checked the data
    _install(shared)
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        handle, payload = msg
        conn.send((handle, evaluate_payload(payload)))


def _thread_lock_for_tqdm() -> None:
    """tqdm's default lock is a multiprocessing semaphore (made even for a disabled bar): a worker
    ended by its driver would leave it behind, and the resource tracker warns about it at exit. A
    worker shares no progress bar with another process, so a thread lock does."""
    import threading

    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())


class _Worker:
    def __init__(self, ctx, threads: int, shared: bytes | None = None):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker_main, args=(child, threads, os.getpid(), shared), daemon=True)
        with _sigint_ignored():  # inherited through exec: the worker ignores Ctrl-C while it starts too
            self.proc.start()
        child.close()
        self.handle = None


class _sigint_ignored:
    """SIGINT ignored in this process for the block (only from the main thread; elsewhere a no-op)."""

    def __enter__(self):
        import signal
        import threading

        self.saved = None
        if threading.current_thread() is threading.main_thread():
            self.saved = signal.signal(signal.SIGINT, signal.SIG_IGN)

    def __exit__(self, *exc):
        import signal

        if self.saved is not None:
            signal.signal(signal.SIGINT, self.saved)


class ProcessExecutor:
    """``workers`` spawned processes, each training one job at a time (steady state: a worker that
    finishes gets the next job at once). They communicate through pipes only (no semaphore to leak
    when the driver is stopped)."""

    def __init__(self, workers: int, threads: int | None = None, shared: dict | None = None):
        self.ctx = mp.get_context("spawn")
        self.threads = threads or default_threads(workers)
        self.shared = _pickled(shared)  # pickled once, sent to each worker as it starts
        self.workers = [_Worker(self.ctx, self.threads, self.shared) for _ in range(workers)]
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
        self.workers[i] = _Worker(self.ctx, self.threads, self.shared)

    def close(self):
        """Let idle workers exit; a worker still training is terminated (its job is abandoned)."""
        if any(w.handle is not None for w in self.workers):
            self.terminate()
            return
        for w in self.workers:
            try:
                w.conn.send(None)
            except (OSError, BrokenPipeError):
                pass
        for w in self.workers:
            w.proc.join(timeout=5)
            if w.proc.is_alive():
                w.proc.kill()
            w.conn.close()
        self.workers = []

    def terminate(self):
        """Stop every worker now (SIGTERM, then SIGKILL after a few seconds)."""
        for w in self.workers:
            if w.proc.is_alive():
                w.proc.terminate()
        for w in self.workers:
            w.proc.join(timeout=5)
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(timeout=5)
            w.conn.close()
        self.workers = []


class RayExecutor:
    """One Ray actor per worker (per GPU when the cluster has GPUs); ``ray.wait`` refills the
    steady-state loop. ``address`` None starts a local Ray instance."""

    def __init__(self, workers: int, address: str | None = None, threads: int | None = None,
                 shared: dict | None = None):
        try:
            import ray
        except ImportError as err:
            raise RuntimeError("the Ray executor needs ray: pip install 'nlfs[ray]'") from err
        self.ray = ray
        self._own_ray = not ray.is_initialized()  # started here: shut down here
        if self._own_ray:
            if address:
                ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
            else:
                ray.init(num_cpus=max(workers, 1), include_dashboard=False, ignore_reinit_error=True,
                         log_to_driver=False, _node_ip_address="127.0.0.1")
        gpus = ray.cluster_resources().get("GPU", 0)
        self._actor_cls = ray.remote(num_gpus=1 if gpus >= workers else 0, num_cpus=1, max_restarts=0)(_RayWorker)
        self.threads = threads or default_threads(workers)
        blob = _pickled(shared)
        self.shared = None if blob is None else ray.put(blob)  # in the object store once, for every actor
        self.actors = [self._actor_cls.remote(self.threads, self.shared) for _ in range(workers)]
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
            self.actors[i] = self._actor_cls.remote(self.threads, self.shared)
            return ref, {"status": "error", "reason": f"worker died: {type(err).__name__}", "fitness": None,
                         "wall_time": 0.0}

    def close(self):
        for a in self.actors:
            try:
                self.ray.kill(a)
            except Exception:  # noqa: BLE001 - an actor already gone
                pass
        self.actors, self.busy = [], {}
        if self._own_ray and self.ray.is_initialized():
            # a Ray instance left running until interpreter exit dies with an abseil stack on Ctrl-C
            self.ray.shutdown()

    def terminate(self):
        self.close()


class _RayWorker:
    def __init__(self, threads: int, shared: bytes | None = None):
        import signal

        import torch

        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver ends the actors
        except ValueError:  # not the main thread: Ray delivers no SIGINT here anyway
            pass
        torch.set_num_threads(threads)
        os.environ["NLFS_CPP_THREADS"] = str(threads)
        _install(shared)  # Ray resolved the object reference: the bytes, fetched once for this actor

    def evaluate(self, payload: dict) -> dict:
        from nlfs.search._worker import evaluate_payload

        return evaluate_payload(payload)


class PackingExecutor:
    """``pack`` x the slots of ``inner``: jobs that train the same budget (equal ``train`` dict and
    seeds, :func:`nlfs.search._worker.packable`) wait in a group, which goes to ``inner`` as one job
    (``{"pack": [payload, ...]}``, trained in one packed network) when it holds ``pack`` jobs, or when
    ``inner`` has an idle slot and the job runner waits for a result (nothing more can join then).
    Other jobs (a fitness function's, another model's) go alone. The members' results come back one
    by one from ``wait_one``, each as unpacked; a worker that dies fails each member of its pack."""

    def __init__(self, inner, pack: int):
        self.inner, self.pack = inner, int(pack)
        self.slots = inner.slots * self.pack
        self._ids = itertools.count()
        self._groups: dict[str, list] = {}  # budget -> [(handle, payload)] waiting to be sent
        self._queue: list[list] = []  # units ready to send: [(handle, payload)], one job or a full group
        self._running: dict = {}  # inner handle -> [(handle, payload)] of that job
        self._done: dict = {}  # handle -> result not yet handed out

    def submit(self, payload: dict) -> int:
        from ._worker import packable

        handle = next(self._ids)
        if not packable(payload):
            self._queue.append([(handle, payload)])
        else:
            key = json.dumps([payload["train"], payload.get("seeds")], sort_keys=True, default=str)
            group = self._groups.setdefault(key, [])
            group.append((handle, payload))
            if len(group) == self.pack:
                self._queue.append(self._groups.pop(key))
        self._send()
        return handle

    def _send(self, flush: bool = False) -> None:
        """Send ready units while ``inner`` has an idle slot; ``flush``: then the largest waiting groups."""
        while len(self._running) < self.inner.slots:
            if not self._queue:
                if not (flush and self._groups):
                    return
                key = max(self._groups, key=lambda k: len(self._groups[k]))
                self._queue.append(self._groups.pop(key))
            unit = self._queue.pop(0)
            payload = unit[0][1] if len(unit) == 1 else {"pack": [p for _, p in unit]}
            self._running[self.inner.submit(payload)] = unit

    def wait_one(self, handles):
        while True:
            for h in handles:
                if h in self._done:
                    return h, self._done.pop(h)
            self._send(flush=True)
            inner_handle, result = self.inner.wait_one(list(self._running))
            unit = self._running.pop(inner_handle)
            if len(unit) == 1:
                self._done[unit[0][0]] = result
            else:  # a pack's results, or the one error of a worker that died under it
                results = result["pack"] if "pack" in result else [dict(result) for _ in unit]
                self._done.update((h, r) for (h, _), r in zip(unit, results))

    def _forget(self) -> None:
        self._groups.clear()
        self._queue.clear()
        self._running.clear()
        self._done.clear()

    def close(self):
        self._forget()
        self.inner.close()

    def terminate(self):
        self._forget()
        _stop(self.inner)
