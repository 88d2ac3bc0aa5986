"""An exclusive lock on a run or sweep directory, so two fmae processes never share one.

The lock is an OS advisory lock (fcntl.flock) on `.fmae.lock`, held for as long as the process
holds the directory: the kernel releases it when the process ends, however it ends, so a killed
owner's lock is free again without guessing from pids. The owner record in the file (pid and
host) only tells the user who holds it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import platform
from contextlib import ExitStack
from pathlib import Path

from fmae.atomic import io_error
from fmae.errors import RunDirError
from fmae.manifest import MANIFEST

LOCK_NAME = ".fmae.lock"


class DirectoryLock:
    """`with DirectoryLock(path):` holds `path` exclusively or raises RunDirError naming the owner.

    Acquisition: open (creating) the lock file, flock it without blocking, then check that the
    path still names the inode we locked (a releasing owner unlinks the file while it still holds
    the lock, so a process that locked the unlinked inode retries on the new file). A record left
    by a process on another host is respected (its lock may not reach us through a network
    filesystem): the user is told its pid and host and how to remove it.
    """

    def __init__(self, directory: Path, *, what: str = "") -> None:
        self.path = Path(directory) / LOCK_NAME
        self.what = what  # how the refusal names the directory, e.g. "the sweep holding ..."
        self.fd: int | None = None
        self.created = False

    def __enter__(self) -> DirectoryLock:
        if self.path.parent.exists() and not self.path.parent.is_dir():  # `--run-dir afile`
            raise RunDirError(f"{self.path.parent} exists and is not a directory", "choose another --run-dir")
        try:
            self.created = not self.path.parent.exists()
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise io_error(self.path.parent, exc) from None
        for _ in range(100):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
            except OSError as exc:
                raise io_error(self.path, exc) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                    raise io_error(self.path, exc) from None
                raise self._refusal(self._record()) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the owner released (and unlinked) it between our open and flock: try again
                os.close(fd)
                continue
            self.fd = fd
            record = self._record()
            if record and record[1] != platform.node():
                self._release(unlink=False)
                raise self._refusal(record, foreign_host=True)
            self._write_record()
            return self
        raise RunDirError(f"cannot lock {self.path.parent}: the lock file keeps changing",
                          f"stop the other fmae processes using it, then remove {self.path}")

    def _record(self) -> tuple[str, str] | None:
        """(pid, host) from the lock file, or None when it is empty or unreadable."""
        try:
            pid, _, host = self.path.read_text(encoding="utf-8", errors="replace").strip().partition(" ")
        except OSError:
            return None
        return (pid, host.strip()) if pid else None

    def _refusal(self, record: tuple[str, str] | None, *, foreign_host: bool = False) -> RunDirError:
        where = self.what or str(self.path.parent)
        pid, host = record or ("(unknown pid)", "")
        if foreign_host:
            return RunDirError(
                f"{where} is locked by fmae process {pid} on host {host}",
                f"if no fmae process runs there any more, remove {self.path}")
        return RunDirError(f"{where} is in use by fmae process {pid}" + (f" on {host}" if host else ""),
                           "wait for it to finish, or stop it (its lock goes with it)")

    def _write_record(self) -> None:
        assert self.fd is not None
        try:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, f"{os.getpid()} {platform.node()}\n".encode(), 0)
        except OSError as exc:
            self._release(unlink=True)
            raise io_error(self.path, exc) from None

    def _release(self, *, unlink: bool) -> None:
        if self.fd is None:
            return
        if unlink:  # while still holding the lock: a waiting process then retries on a fresh file
            try:
                os.unlink(self.path)
            except OSError:
                pass
        os.close(self.fd)  # releases the flock
        self.fd = None
        if unlink and self.created:  # a run that failed before writing anything leaves no empty directory
            try:
                self.path.parent.rmdir()
            except OSError:
                pass

    @property
    def held(self) -> bool:
        return self.fd is not None

    def __exit__(self, *exc: object) -> None:
        self._release(unlink=True)


def enclosing_sweep(directory: Path) -> Path | None:
    """The sweep directory that `directory` is a cell of (SWEEP/cells/<cell>), if any: one holding
    sweep.json, fmae's record, or a lock (a sweep locks its directory the moment it starts, long
    before it writes anything there: from then on its cells are its own)."""
    parent = Path(directory).resolve().parent  # a link to a cell is still that cell
    marks = ("sweep.json", MANIFEST, LOCK_NAME)
    return parent.parent if parent.name == "cells" and any((parent.parent / m).exists() for m in marks) else None


def lock_run_dir(directory: Path) -> ExitStack:
    """Lock a run or sweep directory, and the sweep it belongs to when it is a sweep's cell: a
    running sweep's cells cannot be changed under it, and a cell being trained holds off its sweep."""
    with ExitStack() as stack:
        sweep = enclosing_sweep(directory)
        if sweep is not None:
            stack.enter_context(DirectoryLock(sweep, what=f"{directory} is a cell of sweep {sweep}, which"))
        stack.enter_context(DirectoryLock(directory))
        return stack.pop_all()
