"""fmae's record of what it owns in a directory: `.fmae.json`, written into each run and sweep
directory before any other file of fmae's, and kept until the directory is fmae's no more.

It names fmae, the kind of directory (`run` or `sweep`) and the files fmae wrote there. What
--overwrite removes, and which directories fmae may write in, follows from this record (or, for a
directory made before fmae wrote one, from fmae's own files there, checked to be fmae's): never
from a file's mere name. A kill at any moment leaves the record in place, so the directory stays
fmae's and the same command, or --overwrite, takes it up again.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from fmae import atomic
from fmae.errors import RunDirError

MANIFEST = ".fmae.json"
KINDS = ("run", "sweep")
NOTE = "written by fmae: the files listed are fmae's, and --overwrite removes these only"


class Record(NamedTuple):
    kind: str  # "run" or "sweep"
    files: tuple[str, ...]  # what fmae wrote there (and may remove)
    resetting: bool  # an --overwrite began removing them: the next run (plain or not) finishes the job


def read(directory: Path) -> Record | None:
    """The record in `directory`, None without one; a damaged record is named."""
    import json

    path = Path(directory) / MANIFEST
    try:
        if stat.S_ISLNK(os.lstat(path).st_mode):
            raise RunDirError(f"{path} is a symbolic link, not fmae's record", "remove it; fmae writes its own")
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RunDirError(f"{path}: unreadable or not JSON ({exc})", "remove it if fmae did not write it") from None
    files = doc.get("files") if isinstance(doc, dict) else None
    if not (isinstance(doc, dict) and doc.get("fmae") in KINDS and isinstance(files, list)
            and all(isinstance(f, str) and f and "/" not in f and f not in (".", "..") for f in files)):
        raise RunDirError(f"{path}: not fmae's record of its files", "remove it if fmae did not write it")
    return Record(doc["fmae"], tuple(files), doc.get("resetting") is True)


def write(directory: Path, kind: str, files: Sequence[str], *, resetting: bool = False) -> None:
    doc = {"fmae": kind, "files": sorted(set(files)), "note": NOTE}
    atomic.write_json(Path(directory) / MANIFEST, {**doc, "resetting": True} if resetting else doc)


def remove_owned(directory: Path, files: Sequence[str]) -> None:
    """Remove the files fmae owns here and their stale temporaries; a link is removed, never followed."""
    for name in files:
        atomic.unlink_quietly(Path(directory) / name)
    remove_stale_temporaries(directory, files)


def remove_stale_temporaries(directory: Path, targets: Sequence[str]) -> None:
    """fmae's own temporaries of `targets` (and of its record) left by a process killed mid-write;
    any other file, even one named like a temporary, is left alone."""
    try:
        names = [p.name for p in Path(directory).iterdir()]
    except OSError:
        return
    for name in names:
        if atomic.is_temporary(name, (*targets, MANIFEST)):
            atomic.unlink_quietly(Path(directory) / name)
