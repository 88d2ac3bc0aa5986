"""An exclusive lock on a run or sweep directory, so two fmae processes never share one."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from fmae.errors import RunDirError
from fmae.runs import io_error, unlink_quietly

LOCK_NAME = ".fmae.lock"


class DirectoryLock:
    """An exclusive lock on a run or sweep directory: a file holding the owner's pid and host.

    A second fmae process on the same directory is refused with the owner's pid; a lock whose
    process is gone (killed with SIGKILL, say) is stale and taken over.
    """

    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / LOCK_NAME
        self.held = False
        self.created = False

    def __enter__(self) -> DirectoryLock:
        try:
            self.created = not self.path.parent.exists()
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise io_error(self.path.parent, exc) from None
        me = f"{os.getpid()} {platform.node()}\n"
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is not None:
                    raise RunDirError(f"{self.path.parent} is in use by fmae process {owner}",
                                      "wait for it to finish, or stop it; a killed process's lock is cleared "
                                      "automatically") from None
                unlink_quietly(self.path)  # stale: its process is gone
                continue
            except OSError as exc:
                raise io_error(self.path, exc) from None
            with os.fdopen(fd, "w") as fh:
                fh.write(me)
            self.held = True
            return self
        raise RunDirError(f"cannot lock {self.path.parent}", "remove the stale lock file " + str(self.path))

    def _owner(self) -> int | None:
        """The pid of a live owner on this host, or None when the lock is stale."""
        try:
            pid_text, _, host = self.path.read_text().partition(" ")
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        if host.strip() != platform.node():
            return pid  # another machine's process: cannot tell, so respect it
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid if pid != os.getpid() else None

    def __exit__(self, *exc: object) -> None:
        if self.held:
            unlink_quietly(self.path)
            self.held = False
            if self.created:  # a run that failed before writing anything leaves no empty directory
                try:
                    self.path.parent.rmdir()
                except OSError:
                    pass
