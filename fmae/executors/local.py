"""This machine: tasks in the driver itself (--jobs 1) or in a pool of worker processes (--jobs N).

The pool is the standard library's ProcessPoolExecutor. On Linux its workers come from a fork
server (multiprocessing's forkserver start method; spawn elsewhere): a fresh single-threaded
process that imports torch and fmae once and forks each worker from that state, so the workers
start in milliseconds, and `start_early` lets that import run on a free core while the driver
still imports torch and reads the dataset (spawn made each worker import torch itself, seconds
of both cores each time a pool started). Forking the driver itself would copy torch's thread
pools and locks mid-flight; the fork server has neither. Each worker gets the dataset once, at
start, from shared memory, and dies with the driver (see worker.init_pool_worker). A worker that
dies breaks the whole pool (BrokenProcessPool): every task then in flight is reported lost and
runs again, from its last saved epoch, on a fresh pool.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import sys
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from fmae import faults
from fmae.errors import ConfigError, FmaeError
from fmae.execution import THREADS_PER_CORE, ExecutorConfig, check_threads
from fmae.executors import worker
from fmae.executors.base import ExecutorPlan, WorkerLost, busy_hint, cores, threads_each


class LocalPlan(ExecutorPlan):
    """--executor local: this process (--jobs 1, the inline backend) or a pool of --jobs worker processes."""

    def start_early(self) -> None:
        """The threads checked against this machine's cores; the pool's fork server started (it
        imports torch on another core while the driver imports torch and reads the dataset)."""
        check_local_threads(self.options, cores())
        if self.options.jobs > 1:
            start_early()

    def device(self, requested: str) -> Any:
        from fmae.device import resolve_device

        return resolve_device(requested)

    @property
    def parallel(self) -> int:
        return self.options.jobs

    def describe(self, threads: int) -> str:
        jobs = self.options.jobs
        return f"{jobs} jobs x {threads_each(threads)}" if jobs > 1 else threads_each(threads)

    def busy_note(self) -> str | None:
        """Where one job takes all cores' worth of threads (--jobs 1, no --threads)."""
        return busy_hint("sweep") if (self.options.jobs, self.options.threads) == (1, None) else None

    def open(self, dataset: Any, device: Any) -> InlineBackend | PoolBackend:
        if self.options.jobs == 1:
            return InlineBackend(dataset)
        return PoolBackend(self.options.jobs, dataset, str(device))


def check_local_threads(options: ExecutorConfig, usable: int) -> None:
    """--threads, and --jobs times --threads, at most 4 per usable core of this machine (a Ray
    cluster's nodes are checked by the Ray backend)."""
    check_threads(options.threads, usable)
    total = options.jobs * (options.threads or 1)
    if total > THREADS_PER_CORE * usable:
        raise ConfigError(f"--jobs {options.jobs} x --threads {options.threads or 1} is {total} threads, more than "
                          f"{THREADS_PER_CORE} per core ({usable} usable cores here)",
                          f"e.g. --jobs {min(options.jobs, usable)}, and leave --threads out")


class InlineBackend:
    """Runs each task in the driver when it is submitted, one after another; each finished epoch
    goes to the driver's `on_state` as it ends (the models stay in memory for the whole task)."""

    inline = True
    slots = 1

    def __init__(self, dataset: Any) -> None:
        self._dataset = dataset
        self._done: dict[int, Any] = {}
        self._next = 0

    def submit(self, task: worker.Task, on_state: Callable[[int, dict[str, Any]], None] | None) -> int:
        self._next += 1
        try:
            self._done[self._next] = worker.run_task(task, self._dataset, on_state)
        except Exception as exc:  # noqa: BLE001 - handed to the driver, which fails the cell
            self._done[self._next] = exc
        return self._next

    def wait(self, handles: list[int]) -> list[tuple[int, Any]]:
        return [(h, self._done.pop(h)) for h in handles]

    def close(self, *, interrupted: bool) -> None:
        self._done.clear()


# What the fork server imports once for every worker it forks (torch among them).
PRELOAD = ["fmae.executors.worker", "fmae.engine", "fmae.data"]


def context() -> Any:
    """The pool's start method: on Linux a fork server with fmae and torch preloaded; elsewhere
    spawn (macOS: forking a process that has loaded torch's Objective-C and Metal libraries is
    what made Python give up fork there; untested here, so not risked)."""
    if not sys.platform.startswith("linux") or "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def start_early() -> None:
    """Start the fork server now (it imports torch on its own core while this process goes on).
    Only a head start: where multiprocessing refuses (a worker rerunning a main script without
    `if __name__ == "__main__"`), the pool starts it later, or fails the cell, as without it."""
    if context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        try:
            forkserver.ensure_running()
        except RuntimeError:
            return


SHM = "/dev/shm"


def _unblock_exit(pool: cf.ProcessPoolExecutor) -> None:
    """Let the pool's threads end although its workers die mid-task. Tasks carry resume states
    (tens of kB): when the workers leave, the call queue's feeder thread can be blocked for ever
    writing one into the full pipe that nobody reads any more, and the pool's manager thread, then
    the interpreter's exit, wait for it (CPython 3.11; a second Ctrl-C was the only way out, with
    "Exception ignored" tracebacks). What is queued then is dropped: the driver runs it again, or
    not at all, from the states it saved. Results carry them too: see _release_results."""
    queue = getattr(pool, "_call_queue", None)
    if queue is not None:
        queue.cancel_join_thread()
    _release_results(pool)


