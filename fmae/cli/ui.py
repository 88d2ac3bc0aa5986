"""The one place that decides how fmae talks: rich bars, plain lines, tables, JSON, quiet, colours.
A command's result goes out through `emit` (the JSON document with --json, else its table).

Results go to stdout; progress, logs, warnings and errors go to stderr. Progress is a rich bar
on a terminal, one plain line per event when stderr is not a terminal (CI logs) or NO_COLOR is
set, and nothing with --quiet. Without a terminal rich writes no control codes at all.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from fmae import faults


def _plain() -> dict[str, Any]:
    """NO_COLOR: no colour and no bold or italic either: rich writes no escape codes at all."""
    return {"color_system": None} if "NO_COLOR" in os.environ else {}


def _isatty(stream: Any) -> bool:
    """A real terminal; FORCE_COLOR makes rich call a pipe a terminal, which asks for colour, not
    for a live bar redrawn with cursor codes."""
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, **_plain())


def stdout_console() -> Console:
    console = Console(highlight=False, **_plain())
    if not console.is_terminal:
        console.width = 240  # a pipe or a CI log: never truncate the results to 80 columns
    return console


def write_stdout(text: str) -> None:
    """The results, written to stdout: a closed or full stdout is one error line, a reader that
    went away (`| head`) a quiet exit."""
    from fmae.errors import stdout_error

    if sys.stdout is None:
        raise stdout_error(None)
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except (OSError, ValueError) as exc:
        raise stdout_error(exc) from None


def fmt_loss(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "nan" if value is not None else "-"
    return f"{value:.6f}"


class Feedback:
    """Progress and messages on stderr, in one of three modes: rich, plain, quiet."""

    def __init__(self, *, quiet: bool = False, console: Console | None = None, mode: str | None = None) -> None:
        self.console = console or stderr_console()
        if mode is None:
            # NO_COLOR: no bar frames either; FORCE_COLOR into a pipe: colour maybe, but no live bar
            fancy = _isatty(self.console.file) and "NO_COLOR" not in os.environ
            mode = "quiet" if quiet else ("rich" if fancy else "plain")
        self.mode = mode
        self._progress: Progress | None = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> Feedback:
        if self.mode == "rich":
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[count]}"),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(None, None, None)
            self._progress = None

    def task(self, key: str, label: str, total: float, done: float = 0, info: str = "", count: str | None = None
             ) -> None:
        """Start (or restart) a bar; in plain mode nothing is printed until something happens.
        `count`: what the bar says it counts (default `done/total`; a sweep's bar advances by work
        and says cells)."""
        count = f"{done:g}/{total:g}" if count is None else count
        if self._progress is not None:
            if key in self._tasks:
                self._progress.reset(self._tasks[key], total=total, completed=done, description=label, info=info,
                                     count=count)
            else:
                self._tasks[key] = self._progress.add_task(label, total=total, completed=done, info=info, count=count)

    def remove(self, key: str) -> None:
        """Take a finished bar off the screen (a sweep shows one bar per running cell)."""
        if self._progress is not None and key in self._tasks:
            self._progress.remove_task(self._tasks.pop(key))

    def advance(self, key: str, done: float, total: float, info: str, line: str, count: str | None = None) -> None:
        """Move a bar to `done`; in plain mode print `line`."""
        if self._progress is not None:
            self._progress.update(self._tasks[key], completed=done, total=total, info=info,
                                  count=f"{done:g}/{total:g}" if count is None else count)
        elif self.mode == "plain":
            self.console.print(line, markup=False, soft_wrap=True)

    def info(self, key: str, info: str) -> None:
        """Change what a bar says beside its count (a rich bar only: plain mode prints events)."""
        if self._progress is not None and key in self._tasks:
            self._progress.update(self._tasks[key], info=info)

    def epoch(self, key: str, label: str, m: Any, epochs: int) -> None:
        """A finished epoch of a model in training: its bar, or its plain line."""
        self.advance(key, m.epoch, epochs, epoch_info(m.train_loss, m.test_loss),
                     f"{label} epoch {m.epoch}/{epochs} train_loss={fmt_loss(m.train_loss)} "
                     f"test_loss={fmt_loss(m.test_loss)} seconds={m.seconds:.2f}")

    def message(self, text: str) -> None:
        if self.mode == "quiet":
            return
        if self._progress is not None:
            self._progress.console.print(text, markup=False, soft_wrap=True)
        else:
            self.console.print(text, markup=False, soft_wrap=True)


class TrainFeedback(Feedback):
    """A training run's progress (fmae.train_run.TrainProgress): one bar of epochs."""

    def begin(self, label: str, epochs: int, done: int) -> None:
        self.label, self.epochs = label, epochs
        self.task("epochs", label, epochs, done)

    def epoch_done(self, m: Any) -> None:
        self.epoch("epochs", self.label, m, self.epochs)


