"""The driver's writer (fmae.saving): metrics.csv every epoch, last.pt at most every --checkpoint-every
seconds and always at the end, the latest state written on close; the inline backend keeps its models
in memory across epochs (no rebuild, no packed bytes) and a sweep ends the same whatever the interval."""

import json

import pytest
import torch

from fmae import runs, saving
from fmae.config import ModelConfig, TrainConfig
from fmae.errors import RunDirError
from fmae.executors import worker
from fmae.model import build
from fmae.training import cells
from fmae.training.contract import history_of_state
from tests.helpers import cli

CONFIG = TrainConfig(optim="sgd", epochs=10, model=ModelConfig(hidden=2))


def state(epoch: int) -> dict:
    """A resume state of CONFIG's run at `epoch`, well-formed (as last.pt is checked on loading)."""
    real = cells.new_cell(CONFIG, torch.device("cpu")).resume_state(torch.Generator())
    weights = {k: torch.full_like(v, float(epoch)) for k, v in build(CONFIG.model).state_dict().items()}
    return {**real, "epoch": epoch, "model": weights, "status": "running",
            "history": [[e, 1.0 / e, 2.0 / e, 0.1] for e in range(1, epoch + 1)]}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def on_disk(run: runs.RunDir) -> tuple[int, int]:
    """(the epoch last.pt holds, 0 without one; the rows of metrics.csv)."""
    last = run.load_last()["epoch"] if run.file("last.pt").exists() else 0
    return last, len(run.read_metrics())


def test_every_0_writes_last_pt_before_metrics_each_epoch(tmp_path, monkeypatch):
    run = runs.RunDir(tmp_path / "r")
    order = []
    for name in ("save_last", "write_metrics"):
        original = getattr(runs.RunDir, name)
        monkeypatch.setattr(runs.RunDir, name, lambda self, *a, _o=original, _n=name: (order.append(_n), _o(self, *a)))
    with saving.Saver(0) as saver:
        for epoch in (1, 2, 3):
            saver.epoch(run, CONFIG, state(epoch))
            saver.flush()
            assert on_disk(run) == (epoch, epoch)
    assert order == ["save_last", "write_metrics"] * 3 and saver.checkpoints == 3


def test_a_long_interval_writes_last_pt_when_due_and_the_latest_on_close(tmp_path):
    run, clock = runs.RunDir(tmp_path / "r"), Clock()
    with saving.Saver(10, clock=clock) as saver:
        for epoch in range(1, 8):
            clock.now = 3.0 * epoch  # an epoch every 3 s from 3 s: last.pt due at 13 s (epoch 5), then at 25 s
            saver.epoch(run, CONFIG, state(epoch))
            saver.flush()  # the writer idle, as between real epochs (its own timer counts real seconds)
        assert on_disk(run) == (5, 7)  # metrics.csv ran ahead of last.pt: a kill now loses epochs 6 and 7
        assert saver.checkpoints == 1
    assert on_disk(run) == (7, 7)  # closing (an interrupt, the end) wrote the latest state
    assert saver.checkpoints == 2


def test_the_interval_counts_from_the_run_s_start(tmp_path):
    """A first epoch that ends `every` seconds after the run began is written at once (the clock
    used to start at the first epoch's end, which then waited another interval)."""
    run, clock = runs.RunDir(tmp_path / "r"), Clock()
    with saving.Saver(10, clock=clock) as saver:
        saver.begin(run, CONFIG)
        clock.now = 12.0
        saver.epoch(run, CONFIG, state(1))
        saver.flush()
        assert on_disk(run) == (1, 1) and saver.checkpoints == 1


@pytest.mark.parametrize("every", [0.5, 1.0])
def test_a_finished_epoch_waits_at_most_the_interval_without_another_epoch(tmp_path, every):
    """The bound, exactly: an epoch finished before the interval is up is written by the writer
    thread when it is, though no later epoch ends (a long epoch on a GPU); not before."""
    import time

    run = runs.RunDir(tmp_path / "r")
    with saving.Saver(every) as saver:
        saver.begin(run, CONFIG)
        saver.epoch(run, CONFIG, state(1))
        finished = time.monotonic()
        saver.flush()
        assert on_disk(run) == (0, 1)  # not yet due: metrics.csv only
        while not run.file("last.pt").exists() and time.monotonic() - finished < every + 10:
            time.sleep(0.02)
        written = time.monotonic() - finished
        assert on_disk(run) == (1, 1) and saver.checkpoints == 1
        assert written >= every * 0.9  # the writer kept to the interval (no checkpoint before it was due)