def _release_results(pool: cf.ProcessPoolExecutor) -> None:
    """Close this process's write end of the pool's result pipe (it never writes there). A worker
    that dies while it writes a result (its lifeline closed as it sent, or a kill -9 while the pipe
    was full) leaves half a message, and the pool's manager thread waits for the rest for ever:
    this process holds the write end as well, so the pipe never reads end-of-file. Closed, it does
    once the workers are gone: the pool counts as broken, its futures fail and its thread ends (an
    interrupted sweep hung at exit one run in two, tests/test_redteam_exec.py case 17). Only for a
    pool that starts no more workers: one started later would inherit the closed end."""
    results = getattr(pool, "_result_queue", None)
    if results is not None:
        results._writer.close()


def _break(pool: cf.ProcessPoolExecutor) -> None:
    """End a pool whose manager thread hangs in a torn result: its other workers too (they hold the
    pipe's write end; the pool would stop them anyway once broken), then this process's end."""
    for process in _workers(pool).values():
        process.kill()
    _release_results(pool)


def _workers(pool: cf.ProcessPoolExecutor) -> dict[int, Any]:
    """The pool's worker processes by pid (a copy: the pool's manager thread changes its own; none once shut down)."""
    return dict(getattr(pool, "_processes", None) or {})


def _dead_workers(pool: cf.ProcessPoolExecutor) -> set[int]:
    """Pids of the pool's workers that have exited (none does while its pool lives)."""
    return {pid for pid, p in _workers(pool).items() if p.exitcode is not None}


def shared_memory_error(exc: BaseException, jobs: int, arrays: dict[str, Any]) -> FmaeError | None:
    """Torch could not put the dataset in shared memory for the workers (on Linux, in /dev/shm,
    which containers keep small: 64 MB by default in Docker) as the error naming the way out."""
    text = str(exc).lower()
    if "shared memory" not in text and "shm" not in text:
        return None
    size = sum(v.numel() * v.element_size() for v in arrays.values() if hasattr(v, "element_size")) >> 20
    try:
        stat = os.statvfs(SHM)
        room = f"{SHM} has {stat.f_bavail * stat.f_frsize >> 20} MB free"
    except OSError:
        room = f"{SHM} is missing"
    return FmaeError(f"not enough shared memory for --jobs {jobs}: the workers share the dataset ({size} MB) "
                     f"through {SHM}, and {room}",
                     "use --jobs 1, or give the machine a larger /dev/shm (e.g. docker run --shm-size=1g)")


class PoolBackend:
    inline = False
    WATCH = 2.0  # seconds between two looks for a worker that died mid-result (see wait)

    def __init__(self, jobs: int, dataset: Any, device: str) -> None:
        self.slots = jobs
        self._context = context()
        # The workers' lifeline: the driver alone holds the write end; when it closes (the driver
        # stops them, or dies, even by SIGKILL) every worker reads EOF and leaves.
        self._lifeline, self._alive = self._context.Pipe(duplex=False)
        self._initargs = (worker.dataset_arrays(dataset), device, self._lifeline,
                          faults.worker_pids(), self._context.Value("i", 0))
        self._pool: cf.ProcessPoolExecutor | None = None
        self._owner: dict[cf.Future, cf.ProcessPoolExecutor] = {}

    def _current(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = cf.ProcessPoolExecutor(self.slots, mp_context=self._context,
                                                initializer=worker.init_pool_worker, initargs=self._initargs)
        return self._pool

    def submit(self, task: worker.Task, on_state: Any = None) -> cf.Future:
        """`on_state` is not called: a worker's states come back with its result."""
        try:
            pool = self._current()
            try:
                future = pool.submit(worker.run_in_pool, task)
            except BrokenProcessPool:  # a worker died before its task came back: those in flight come back lost
                self._discard(pool)
                pool = self._current()
                future = pool.submit(worker.run_in_pool, task)
        except RuntimeError as exc:  # a worker starts here: the dataset goes to shared memory on its way
            raise shared_memory_error(exc, self.slots, self._initargs[0]) or exc from None
        self._owner[future] = pool
        return future

    def wait(self, handles: list[cf.Future]) -> list[tuple[cf.Future, Any]]:
        """At least one finished task. A worker found dead twice, WATCH seconds apart, while its pool's
        tasks still wait, died mid-result (the pool notices any other death at once): that pool is
        ended (_break), so that its tasks come back lost, and are retried, instead of never."""
        dead: dict[cf.ProcessPoolExecutor, set[int]] = {}
        while True:
            done, _ = cf.wait(handles, timeout=self.WATCH, return_when=cf.FIRST_COMPLETED)
            if done:
                break
            for pool in {self._owner[h] for h in handles}:
                now = _dead_workers(pool)
                if now & dead.get(pool, set()):
                    _break(pool)
                dead[pool] = now
        out = []
        for future in done:
            pool = self._owner.pop(future)
            try:
                out.append((future, future.result()))
            except BrokenProcessPool as exc:
                out.append((future, WorkerLost(str(exc) or "a worker process died")))
                self._discard(pool)
            except Exception as exc:  # noqa: BLE001 - the task raised: handed to the driver
                out.append((future, exc))
        return out

    def _discard(self, pool: cf.ProcessPoolExecutor) -> None:
        """A broken pool: the next task goes to a fresh one."""
        if pool is self._pool:
            _unblock_exit(pool)
            pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def close(self, *, interrupted: bool) -> None:
        if interrupted:
            if self._pool is not None:
                _unblock_exit(self._pool)  # before the workers go
            self._alive.close()  # workers leave at once; an epoch in flight is lost, the saved ones are not
        if self._pool is not None:  # not waiting after a failure: a worker that never started would block it
            self._pool.shutdown(wait=not interrupted, cancel_futures=True)
            self._pool = None
        self._alive.close()  # both ends: nothing of the pool outlives it
        self._lifeline.close()
