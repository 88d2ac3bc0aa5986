"""The sweep directory: checked, reset, planned into cells; a cell's summary read back.

A cell is a self-contained unit: a TrainConfig (and its resume state) in, a training run
directory out. Running the cells is fmae.sweeps.run's; successive halving is
fmae.sweeps.halving's; the ranked results and their files are fmae.sweeps.results'.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmae import atomic, manifest, runs
from fmae.config import SharedSettings, SweepConfig, TrainConfig
from fmae.errors import ConfigError, FmaeError, RunDirError
from fmae.locks import LOCK_NAME
from fmae.status import FINISHED, Status

GRID_KEYS = {"optim": (str,), "lr": (float, int), "hidden": (int,), "seed": (int,)}  # sweep.json's grid


@dataclass
class CellPlan:
    config: TrainConfig
    run: runs.RunDir
    resume: dict[str, Any] | None = None
    done: bool = False
    error: str | None = None
    saved_status: str | None = None  # what summary.json said when the sweep started (pruned: resumable, not done)

    @property
    def name(self) -> str:
        return self.run.path.name

    @property
    def start_epoch(self) -> int:
        return int(self.resume["epoch"]) if self.resume else 0


@dataclass
class SweepDir:
    path: Path
    cells_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.cells_dir = self.path / "cells"

    def open(self, sweep: SweepConfig, *, overwrite: bool) -> SweepConfig:
        """Check an existing sweep directory against `sweep`; returns the grid to report on (the union).

        Changes nothing on disk. A directory holding files but neither a sweep nor a training run
        of fmae's is refused, with --overwrite too: fmae replaces only what it wrote.
        """
        runs.check_text_path(self.path)
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"{self.path} exists and is not a directory", "choose another --run-dir")
        if self.cells_dir.is_symlink() or (self.cells_dir.exists() and not self.cells_dir.is_dir()):
            raise RunDirError(f"{self.cells_dir} is not a directory of its own (a link, or a file)",
                              "fmae never writes through a link: choose another --run-dir")
        record = manifest.read(self.path) if self.path.is_dir() else None
        doc_path = self.path / "sweep.json"
        if record is not None and record[0] == "run" or (
                record is None and runs.RunDir(self.path).exists and not doc_path.exists()):
            if not overwrite:
                raise RunDirError(f"{self.path} holds a training run, not a sweep",
                                  "choose another --run-dir, or add --overwrite to replace the run with the sweep")
            if record is None:
                runs.RunDir(self.path).saved_config()  # refuses a config.json that fmae did not write
            return sweep
        if record is None and not doc_path.exists():
            runs.refuse_foreign(self.path, runs.SWEEP_FILES)
            return sweep
        if record is not None and not doc_path.exists():  # a sweep being started, or reset
            left = [n for n in (*record.files, "cells") if (self.path / n).exists()]
            if left and not overwrite and not record.resetting:
                raise RunDirError(f"{self.path} holds files of an fmae sweep but no sweep.json ({', '.join(left)})",
                                  "add --overwrite to start it anew, or choose another --run-dir")
            return sweep
        if overwrite and record is not None:
            return sweep  # fmae's by its record: --overwrite starts it anew
        old = self._read_doc(doc_path)
        if overwrite:
            return sweep
        shared, new = dict(old.shared()), sweep.shared()
        if shared["epochs"] < new["epochs"]:
            shared["epochs"] = new["epochs"]  # more epochs: every cell trains on from its last.pt
        if shared != new:
            diff = ", ".join(f"{k} {shared.get(k)!r} -> {new.get(k)!r}" for k in new if shared.get(k) != new.get(k))
            raise RunDirError(f"{self.path} holds a sweep with other shared settings ({diff})",
                              "use --overwrite to start it anew, or choose another --run-dir"
                              + ("; --epochs may only grow" if "epochs" in diff else ""))
        merge = lambda old, new: tuple(dict.fromkeys([*old, *new]))  # noqa: E731 - keeps order, drops repeats
        return SweepConfig(optims=merge(old.optims, sweep.optims), lrs=merge(old.lrs, sweep.lrs),
                           hiddens=merge(old.hiddens, sweep.hiddens), seeds=merge(old.seeds, sweep.seeds),
                           base=sweep.base)

    @staticmethod
    def _read_doc(path: Path) -> SweepConfig:
        """sweep.json as the grid it records, checked to be what fmae writes (every value's type and range)."""
        doc = runs.read_json(path)
        hint = "fmae did not write it, or it was edited: choose an empty or new directory"
        grid = doc.get("grid") if isinstance(doc, dict) else None
        shared = doc.get("shared") if isinstance(doc, dict) else None
        if not (isinstance(grid, dict) and isinstance(shared, dict) and set(grid) == set(GRID_KEYS)
                and all(isinstance(v, list) for v in grid.values()) and isinstance(shared.get("model"), dict)):
            raise RunDirError(f"{path}: not an fmae sweep file (expected grid lists and shared settings)", hint)
        try:
            base = SharedSettings.from_dict(shared)
            for name, values in grid.items():
                bad = [v for v in values if isinstance(v, bool) or not isinstance(v, GRID_KEYS[name])]
                if bad:
                    raise ConfigError(f"{name} {bad[0]!r} is not a {GRID_KEYS[name][0].__name__}")
            sweep = SweepConfig(optims=tuple(grid["optim"]), lrs=tuple(float(v) for v in grid["lr"]),
                                hiddens=tuple(grid["hidden"]), seeds=tuple(grid["seed"]), base=base)
        except ConfigError as exc:
            raise RunDirError(f"{path}: not an fmae sweep file ({exc.message.replace('--', '')})", hint) from None
        if sweep.shared() != shared:
            raise RunDirError(f"{path}: not an fmae sweep file (its shared settings are not fmae's)", hint)
        return sweep

    def owned_files(self) -> tuple[str, ...]:
        """The sweep-level files fmae wrote here, as its record names them (for a sweep made before
        fmae kept one, runs.SWEEP_FILES when its sweep.json is fmae's; a training run's when it held one)."""
        record = manifest.read(self.path) if self.path.is_dir() else None
        if record is not None:
            return record[1]
        if (self.path / "sweep.json").exists():
            try:
                self._read_doc(self.path / "sweep.json")
            except RunDirError:
                return ()
            return runs.SWEEP_FILES
        return runs.RunDir(self.path).owned_files()

    def reset(self, overwrite: bool) -> None:
        """Make the directory fmae's sweep directory: its record first (naming what fmae wrote here
        before too, and that a reset is under way, until it is done). With --overwrite, or to finish
        a reset that a kill interrupted, remove what fmae wrote here before: its files and its cells,
        nothing else and never through a link. Always, fmae's stale temporaries."""
        record = manifest.read(self.path) if self.path.is_dir() else None
        fresh = overwrite or (record is not None and record.resetting) or not (self.path / "sweep.json").exists()
        owned = self.owned_files() if fresh else ()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise atomic.io_error(self.path, exc) from None
        manifest.write(self.path, "sweep", (*runs.SWEEP_FILES, *owned), resetting=fresh)
        if fresh:
            manifest.remove_owned(self.path, owned)
            for cell in self.fmae_cells():
                manifest.remove_owned(cell.path, cell.owned_files())
                atomic.unlink_quietly(cell.path / LOCK_NAME)  # nobody holds it: we hold the sweep's
                atomic.unlink_quietly(cell.path / manifest.MANIFEST)  # last: until here a kill leaves it fmae's
                _rmdir_quietly(cell.path)
            _rmdir_quietly(self.cells_dir)
            manifest.write(self.path, "sweep", runs.SWEEP_FILES)
        manifest.remove_stale_temporaries(self.path, runs.SWEEP_FILES)

    def fmae_cells(self) -> list[runs.RunDir]:
        """The cells fmae made: directories (never links) under cells/ that its record says are fmae's
        runs, or (made before fmae kept records) holding fmae's run of the very config the name says."""
        try:
            entries = sorted(self.cells_dir.iterdir()) if self.cells_dir.is_dir() and not self.cells_dir.is_symlink() \
                else []
        except OSError:
            return []
        cells = []
        for entry in entries:
            if entry.is_symlink() or not entry.is_dir():
                continue
            run = runs.RunDir(entry)
            try:
                record = manifest.read(entry)
                if record is not None:
                    ours = record[0] == "run"
                else:
                    ours = run.exists and runs.cell_name(run.saved_config()) == entry.name
            except FmaeError:
                ours = False
            if ours:
                cells.append(run)
        return cells

    def write_grid(self, sweep: SweepConfig) -> None:
        atomic.write_json(self.path / "sweep.json", {
            "schema_version": runs.SCHEMA_VERSION,
            "grid": {"optim": list(sweep.optims), "lr": list(sweep.lrs), "hidden": list(sweep.hiddens),
                     "seed": list(sweep.seeds)},
            "shared": sweep.shared(),
        })
        try:
            self.cells_dir.mkdir(exist_ok=True)
        except OSError as exc:
            raise atomic.io_error(self.cells_dir, exc) from None

    def plan(self, sweep: SweepConfig) -> list[CellPlan]:
        """One plan per cell: finished cells are marked done, unfinished ones carry their resume state
        (checked to be the cell's), their metrics.csv repaired from it; fmae's stale temporaries go."""
        plans = []
        for config in sweep.cells():
            config = config
            run = runs.RunDir(self.cells_dir / runs.cell_name(config))
            plan = CellPlan(config, run)
            try:
                if run.path.is_symlink():
                    raise RunDirError(f"{run.path} is a symbolic link; fmae never writes through one")
                if not run.exists:
                    if not run.owned_files():
                        runs.refuse_foreign(run.path, runs.RUN_FILES)
                else:
                    saved = run.saved_config()
                    diff = saved.differences(config, ignore=("epochs",))
                    if diff:
                        raise RunDirError(f"{run.path} holds a run with other settings ({', '.join(diff)})")
                    manifest.remove_stale_temporaries(run.path, runs.RUN_FILES)
                    summary = read_summary(run) or {}
                    status, trained = summary.get("status"), summary.get("epochs_run", 0)
                    plan.saved_status = status
                    plan.done = status in FINISHED and not (status == Status.COMPLETED and trained < config.epochs)
                    run.read_metrics()  # names a metrics.csv fmae did not write
                    if not plan.done and run.file("last.pt").exists():
                        plan.resume = run.load_last(config)
                        if plan.start_epoch > config.epochs:
                            raise RunDirError(f"{run.file('last.pt')} holds {plan.start_epoch} epochs, more than "
                                              f"--epochs {config.epochs}")
                        run.repair_metrics(plan.resume)
            except FmaeError as exc:  # this cell fails; the others go on
                plan.error = f"{exc.message} (hint: to redo only this cell, remove {run.path} and run the same " \
                             "fmae sweep command again)"
            plans.append(plan)
        return plans


def _rmdir_quietly(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:  # it holds files fmae did not write: they stay
        pass


SUMMARY_TYPES = {"status": (str,), "epochs_run": (int,), "final_train_loss": (int, float, type(None)),
                 "final_test_loss": (int, float, type(None)), "best_test_loss": (int, float, type(None)),
                 "best_epoch": (int, type(None)), "train_seconds": (int, float)}


def read_summary(run: runs.RunDir) -> dict[str, Any] | None:
    """summary.json, None without one (or when it is not JSON: the cell then trains on from last.pt
    and writes it anew); one whose fields have the wrong types is named (RunDirError)."""
    path = run.file("summary.json")
    try:
        doc = runs.read_json(path)
    except RunDirError:
        return None
    wrong = [k for k, types in SUMMARY_TYPES.items()
             if not isinstance(doc, dict) or isinstance(doc.get(k), bool) or not isinstance(doc.get(k), types)]
    if wrong or doc["epochs_run"] < 0:
        raise RunDirError(f"{path}: not an fmae run summary ({', '.join(wrong) or 'epochs_run'} of the wrong type "
                          "or value)", "fmae did not write it, or it was edited")
    return doc


def summary_or_none(run: runs.RunDir) -> dict[str, Any] | None:
    """read_summary for reports: a summary fmae did not write counts as none (its cell failed already)."""
    try:
        return read_summary(run)
    except RunDirError:
        return None

