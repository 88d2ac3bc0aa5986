"""Plain functions the tests share (fixtures live in conftest.py): `fmae` in this process and the
arguments of a tiny run, Ctrl-C at a save, the one error line; a tiny config, resume states after
n epochs and the engines' tolerance; a tiny Fashion-MNIST look-alike, where the real dataset is,
the environment for running the installed `fmae`, reaping a child, sweep comparison, and a progress
object that records what a library call reports."""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner, Result

from fmae import data, runs
from fmae import engine as engines
from fmae.config import ModelConfig, TrainConfig

STEMS = list(data.CHECKSUMS)


def cli(*args: object, **kw) -> Result:
    """`fmae ARGS` in this process through Typer's CliRunner (stdout and stderr apart, exceptions
    caught into the result); each argument goes through str(), so paths and numbers pass as they
    are. `kw`: CliRunner.invoke's own (env, input, ...)."""
    from fmae.cli import app  # the tests' one name for where the CLI lives

    return CliRunner().invoke(app, [str(a) for a in args], **kw)


def tiny(epochs: int = 2, *, hidden: int | None = 8, quiet: bool = True) -> list[str]:
    """The arguments of a run small enough for the tiny dataset: `--hidden 8 --batch-size 16
    --epochs 2 -q`. hidden=None leaves --hidden out (a sweep names its own list)."""
    return [*(["--hidden", str(hidden)] if hidden is not None else []), "--batch-size", "16",
            "--epochs", str(epochs), *(["-q"] if quiet else [])]


@contextmanager
def ctrl_c_at_save(n: int, *, saved: bool = True) -> Iterator[None]:
    """Ctrl-C (a KeyboardInterrupt in the main thread) at the n-th finished epoch the driver hands
    to its saver, counting every cell's and every command's in the block: right after that epoch is
    saved, or with saved=False instead of saving it; every later one is refused too. Undone when
    the block ends."""
    from fmae import saving

    save, calls = saving.Saver.epoch, 0  # the driver's one door for a finished epoch

    def interrupting(self, *args, **kwargs):
        nonlocal calls
        calls += 1
        if calls > n or (calls == n and not saved):
            raise KeyboardInterrupt
        history = save(self, *args, **kwargs)
        if calls == n:
            raise KeyboardInterrupt
        return history

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(saving.Saver, "epoch", interrupting)
        yield


def one_error_line(stderr: str, needle: str = "", stdout: str = "") -> str:
    """The one line a failed command printed: `error: ...` holding `needle`, with neither a
    traceback nor "unexpected" anywhere in its output."""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], stderr
    assert "unexpected" not in stderr + stdout and "Traceback" not in stderr + stdout, stderr + stdout
    return lines[0]


def tiny_config(**kw) -> TrainConfig:
    """A resolved TrainConfig for the tiny dataset: hidden 8, Adam, 3 epochs, batch 16, seed 0,
    unless `kw` says otherwise."""
    return TrainConfig(**{"model": ModelConfig(hidden=8), "optim": "adam", "epochs": 3, "batch_size": 16,
                          "seed": 0, **kw})


def states_at(configs, data, epochs: int, engine: str) -> list[dict]:
    """Each config's resume state after `epochs` epochs with `engine` (copies, as a saver keeps
    them): what last.pt holds when a kill lands there."""
    states: list[dict | None] = [None] * len(configs)
    cpu = torch.device("cpu")

    def keep(index, cell, metrics, data_rng):
        states[index] = copy.deepcopy(cell.resume_state(data_rng))

    if engine == "stacked":
        engines.train_many(configs, data, cpu, engine=engine, on_epoch=keep, max_epochs=epochs)
    else:  # the per-cell engine trains cells of one seed together only: one by one
        for i, config in enumerate(configs):
            engines.train_many([config], data, cpu, engine=engine, max_epochs=epochs,
                               on_epoch=lambda _i, cell, m, rng, i=i: keep(i, cell, m, rng))
    return states


STACKED_REL = 0.0  # the stacked engine against the per-cell loop on the CPU: bit for bit


def close(a: float, b: float, rel: float = STACKED_REL) -> bool:
    return abs(a - b) <= rel * abs(b)


def assert_same_histories(stacked, alone) -> None:
    """The same status and epochs, and each epoch's losses equal to the last bit (two TrainResults)."""
    assert stacked.status == alone.status
    assert [(m.epoch, m.train_loss, m.test_loss) for m in stacked.history] == \
        [(m.epoch, m.train_loss, m.test_loss) for m in alone.history]


