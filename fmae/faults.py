"""The test-only fault hooks, in one place: environment variables that make fmae fail, slow down or
report on purpose, so that a test can prove what happens then (and that its fault happened). Never
set outside tests; unset, each hook costs one environment look-up and changes nothing.

- FMAE_TEST_DIE_AFTER_EPOCH=`<cell name>:<epoch>`: the worker training that cell exits
  (os._exit(70), no clean-up, as if killed) after that epoch, once;
- FMAE_TEST_DIE_MARKER=path: the file the dying worker creates first, exclusively (a second
  worker to get there lives);
- FMAE_TEST_WORKER_PIDS=folder: each pool worker leaves a file there named by its pid, holding
  its index;
- FMAE_TEST_WRITE_DELAY=seconds: every atomic write sleeps between writing and renaming (the kill
  tests land SIGKILL there);
- FMAE_TEST_LOAD=number: the machine load the busy hint sees (a test machine's own load varies);
- FMAE_TEST_STALL_SECONDS=seconds: how long a sweep's cell may go without an epoch before the
  progress display says it waits for it (the default is minutes).
"""

from __future__ import annotations

import os
import time

DIE_AFTER_EPOCH = "FMAE_TEST_DIE_AFTER_EPOCH"
DIE_MARKER = "FMAE_TEST_DIE_MARKER"
WORKER_PIDS = "FMAE_TEST_WORKER_PIDS"
WRITE_DELAY = "FMAE_TEST_WRITE_DELAY"
LOAD = "FMAE_TEST_LOAD"
STALL_SECONDS = "FMAE_TEST_STALL_SECONDS"


def death() -> tuple[str, str] | None:
    """(`<cell>:<epoch>`, marker path) where a worker is to die, or None. Read in the driver and
    carried by each task, so a Ray node needs no environment of its own."""
    where = os.environ.get(DIE_AFTER_EPOCH)
    return (where, os.environ.get(DIE_MARKER, "")) if where else None


def maybe_die(fault: tuple[str, str] | None, name: str, epoch: int) -> None:
    """Exit this process at once (no clean-up, like a killed worker) if `fault` names this cell and
    epoch and no other process has died for it yet."""
    if fault is None or fault[0] != f"{name}:{epoch}":
        return
    try:
        fd = os.open(fault[1], os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # only the first worker to get here dies
    except FileExistsError:
        return
    os.write(fd, f"{os.getpid()}\n".encode())
    os.close(fd)
    os._exit(70)


def worker_pids() -> str | None:
    """The folder pool workers report their pids in, or None. Read in the driver: the fork server's
    environment is that of its start."""
    return os.environ.get(WORKER_PIDS)


def write_delay() -> None:
    """Sleep for FMAE_TEST_WRITE_DELAY seconds, if set."""
    delay = os.environ.get(WRITE_DELAY)
    if delay:
        time.sleep(float(delay))


def load() -> float | None:
    """The load a test set for the busy hint, or None (then the machine's own counts)."""
    value = os.environ.get(LOAD)
    return float(value) if value is not None else None


def stall_seconds(default: float) -> float:
    """The silence after which a sweep says which cell it waits for: `default`, unless a test set it."""
    value = os.environ.get(STALL_SECONDS)
    return float(value) if value is not None else default
