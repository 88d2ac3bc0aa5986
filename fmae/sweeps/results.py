"""A sweep's results: one row per cell of the grid, ranked by final test loss, and the files that
hold them (results.csv, results.json, results_groups.csv with several seeds, best.pt).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fmae import atomic, runs, stats
from fmae.checkpoints import load_checkpoint
from fmae.config import SweepConfig
from fmae.errors import FmaeError
from fmae.status import RANKABLE, WITH_MODEL, Status
from fmae.sweeps.directory import CellPlan, SweepDir, summary_or_none

RESULT_FIELDS = ("rank", "optim", "lr", "hidden", "seed", "status", "epochs_run", "final_train_loss",
                 "final_test_loss", "best_test_loss", "best_epoch", "seconds", "model")


def cell_epochs(rows: Sequence[dict[str, Any]], epochs: int) -> dict[str, Any]:
    """The training budget: cell-epochs trained against the full grid's (every cell to --epochs)."""
    trained = sum(int(r["epochs_run"] or 0) for r in rows)
    full = len(rows) * epochs
    return {"trained": trained, "full_grid": full, "fraction": round(trained / full, 4) if full else None}


def collect(sweep_dir: SweepDir, sweep: SweepConfig, plans: Sequence[CellPlan] = ()) -> list[dict[str, Any]]:
    """One row per cell of the (merged) grid, ranked by final test loss."""
    errors = {p.name: p.error for p in plans if p.error}
    rows = []
    for config in sweep.cells():
        run = runs.RunDir(sweep_dir.cells_dir / runs.cell_name(config))
        summary = summary_or_none(run) if run.exists else None
        status = Status.FAILED if run.path.name in errors else (summary or {}).get("status", Status.PENDING)
        model = run.file("model.pt")
        rows.append({
            "rank": None, "optim": config.optim, "lr": config.lr, "hidden": config.model.hidden,
            "seed": config.seed, "status": status,
            "epochs_run": (summary or {}).get("epochs_run", _saved_epochs(run)),
            "final_train_loss": (summary or {}).get("final_train_loss"),
            "final_test_loss": (summary or {}).get("final_test_loss"),
            "best_test_loss": (summary or {}).get("best_test_loss"),
            "best_epoch": (summary or {}).get("best_epoch"),
            "seconds": (summary or {}).get("train_seconds"),
            "model": str(model) if status in WITH_MODEL and model.exists() else None,
            "error": errors.get(run.path.name),
        })
    _rank(rows)
    return rows


def _saved_epochs(run: runs.RunDir) -> int:
    """Epochs saved by a cell without a summary (interrupted, or killed): what a rerun resumes from."""
    try:
        return int(run.load_last()["epoch"]) if run.file("last.pt").exists() else 0
    except FmaeError:
        return 0


def _rank(rows: list[dict[str, Any]]) -> None:
    """Rank the rows with a model and a finite final test loss, best first; sort the list in place."""
    for row in rows:
        row["rank"] = None
    ranked = sorted((r for r in rows if r["status"] in RANKABLE and r["model"]
                     and runs.finite_or_none(r["final_test_loss"]) is not None),
                    key=lambda r: r["final_test_loss"])
    for i, row in enumerate(ranked, 1):
        row["rank"] = i
    rows.sort(key=lambda r: (r["rank"] is None, r["rank"] or 0))


def best_per_optim(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The best-ranked row (a cell, or a group of seeds) of each optimizer."""
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["rank"] is not None and row["optim"] not in out:
            out[row["optim"]] = row
    return out


def seed_groups(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The cells grouped over seeds, when the grid has several seeds (else None: nothing to group)."""
    return stats.groups(rows) if stats.has_seeds(rows) else None


def document(sweep_dir: SweepDir, rows: list[dict[str, Any]], best: dict[str, Any] | None, epochs: int,
             prune: dict[str, Any] | None) -> dict[str, Any]:
    """What `fmae sweep --json` prints: the ranked cells, the best cell (and group) per optimizer,
    the training budget spent, the pruning used."""
    doc = {"schema_version": runs.SCHEMA_VERSION, "sweep_dir": str(sweep_dir.path), "cells": rows, "best": best,
           "best_per_optim": best_per_optim(rows), "cell_epochs": cell_epochs(rows, epochs)}
    if prune is not None:
        doc["prune"] = prune
    group_rows = seed_groups(rows)
    if group_rows is not None:
        doc.update(groups=group_rows, best_group_per_optim=best_per_optim(group_rows))
    return doc


def _csv(rows: Sequence[dict[str, Any]], fields: Sequence[str]) -> str:
    import csv
    import io

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(fields), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (json.dumps(v, sort_keys=True) if isinstance(v, dict) else v) for k, v in row.items()})
    return out.getvalue()


def _checked_best(rows: list[dict[str, Any]]) -> bytes | None:
    """The bytes of the best cell's model.pt, once they load safely; a cell whose model.pt does not
    fails its row (in place) and the next best is taken."""
    while rows and rows[0]["rank"] == 1:
        try:
            best_bytes = Path(rows[0]["model"]).read_bytes()
            load_checkpoint(rows[0]["model"], "model", data=best_bytes)
            return best_bytes
        except (OSError, FmaeError) as exc:
            why = exc.message if isinstance(exc, FmaeError) else f"cannot read {rows[0]['model']}: {exc.strerror}"
            rows[0].update(status=Status.FAILED, model=None, error=f"{why} (hint: to redo only this cell, remove "
                           f"{Path(rows[0]['model']).parent} and run the same fmae sweep command again)")
            _rank(rows)
    return None


def write(sweep_dir: SweepDir, rows: list[dict[str, Any]], epochs: int,
          prune: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """results.csv, results.json (with results_groups.csv when there are several seeds; with the
    pruning used, if any) and best.pt (a copy of the best cell's model.pt, checked to load first);
    returns the best row."""
    best_bytes = _checked_best(rows)
    atomic.write_text(sweep_dir.path / "results.csv", _csv(rows, [*RESULT_FIELDS, "error"]))
    best = rows[0] if rows and rows[0]["rank"] == 1 else None
    doc: dict[str, Any] = {"schema_version": runs.SCHEMA_VERSION, "cells": list(rows), "best": best,
                           "cell_epochs": cell_epochs(rows, epochs)}
    if prune is not None:
        doc["prune"] = prune
    group_rows = seed_groups(rows)
    if group_rows is not None:
        atomic.write_text(sweep_dir.path / "results_groups.csv", _csv(group_rows, stats.GROUP_FIELDS))
        doc["groups"] = group_rows
    atomic.write_json(sweep_dir.path / "results.json", doc)
    if best is not None and best_bytes is not None:
        atomic.write_bytes(sweep_dir.path / "best.pt", best_bytes)
    return best
