"""This machine: tasks in the driver itself (--jobs 1) or in a pool of spawned processes (--jobs N).

The pool is the standard library's ProcessPoolExecutor with the spawn start method (fork would
copy torch's thread pools and locks mid-flight). Each worker gets the dataset once, at start, and
dies with the driver (see worker.init_pool_worker); the dataset lives once, in shared memory. A worker that dies breaks the whole pool
(BrokenProcessPool): every task then in flight is reported lost and runs again, from its last
saved epoch, on a fresh pool.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from fmae.executors import WorkerLost
from fmae.executors import worker


class InlineBackend:
    """Runs each task in the driver when it is submitted: today's one-cell-after-another sweep."""

    inline = True
    slots = 1

    def __init__(self, dataset: Any) -> None:
        self._dataset = dataset
        self._done: dict[int, Any] = {}
        self._next = 0

    def submit(self, task: worker.Task) -> int:
        self._next += 1
        try:
            self._done[self._next] = worker.run_task(task, self._dataset)
        except Exception as exc:  # noqa: BLE001 - handed to the driver, which fails the cell
            self._done[self._next] = exc
        return self._next

    def wait(self, handles: list[int]) -> list[tuple[int, Any]]:
        return [(h, self._done.pop(h)) for h in handles]

    def close(self, *, interrupted: bool) -> None:
        self._done.clear()


class PoolBackend:
    inline = False

    def __init__(self, jobs: int, dataset: Any, device: str) -> None:
        self.slots = jobs
        self._context = multiprocessing.get_context("spawn")
        self._stop = self._context.Event()
        self._initargs = (worker.dataset_arrays(dataset), device, os.getpid(), self._stop)
        self._pool: cf.ProcessPoolExecutor | None = None
        self._owner: dict[cf.Future, cf.ProcessPoolExecutor] = {}

    def _current(self) -> cf.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = cf.ProcessPoolExecutor(self.slots, mp_context=self._context,
                                                initializer=worker.init_pool_worker, initargs=self._initargs)
        return self._pool

    def submit(self, task: worker.Task) -> cf.Future:
        pool = self._current()
        future = pool.submit(worker.run_in_pool, task)
        self._owner[future] = pool
        return future

    def wait(self, handles: list[cf.Future]) -> list[tuple[cf.Future, Any]]:
        done, _ = cf.wait(handles, return_when=cf.FIRST_COMPLETED)
        out = []
        for future in done:
            pool = self._owner.pop(future)
            try:
                out.append((future, future.result()))
            except BrokenProcessPool as exc:
                out.append((future, WorkerLost(str(exc) or "a worker process died")))
                if pool is self._pool:  # the next task goes to a fresh pool
                    pool.shutdown(wait=False, cancel_futures=True)
                    self._pool = None
            except Exception as exc:  # noqa: BLE001 - the task raised: handed to the driver
                out.append((future, exc))
        return out

    def close(self, *, interrupted: bool) -> None:
        if interrupted:
            self._stop.set()  # workers leave at once; an epoch in flight is lost, the saved ones are not
        if self._pool is not None:  # not waiting after a failure: a worker that never started would block it
            self._pool.shutdown(wait=not interrupted, cancel_futures=True)
            self._pool = None
