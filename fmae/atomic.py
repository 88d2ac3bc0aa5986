"""Atomic files: every file fmae writes goes to a temporary name in its own directory and is moved
into place with os.replace, so a kill at any moment leaves the previous version intact.

This room owns the temporary names (`.<name>.<8 random characters>.tmp`), how to recognise one
left by a killed process, and the one error a failed write becomes.
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fmae import faults
from fmae.errors import RunDirError

# `.<name>.<8 random characters>.tmp`: what write_bytes leaves when killed mid-write
TEMP_NAME = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp")
NAME_MAX = 255  # bytes in one file name on common filesystems


def io_error(path: Path, exc: OSError) -> RunDirError:
    return RunDirError(f"cannot write {path}: {exc.strerror or exc}", "check the path, its permissions and free space")


def write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise io_error(path, exc) from None
    try:
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        faults.write_delay()  # test-only: widens the window a kill test lands SIGKILL in
        os.replace(tmp, path)
    except OSError as exc:
        unlink_quietly(tmp)
        raise io_error(path, exc) from None
    except BaseException:
        unlink_quietly(tmp)
        raise


def _temp_prefix(name: str) -> str:
    """`.<name>.`, the name cut so that the whole temporary name fits in NAME_MAX bytes."""
    room = NAME_MAX - len(". .12345678.tmp")
    return "." + name.encode()[:room].decode(errors="ignore") + "."


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def unlink_quietly(path: str | Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def torch_save(path: Path, obj: dict[str, Any]) -> None:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getvalue())


def is_temporary(name: str, targets: Sequence[str]) -> bool:
    """Whether `name` is fmae's temporary for one of `targets` (left by a process killed mid-write)."""
    match = TEMP_NAME.fullmatch(name)
    return match is not None and match["target"] in targets