def test_resuming_trusts_last_pt_and_rewrites_metrics_from_it(tmp_path):
    run = runs.RunDir(tmp_path / "r")
    run.save_last(CONFIG, state(2))
    run.write_metrics(history_of_state(state(5)))  # ran ahead: a kill -9 between checkpoints
    with saving.Saver(3600) as saver:
        saver.resumed(run, CONFIG, runs.RunDir(run.path).load_last())
        saver.flush()
        assert on_disk(run) == (2, 2)
    assert on_disk(run) == (2, 2) and saver.checkpoints == 0  # nothing new to write


def test_a_failed_write_is_raised_in_the_driver_for_its_run(tmp_path, monkeypatch):
    bad, good = runs.RunDir(tmp_path / "bad"), runs.RunDir(tmp_path / "good")

    def full(self, *a):
        if self == bad:
            raise RunDirError(f"cannot write {self.path}: No space left on device")
        return original(self, *a)

    original = runs.RunDir.write_metrics
    monkeypatch.setattr(runs.RunDir, "write_metrics", full)
    with saving.Saver(3600) as saver:
        saver.epoch(bad, CONFIG, state(1))
        saver.epoch(good, CONFIG, state(1))
        saver.flush(good)  # the other run's failure is not this one's
        with pytest.raises(RunDirError, match="No space left"):
            saver.epoch(bad, CONFIG, state(2))
        saver.epoch(good, CONFIG, state(2))
    assert on_disk(good) == (2, 2)


GRID = ["sweep", "--optim", "sgd", "adam", "--lr", "0.1", "--hidden", "4", "8", "--batch-size", "16", "--epochs", "3",
        "--threads", "1", "-q", "--json"]


def test_the_inline_sweep_keeps_its_models_and_checkpoints_only_when_due(fake_dataset, tmp_path, monkeypatch):
    """--jobs 1: one model built per cell (not per epoch), no packed states, last.pt once per cell with a
    long interval (at its end) and every epoch with 0; both sweeps end equal."""
    built, saved = [], []
    new_cell, save_last = cells.new_cell, runs.RunDir.save_last
    monkeypatch.setattr(cells, "new_cell", lambda *a, **k: (built.append(a[0]), new_cell(*a, **k))[1])
    monkeypatch.setattr(runs.RunDir, "save_last", lambda self, c, s: (saved.append(s["epoch"]), save_last(self, c, s)))
    monkeypatch.setattr(worker, "pack", None)  # a packed state would fail the cell
    monkeypatch.setattr(worker, "unpack", None)
    docs = {}
    for every in ("3600", "0"):
        built.clear(), saved.clear()
        result = cli(*GRID, "--checkpoint-every", every, "--run-dir", str(tmp_path / every))
        assert result.exit_code == 0, result.stderr
        docs[every] = json.loads(result.stdout)
        assert len(built) == 4  # four cells, each built once for its three epochs
        assert sorted(saved) == ([3] * 4 if every == "3600" else [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3])
    strip = lambda doc: [{k: v for k, v in c.items() if k not in ("seconds", "model", "run_dir")}  # noqa: E731
                         for c in doc["cells"]]
    assert strip(docs["3600"]) == strip(docs["0"])
    for cell in (tmp_path / "0" / "cells").iterdir():
        a, b = runs.RunDir(cell), runs.RunDir(tmp_path / "3600" / "cells" / cell.name)
        assert [(m["train_loss"], m["test_loss"]) for m in a.read_metrics()] == \
            [(m["train_loss"], m["test_loss"]) for m in b.read_metrics()]
        assert a.load_last()["epoch"] == b.load_last()["epoch"] == 3


@pytest.mark.parametrize("value", ["-1", "nan"])
def test_a_bad_checkpoint_interval_exits_2(fake_dataset, tmp_path, value):
    for command in (["train", "--hidden", "4"], ["sweep", "--hidden", "4"]):
        result = cli(*command, "--checkpoint-every", value, "--run-dir", str(tmp_path / "x"))
        assert result.exit_code == 2 and "checkpoint_every must be" in result.stderr, result.stderr
        assert not (tmp_path / "x").exists()


class SlowTrackers:
    """A tracker slower than training: each call takes `seconds`; records the thread and the epochs."""

    def __init__(self, seconds: float) -> None:
        import threading

        self.seconds, self.calls, self.release = seconds, [], threading.Event()

    def __bool__(self) -> bool:
        return True

    def log(self, path, config, history, summary=None) -> None:
        import threading

        self.release.wait(self.seconds)
        self.calls.append((threading.current_thread().name, [p.epoch for p in history], summary is not None))


