"""The status vocabulary: how a training run or a sweep's cell stands or ended, written once.

Status is a str enum: a status compares, hashes, formats and serialises (JSON, CSV) as its plain
string, so files and output hold a status's plain string. Checkpoints store the plain
string (`str(status)`): torch's safe unpickler loads no enum. No other module spells a status.
"""

from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    RUNNING = "running"  # epochs to go (an engine stopped by max_epochs leaves a cell so: resumable)
    COMPLETED = "completed"  # its epochs reached
    STOPPED_EARLY = "stopped_early"  # early stopping (--patience, --min-delta)
    DIVERGED = "diverged"  # a non-finite train or test loss: no model.pt
    COLLAPSED = "collapsed"  # every test image gets the same output
    PRUNED = "pruned"  # successive halving stopped it at a rung (resumable)
    FAILED = "failed"  # a sweep's cell that raised, or was refused while planning
    INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM
    PENDING = "pending"  # a sweep's cell without a summary.json yet
    UNFINISHED = "unfinished"  # a run directory read back without a summary.json

    __str__ = lambda self: self.value  # noqa: E731 - as str does: the value, not "Status.RUNNING"
    __format__ = str.__format__


SET_BY_ENGINE = (Status.RUNNING, Status.COMPLETED, Status.STOPPED_EARLY, Status.DIVERGED,
                 Status.COLLAPSED)  # what an engine sets
RANKABLE = (Status.COMPLETED, Status.STOPPED_EARLY)  # the statuses a cell is ranked with
WITH_MODEL = (*RANKABLE, Status.COLLAPSED)  # the statuses whose run directory holds a model.pt
FINISHED = (*RANKABLE, Status.DIVERGED, Status.COLLAPSED)  # a sweep's cell that trains no more
MARKED = (Status.DIVERGED, Status.COLLAPSED, Status.PRUNED)  # cells a heatmap names instead of ranking
LOST = (Status.DIVERGED, Status.COLLAPSED)  # finished without a usable model: halving never keeps them
# The statuses `--fail-on` may name: a run or cell ending in one of them exits 3 (failed exits 1 already).
FAIL_ON = (Status.DIVERGED, Status.COLLAPSED, Status.STOPPED_EARLY, Status.PRUNED)