STALL = 300.0  # seconds a cell may go without an epoch (and 10 of its sweep's slowest epochs) before it is named
STALL_EPOCHS = 10


class SweepFeedback(Feedback):
    """A sweep's progress (fmae.sweeps.run.SweepProgress): the cells bar, naming the cells in
    training, and a bar per cell in training with its epoch and last losses. A cell that goes
    without an epoch for long (STALL seconds, and STALL_EPOCHS times the slowest epoch seen: a
    worker stopped by SIGSTOP, or one gone silent) is named once, with the time of its last news:
    `waiting for cell X since 12:03:04 (no epoch for 5 min)`; a watcher thread looks while the
    driver waits."""

    def __init__(self, *, quiet: bool = False) -> None:
        super().__init__(quiet=quiet)
        self.training: dict[str, None] = {}  # the cells in training now, in the order they started
        self.total = self.finished = self.epochs = 0
        self._cost: dict[str, float] = {}
        self._left: dict[str, int] = {}
        self._work_total = self._work_done = 0.0
        self._news: dict[str, tuple[float, float, bool]] = {}  # cell -> its last news (monotonic, wall), named
        self._slowest = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def __enter__(self) -> SweepFeedback:
        super().__enter__()
        if self.mode != "quiet":
            self._stop.clear()
            self._watcher = threading.Thread(target=self._watch, name="fmae-stall-watch", daemon=True)
            self._watcher.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join()
            self._watcher = None
        super().__exit__(*exc)

    def _heard(self, name: str) -> None:
        with self._lock:
            self._news[name] = (time.monotonic(), time.time(), False)

    def _watch(self) -> None:
        base = faults.stall_seconds(STALL)
        while not self._stop.wait(min(2.0, base / 4)):
            now = time.monotonic()
            with self._lock:
                limit = max(base, STALL_EPOCHS * self._slowest)
                late = [(name, since, wall) for name, (since, wall, named) in self._news.items()
                        if not named and now - since >= limit]
                for name, since, wall in late:
                    self._news[name] = (since, wall, True)
            for name, since, wall in late:
                text = (f"waiting for cell {name} since {time.strftime('%H:%M:%S', time.localtime(wall))} "
                        f"(no epoch for {fmt_duration(now - since)})")
                self.info(name, text)
                self.message(text)

    def _training_now(self) -> str:
        names = list(self.training)
        return f"training {', '.join(names[:2])}" + (f" +{len(names) - 2}" if len(names) > 2 else "") if names else ""

    def begin(self, total: int, finished: int, epochs: int, work: dict[str, tuple[float, int]]) -> None:
        """The cells bar advances by work (each cell-epoch by its estimated seconds), so its ETA is
        right from the first epoch although cells differ in cost; it says cells done of all."""
        self.total, self.finished, self.epochs = total, finished, epochs
        self._cost = {name: cost for name, (cost, _) in work.items()}
        self._left = {name: left for name, (_, left) in work.items()}
        self._work_total = sum(cost * left for cost, left in work.values())
        self._work_done = 0.0
        self.task("cells", "cells", self._work_total or 1, 0, count=self._cells())

    def _cells(self) -> str:
        return f"{self.finished}/{self.total}"

    def _move_cells(self, line: str = "") -> None:
        done = min(self._work_done, self._work_total)
        if line:
            self.advance("cells", done, self._work_total or 1, self._training_now(), line, count=self._cells())
        elif self._progress is not None and "cells" in self._tasks:
            self._progress.update(self._tasks["cells"], completed=done, count=self._cells())

    def cell_started(self, plan: Any) -> None:
        self.training[plan.name] = None
        self._heard(plan.name)
        self.task(plan.name, plan.name, self.epochs, plan.start_epoch)
        self.info("cells", self._training_now())

    def cell_epoch(self, plan: Any, m: Any) -> None:
        self._heard(plan.name)
        with self._lock:
            self._slowest = max(self._slowest, float(m.seconds))
        self.epoch(plan.name, plan.name, m, self.epochs)
        if self._left.get(plan.name, 0) > 0:
            self._left[plan.name] -= 1
            self._work_done += self._cost[plan.name]
        self._move_cells()

    def cell_ended(self, plan: Any, status: str) -> None:
        with self._lock:
            self._news.pop(plan.name, None)
        self.training.pop(plan.name, None)
        self.finished += 1
        self.remove(plan.name)
        line = f"cell {self.finished}/{self.total} {plan.name} {status}" + (f": {plan.error}" if plan.error else "")
        self._work_total -= self._cost.get(plan.name, 0.0) * self._left.pop(plan.name, 0)  # ended sooner: not owed
        self._move_cells(line)

    def paused(self, plans: Sequence[Any]) -> None:
        for plan in plans:
            with self._lock:
                self._news.pop(plan.name, None)
            if plan.name in self.training:
                del self.training[plan.name]
                self.remove(plan.name)
        self.info("cells", self._training_now())