def same_nest(a, b) -> bool:
    """Two nests of dicts, lists and tensors equal to the last bit (tensors: dtype, shape, values)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_nest(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same_nest(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    return a == b


def layout(obj):
    """Keys, shapes, dtypes, devices and plain types of a nest of tensors: what must match between
    the resume states, checkpoints and optimizer states of two engines."""
    if isinstance(obj, dict):
        return {k: layout(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [layout(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return (tuple(obj.shape), obj.dtype, obj.device.type)
    return type(obj).__name__


def idx_bytes(images: bool, count: int, seed: int = 0) -> bytes:
    import random

    rng = random.Random(seed)
    if images:
        header = (0x803).to_bytes(4, "big") + count.to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
        # smooth blobs rather than white noise, so an autoencoder has something to learn
        body = bytearray()
        for _ in range(count):
            cx, cy, r = rng.randint(6, 21), rng.randint(6, 21), rng.randint(3, 9)
            body += bytes(255 if (x - cx) ** 2 + (y - cy) ** 2 < r * r else 0 for y in range(28) for x in range(28))
        return header + bytes(body)
    header = (0x801).to_bytes(4, "big") + count.to_bytes(4, "big")
    return header + bytes(rng.randrange(10) for _ in range(count))


def write_dataset(directory: Path, *, n_train: int = 64, n_test: int = 16, gz: bool = True) -> dict[str, str]:
    """Write a tiny Fashion-MNIST look-alike; returns the sha256 of each decompressed file."""
    directory.mkdir(parents=True, exist_ok=True)
    sums = {}
    for i, stem in enumerate(STEMS):
        count = n_train if stem.startswith("train") else n_test
        raw = idx_bytes("images" in stem, count, seed=i)
        sums[stem] = hashlib.sha256(raw).hexdigest()
        if gz:
            (directory / (stem + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (directory / stem).write_bytes(raw)
    return sums


def locate_real_data() -> Path:
    """The real dataset, or a failure that says how to get it (never a skip: CI must run these).
    Tests reach it through the `real_data_dir` fixture, which checks their `dataset` mark."""
    for _, path in data.candidates(None):
        if path is not None and data.has_dataset(path, data.CHECKSUMS):
            return path
    pytest.fail(
        "these tests need the real Fashion-MNIST: `sudo apt-get install dataset-fashion-mnist` "
        "(or set FMAE_DATA_DIR); deselect them with -m 'not dataset'"
        + (" [CI=true]" if os.environ.get("CI") == "true" else "")
    )


def installed_env(**extra: str) -> dict[str, str]:
    """The environment for running the installed `fmae`: its bin directory first on PATH
    (pyenv shims may not know a console script installed a moment ago), and without
    PYTHONUNBUFFERED, which a CI shell may set and a user's does not (stdout into a file or a
    pipe is then block-buffered, and flushed at exit: the case a full disk must be seen in)."""
    import shutil
    import sys

    # a virtual environment's bin first (its python is a link to one outside it), then the interpreter's own
    bin_dirs = dict.fromkeys([str(Path(sys.executable).parent), str(Path(sys.executable).resolve().parent)])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env = {**env, "PATH": os.pathsep.join([*bin_dirs, os.environ.get("PATH", "")]), **extra}
    assert shutil.which("fmae", path=env["PATH"]), "fmae is not installed: pip install -e '.[test]'"
    return env


def reap(proc: subprocess.Popen) -> None:
    """Kill a child still running and wait for it: a failed test leaves no process behind."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def default_sigint() -> None:
    """In the child: Ctrl-C's default action, which a shell without job control (CI) sets to ignore."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def metrics_losses(path: Path) -> list[str]:
    """The lines of a metrics.csv without their last column (seconds, which varies): the header and
    each epoch's losses as written."""
    return [line.rsplit(",", 1)[0] for line in path.read_text().splitlines()]


class Recorder:
    """A progress object (fmae.progress.Progress) that keeps what a library call reports."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.entered = self.left = 0

    def __enter__(self) -> Recorder:
        self.entered += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.left += 1

    def message(self, text: str) -> None:
        self.lines.append(text)


def state_dict(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def assert_same_sweep(a: Path, b: Path) -> None:
    """Losses exactly, weights bit for bit, the same best.pt and ranking; every cell saved by the driver."""
    names = sorted(p.name for p in (a / "cells").iterdir())
    assert names == sorted(p.name for p in (b / "cells").iterdir()) and len(names) == 4
    for name in names:
        ra, rb = runs.RunDir(a / "cells" / name), runs.RunDir(b / "cells" / name)
        assert [(m["train_loss"], m["test_loss"]) for m in ra.read_metrics()] == \
            [(m["train_loss"], m["test_loss"]) for m in rb.read_metrics()]
        wa, wb = state_dict(ra.file("model.pt")), state_dict(rb.file("model.pt"))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
        last_a, last_b = ra.load_last(), rb.load_last()
        assert all(torch.equal(last_a["model"][k], last_b["model"][k]) for k in last_a["model"])
        assert json.loads(ra.file("config.json").read_text())["environment"]["threads"] == 1
        status = json.loads(ra.file("summary.json").read_text())["status"]
        assert status == json.loads(rb.file("summary.json").read_text())["status"]
        assert status in ("completed", "collapsed")  # Adam at lr 0.1 kills every hidden unit of some cells here
    ba, bb = state_dict(a / "best.pt"), state_dict(b / "best.pt")
    assert all(torch.equal(ba[k], bb[k]) for k in ba)
    rows = lambda p: [(r["optim"], r["hidden"], r["rank"], r["final_test_loss"])  # noqa: E731
                      for r in json.loads((p / "results.json").read_text())["cells"]]
    assert rows(a) == rows(b)