def test_the_trackers_never_hold_the_driver_and_take_the_epochs_queued_meanwhile_in_one_call(tmp_path):
    """The driver hands 8 epochs over while the first tracker call blocks: it does not wait for it,
    and the epochs that came meanwhile reach the tracker in one more call at most, from the writer
    thread; the run's end is logged once its writes are done."""
    import time

    run, trackers = runs.RunDir(tmp_path / "r"), SlowTrackers(seconds=5)
    with saving.Saver(3600, trackers=trackers) as saver:
        t0 = time.perf_counter()
        for epoch in range(1, 9):
            saver.epoch(run, CONFIG, state(epoch))
        handed_over = time.perf_counter() - t0
        trackers.release.set()  # the tracker answers now
        saver.flush()
        assert handed_over < 4  # 40 s if the driver waited for the tracker (8 calls of 5 s)
        threads, epochs, ended = zip(*trackers.calls)
        assert set(threads) == {"fmae-writer"} and not any(ended)
        assert len(epochs) <= 2 and epochs[-1] == list(range(1, 9))  # one blocked call, then the rest in one
        assert on_disk(run) == (0, 8)
        final = state(8)
        saver.finish(run, CONFIG, "completed", history_of_state(final), final["model"], {}, device="cpu",
                     wall_seconds=1.0)
    assert trackers.calls[-1][1:] == (list(range(1, 9)), True) and len(trackers.calls) == len(epochs) + 1


def test_a_failed_write_raised_before_its_tracker_call_ran_leaves_no_stray_error(tmp_path, monkeypatch):
    """The writer fails a run's metrics.csv, the driver raises that failure (the cell fails) before
    the writer reaches the run's queued tracker call: the call finds nothing to log and does nothing
    (it raised KeyError, which then crashed the whole sweep at its final flush)."""
    import threading
    import time

    raised = threading.Event()

    class Held(dict):
        """The writer, once it has recorded a failure, waits until the driver has raised it."""

        def __setitem__(self, key, value):
            super().__setitem__(key, value)
            raised.wait(10)

    run, trackers = runs.RunDir(tmp_path / "r"), SlowTrackers(seconds=0)
    write_metrics = runs.RunDir.write_metrics
    monkeypatch.setattr(runs.RunDir, "write_metrics",
                        lambda self, history: (write_metrics(self, history) if len(history) < 2
                                               else (_ for _ in ()).throw(OSError("disk full"))))
    with saving.Saver(3600, trackers=trackers) as saver:
        saver._errors = Held()
        saver.epoch(run, CONFIG, state(1))
        saver.flush()
        saver.epoch(run, CONFIG, state(2))  # its metrics.csv fails in the writer; its tracker call is queued
        deadline = time.time() + 10
        while run not in saver._errors and time.time() < deadline:
            time.sleep(0.01)
        with pytest.raises(OSError, match="disk full"):
            saver.epoch(run, CONFIG, state(3))  # the driver raises the failure: the cell fails here
        raised.set()
        saver.flush()  # nothing more to raise
    assert [epochs for _, epochs, _ in trackers.calls] == [[1]]


def test_closing_writes_every_last_pt_before_the_trackers_get_what_was_queued(tmp_path, monkeypatch):
    """On close (Ctrl-C), the tracker calls still queued wait for the last.pt writes: only the call
    under way delays them, however slow the tracker; then the trackers get every epoch."""
    import threading
    import time

    order, busy, release = [], threading.Event(), threading.Event()

    class Tracker(SlowTrackers):
        def log(self, path, config, history, summary=None):
            busy.set()
            release.wait(10)  # the first call is slow: a tracker server that hangs
            order.append(("log", path.name, len(history)))

    save_last = runs.RunDir.save_last
    monkeypatch.setattr(runs.RunDir, "save_last",
                        lambda self, *a: (order.append(("last.pt", self.path.name)), save_last(self, *a))[1])
    first, second = runs.RunDir(tmp_path / "a"), runs.RunDir(tmp_path / "b")
    saver = saving.Saver(3600, trackers=Tracker(0))
    saver.epoch(first, CONFIG, state(1))
    assert busy.wait(10)  # the writer is inside the first tracker call
    saver.epoch(second, CONFIG, state(1))
    saver.epoch(first, CONFIG, state(2))
    saver.epoch(second, CONFIG, state(2))
    closer = threading.Thread(target=saver.close)
    closer.start()
    time.sleep(0.3)  # close has asked for the last.pt files
    release.set()
    closer.join(30)
    assert not closer.is_alive()
    assert order[0] == ("log", "a", 1) and order[1:3] == [("last.pt", "a"), ("last.pt", "b")], order
    assert sorted(order[3:]) == [("log", "a", 2), ("log", "b", 2)], order