def fmt_duration(seconds: float) -> str:
    """A wait as people say it: `45 s`, `5 min`, `2 h 05 min`."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    minutes = int(seconds // 60)
    return f"{minutes} min" if minutes < 120 else f"{minutes // 60} h {minutes % 60:02d} min"


def fmt_seconds(value: float | None) -> str:
    """Seconds in tables: one decimal, always (a column of them lines up)."""
    return "-" if value is None else f"{value:.1f}"


def epoch_info(train_loss: float, test_loss: float) -> str:
    return f"train {fmt_loss(train_loss)}  test {fmt_loss(test_loss)}"


def print_json(doc: dict[str, Any]) -> None:
    write_stdout(json.dumps(doc, indent=2, allow_nan=False) + "\n")


def emit(doc: dict[str, Any], json_out: bool, render: Callable[[dict[str, Any]], None]) -> None:
    """A command's result on stdout, the one way: the JSON document with --json, else `render(doc)`
    (tables or lines for people; warnings meant for people only go in `render` too)."""
    if json_out:
        print_json(doc)
    else:
        render(doc)


TABLE_ROWS = 100  # a results table of more rows shows its first TABLE_HEAD (the best: rows come ranked)
TABLE_HEAD = 25


def clipped(rows: Sequence[dict[str, Any]], noun: str, where: str) -> tuple[list[dict[str, Any]], str | None]:
    """A long table's rows to print, and the line that counts the rest by status (None: all shown).

    Up to TABLE_ROWS rows: all of them; more: the first TABLE_HEAD, so a sweep of thousands of cells
    prints its best ones and how the others ended (`where` names the file that holds them all)."""
    if len(rows) <= TABLE_ROWS:
        return list(rows), None
    counts: dict[str, int] = {}
    for row in rows[TABLE_HEAD:]:
        for status, n in (row["statuses"] if "statuses" in row else {row["status"]: 1}).items():
            counts[status] = counts.get(status, 0) + n
    by_status = ", ".join(f"{status} {n}" for status, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    whose = "their cells: " if "statuses" in rows[0] else ""  # a group counts its cells
    return list(rows[:TABLE_HEAD]), (f"... {len(rows) - TABLE_HEAD} more {noun} not shown ({whose}{by_status}); "
                                     f"{where} holds every one")


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
                highlight_row: int | None = None, droppable: Sequence[str] = (),
                console: Console | None = None) -> None:
    """A table on stdout that fits the terminal without cutting a number.

    Too wide: the `droppable` columns go, in their order, until it fits; if it still does not,
    cells wrap instead of ending in an ellipsis. The table is at least as wide as its title,
    so the title never wraps.
    """
    console = console or stdout_console()
    unbounded = console.options.update_width(10_000)  # measure what the table needs, not what it gets

    def fits(table: Table) -> bool:
        return console.measure(table, options=unbounded).maximum <= console.width  # rich cuts where it wraps

    keep = list(columns)
    table = _table(title, keep, rows, highlight_row, console.width)
    for name in droppable:
        if fits(table):
            break
        if name in keep:
            keep.remove(name)
            table = _table(title, keep, [[v for c, v in zip(columns, row) if c in keep] for row in rows],
                           highlight_row, console.width)
    if not fits(table):
        for column in table.columns:
            column.overflow = "fold"
    with console.capture() as captured:
        console.print(table)
    write_stdout("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))  # rich pads to the width


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], highlight_row: int | None,
           width: int) -> Table:
    table = Table(title=title, title_justify="left", min_width=min(len(title), width))
    for col in columns:
        table.add_column(col, justify="left" if col in ("status", "optim", "setting", "run", "model", "cell", "state")
                         else "right")
    for i, row in enumerate(rows):
        table.add_row(*(str(v) for v in row), style="bold green" if i == highlight_row else None)
    return table


def print_error(message: str) -> None:
    stderr_console().print(f"error: {message}", markup=False, highlight=False, soft_wrap=True, style="red")
