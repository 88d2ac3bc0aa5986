"""The driver's writer: every finished epoch reaches metrics.csv, last.pt at most every
`--checkpoint-every` seconds, both written by one thread of the driver in the order they were
asked for, so training never waits for the disk (torch.save and fsync of every cell's state each
epoch cost as much as the epochs themselves on a GPU).

The rule that makes this safe: last.pt is the truth. metrics.csv may run ahead of it; a resumed
run continues from last.pt and rewrites metrics.csv from the history last.pt carries, as soon as
it starts (`resumed`) and again at the end (RunDir.finish). With `every` 0 every epoch writes
last.pt before metrics.csv, so metrics.csv never runs ahead.

The bound, exactly: a run's last.pt is written at most once every `every` seconds, counted from
the run's start (`begin`), and a finished epoch waits at most `every` seconds to be in it. An
epoch that finishes when `every` seconds have passed since the run's last checkpoint (or its
start) is written at once; one that finishes sooner is written by the writer thread itself when
they have passed, even if no other epoch has finished by then (a long epoch on a GPU). So a
kill -9 loses at most the epochs finished in the last `every` seconds, plus the one in flight.

`close` (also on Ctrl-C, SIGTERM or a failure) writes each run's latest state, then waits for the
writes: an interrupted run loses no finished epoch. The driver stays the only writer process.

With `trackers` (fmae.trackers: --tensorboard, --mlflow), each epoch saved is logged there too,
whatever the executor, by the same thread after the run's metrics.csv: training never waits for
a tracker's I/O (in the driver, MLflow cost 5.8 ms a cell-epoch with an sqlite store and 13.5
with a tracking server on a 2-core CPU; benchmarks/tracker_cost.py). A run's tracker call waiting
in the queue takes the newer epochs with it, so trackers slower than training get several epochs
a call. A resumed run first catches up on what its last.pt holds; a run's end (its summary) is
logged after its writes are done.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fmae import runs
from fmae.config import TrainConfig
from fmae.training.contract import history_of_state

Job = Callable[[], None]
QUEUE_JOBS = 64  # a driver further ahead of the disk than this waits (states held in memory are bounded)


@dataclass
class _Track:
    config: TrainConfig
    state: dict[str, Any]
    saved_epoch: int  # the epoch last.pt holds (-1: unknown, written at the next checkpoint)
    saved_at: float  # when that checkpoint was asked for (the run's start before its first)
    due: float | None = None  # when the writer thread writes the newer state waiting here


class Saver:
    """One writer thread for a command's runs; use as a context manager (closing writes the latest states)."""

    def __init__(self, every: float, clock: Callable[[], float] = time.monotonic, trackers: Any = None) -> None:
        self.every = every
        self.trackers = trackers
        self._clock = clock
        self._tracks: dict[runs.RunDir, _Track] = {}
        self._errors: dict[runs.RunDir, BaseException] = {}
        self._dropped: set[runs.RunDir] = set()  # failed runs: their writes still queued are skipped
        self._to_log: dict[runs.RunDir, tuple[TrainConfig, list[Any]]] = {}  # a tracker call queued: its latest
        self._lock = threading.Lock()  # _to_log, _closing and the tracks, shared with the writer thread
        self._closing = False  # set by close: the trackers wait until the last writes are done
        self._jobs: queue.Queue[tuple[runs.RunDir, Job] | None] = queue.Queue(QUEUE_JOBS)
        self._thread = threading.Thread(target=self._work, name="fmae-writer", daemon=True)
        self._thread.start()
        self.checkpoints = 0  # last.pt files asked for (the kill tests and benchmarks read it)

    def __enter__(self) -> Saver:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _work(self) -> None:
        while True:
            try:
                item = self._jobs.get(timeout=self._wait())
            except queue.Empty:
                self._write_due()
                continue
            if item is None:
                break
            run, job = item
            self._run(run, job)
            self._jobs.task_done()
        self._jobs.task_done()

    def _run(self, run: runs.RunDir, job: Job) -> None:
        try:
            if run not in self._errors and run not in self._dropped:
                job()
        except BaseException as exc:  # noqa: BLE001 - raised in the driver, for this run (see _raise)
            self._errors[run] = exc

    def _wait(self) -> float | None:
        """Seconds until the first checkpoint the writer thread owes (None: none owed)."""
        with self._lock:
            due = [t.due for t in self._tracks.values() if t.due is not None]
        return None if not due else max(0.0, min(due) - self._clock())

    def _write_due(self) -> None:
        """Write last.pt of every run whose newer state has waited `every` seconds. Called when the
        queue stayed empty until the first such time: the run's earlier writes are on disk, in order
        (while epochs keep coming, the driver writes what is due at each epoch's end)."""
        now = self._clock()
        writes = []
        with self._lock:
            for run, track in self._tracks.items():
                if track.due is not None and track.due <= now:
                    track.due = None
                    if int(track.state["epoch"]) != track.saved_epoch:
                        track.saved_epoch, track.saved_at = int(track.state["epoch"]), now
                        self.checkpoints += 1
                        writes.append((run, track.config, track.state))
        for run, config, state in writes:
            self._run(run, lambda run=run, config=config, state=state: run.save_last(config, state))

    def _put(self, run: runs.RunDir, job: Job) -> None:
        self._raise(run)
        self._jobs.put((run, job))

    def _raise(self, run: runs.RunDir) -> None:
        exc = self._errors.pop(run, None)
        if exc is not None:
            with self._lock:
                self._to_log.pop(run, None)  # its call was skipped with the run's other writes
            raise exc

    def _log(self, run: runs.RunDir, config: TrainConfig, history: list[Any]) -> None:
        """The run's epochs so far to the trackers, from the writer thread (see the module's doc)."""
        if not self.trackers:
            return
        with self._lock:
            queued = run in self._to_log
            self._to_log[run] = (config, history)
        if not queued:
            self._put(run, lambda: self._log_latest(run))

    def _log_latest(self, run: runs.RunDir) -> None:
        with self._lock:  # none: the run's failure was raised meanwhile; closing: close logs it, later
            entry = None if self._closing else self._to_log.pop(run, None)
        if entry is not None:
            self.trackers.log(run.path, *entry)

    # ------------------------------------------------------------ what the driver calls

    def begin(self, run: runs.RunDir, config: TrainConfig) -> None:
        """A run starts training: the checkpoint clock starts now."""
        with self._lock:
            self._tracks.setdefault(run, _Track(config, {"epoch": -1}, -1, self._clock()))

    def resumed(self, run: runs.RunDir, config: TrainConfig, state: dict[str, Any]) -> None:
        """A run continues from `state`, its last.pt: metrics.csv rewritten from it (it may have run ahead)."""
        with self._lock:
            self._tracks[run] = _Track(config, state, int(state["epoch"]), self._clock())
        history = history_of_state(state)
        self._put(run, lambda: run.write_metrics(history))
        self._log(run, config, history)

    def epoch(self, run: runs.RunDir, config: TrainConfig, state: dict[str, Any]) -> list[Any]:
        """A finished epoch's resume state (owned: never changed after this call); returns the history.
        last.pt is written now when `every` seconds have passed since the run's last one (or its
        start), else by the writer thread when they have (the module's doc)."""
        with self._lock:
            track = self._tracks.get(run)
            if track is None:
                track = self._tracks[run] = _Track(config, state, -1, self._clock())
            track.state = state
            now_due = self.every == 0 or self._clock() - track.saved_at >= self.every
            if not now_due and track.due is None:
                track.due = track.saved_at + self.every
        if now_due:
            self.checkpoint(run)
        history = history_of_state(state)
        self._put(run, lambda: run.write_metrics(history))
        self._log(run, config, history)
        return history

    def checkpoint(self, run: runs.RunDir) -> None:
        """Write last.pt of the run's latest state now (in order with its other writes), unless written already."""
        self._raise(run)
        with self._lock:
            track = self._tracks.get(run)
            if track is None or int(track.state["epoch"]) in (track.saved_epoch, -1):
                return
            config, state = track.config, track.state
            track.saved_epoch, track.saved_at, track.due = int(state["epoch"]), self._clock(), None
            self.checkpoints += 1
        self._put(run, lambda: run.save_last(config, state))

    def forget(self, run: runs.RunDir) -> None:
        """A run that ended without `finish` (pruned): its last.pt asked for, its state let go."""
        self.checkpoint(run)
        with self._lock:
            self._tracks.pop(run, None)

    def drop(self, run: runs.RunDir) -> None:
        """A run that failed: nothing more is written for it, and its write errors are its own."""
        with self._lock:
            self._dropped.add(run)
            self._tracks.pop(run, None)
            self._to_log.pop(run, None)
        self._errors.pop(run, None)

    def failures(self) -> dict[runs.RunDir, BaseException]:
        """Wait for every write asked for; the runs whose writes failed, each with its first failure."""
        self._jobs.join()
        failed, self._errors = self._errors, {}
        return failed

    def flush(self, run: runs.RunDir | None = None) -> None:
        """Wait for every write asked for; raise the first failure of `run` (of any run without one)."""
        self._jobs.join()
        if run is not None:
            self._raise(run)
        elif self._errors:
            self._raise(next(iter(self._errors)))

    def finish(self, run: runs.RunDir, config: TrainConfig, status: str, history: Sequence[Any],
               model_state: dict[str, Any], env: dict[str, Any], *, device: str,
               wall_seconds: float) -> dict[str, Any]:
        """The end of a run: its last.pt brought up to date, then RunDir.finish (summary.json last)."""
        self.checkpoint(run)
        self.flush(run)
        with self._lock:
            self._tracks.pop(run, None)
        summary = run.finish(config, status, history, model_state, env, device=device, wall_seconds=wall_seconds)
        if self.trackers:
            self.trackers.log(run.path, config, history, summary)
        return summary

    def close(self) -> None:
        """Write every run's latest state, wait for all writes, stop the thread, then log to the
        trackers what was still queued for them: at most the tracker call already under way delays
        the last.pt files (on Ctrl-C, a slow tracker server must not keep them waiting). Failures
        are left for the caller's own error (an interrupt or a failed cell) to report."""
        if not self._thread.is_alive():
            return
        with self._lock:
            self._closing = True
        for run in list(self._tracks):
            try:
                self.checkpoint(run)
            except BaseException:  # noqa: BLE001 - its earlier failure: the others are still saved
                continue
        self._jobs.put(None)
        self._thread.join()
        late, self._to_log = self._to_log, {}
        for run, (config, history) in late.items():
            self.trackers.log(run.path, config, history)
