"""Runs and sweeps logged to the trackers from their files: `fmae export` for those made before
(or without) --tensorboard/--mlflow, and a live sweep's catch-up at its start and end. The calls
are the live ones (fmae.trackers.Trackers), so the layout is the same and a second export adds
nothing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fmae import runs
from fmae.execution import TrackerConfig
from fmae.progress import Progress
from fmae.trackers import Trackers, open_trackers
from fmae.trackers.base import TrackerError


def begin_sweep(trackers: Trackers, sweep_dir: Path) -> None:
    """The sweep in `sweep_dir` (its sweep.json's grid) as the parent of the runs logged next."""
    if trackers:
        trackers.begin_sweep(sweep_dir, runs.read_json(sweep_dir / "sweep.json")["grid"])


def log_cells(trackers: Trackers, sweep_dir: Path, finished_only: bool = False) -> int:
    """Each of fmae's cells of the sweep: its epochs (metrics.csv) and, once it ended, its summary;
    returns the epochs they hold. `finished_only`: cells that have a summary (a live sweep's start:
    the unfinished ones catch up when they resume). A cell without one is not training now (it
    failed, or waits for a rerun)."""
    from fmae.sweeps.directory import SweepDir, summary_or_none

    epochs = 0
    if not trackers:
        return epochs
    for run in SweepDir(sweep_dir).fmae_cells():
        summary = summary_or_none(run)
        if summary is None and finished_only:
            continue
        metrics = run.read_metrics()
        trackers.log(run.path, None, metrics, summary, running=False)
        epochs += len(metrics)
    return epochs


def end_sweep(trackers: Trackers, sweep_dir: Path, doc: dict[str, Any]) -> None:
    """Every cell as its files say, then the sweep's results: its best cell, its seed groups."""
    if trackers:
        log_cells(trackers, sweep_dir)
        trackers.end_sweep(doc)


def run_export(paths: Sequence[Path], config: TrackerConfig, progress: Progress) -> dict[str, Any]:
    """`fmae export`: log each run or sweep directory in `paths` to the tracker `config` names
    (holding each directory's lock: its trackers.json is written); returns what was exported (the
    `--json` document). A tracker that fails is a TrackerError, after the directories before it
    were exported."""
    from fmae.locks import lock_run_dir

    rows = []
    with progress, open_trackers(config, progress.message, live=False) as trackers:
        for path in paths:
            before = trackers.sent
            kind, records = runs.read_source(path)
            with lock_run_dir(Path(path)):
                if kind == "sweep":
                    begin_sweep(trackers, Path(path))
                    results = Path(path) / "results.json"
                    doc = runs.read_json(results) if results.exists() else {"cells": [], "best": None}
                    end_sweep(trackers, Path(path), doc if isinstance(doc, dict) else {"cells": [], "best": None})
                else:
                    from fmae.sweeps.directory import summary_or_none

                    trackers.log(records[0].path, records[0].config, records[0].metrics,
                                 summary_or_none(runs.RunDir(records[0].path)), running=False)
            if trackers.failures:
                raise TrackerError(f"export of {path} failed ({trackers.failures[0]})",
                                   "the directories before it were exported; run the same command again")
            rows.append({"path": str(path), "kind": kind, "runs": len(records),
                         "epochs": sum(len(r.metrics) for r in records), "new_values": trackers.sent - before})
    tracker = "tensorboard" if config.tensorboard is not None else "mlflow"
    return {"schema_version": runs.SCHEMA_VERSION, "tracker": tracker,
            "to": str(config.tensorboard) if config.tensorboard is not None else config.mlflow, "exported": rows}
