"""Run directories: their layout, the refusal of a directory holding another run or files fmae did
not make, their files and the end-of-run sequence (written once, for `fmae train` and every sweep
executor; fmae.saving schedules the per-epoch writes), the summary document, and runs and sweeps
read back for reports.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmae import atomic, manifest
from fmae.checkpoints import check_belongs, checkpoint, load_checkpoint, to_cpu
from fmae.config import TrainConfig
from fmae.errors import ConfigError, FmaeError, RunDirError
from fmae.locks import LOCK_NAME
from fmae.status import LOST, WITH_MODEL, Status

SCHEMA_VERSION = 1
RUN_FILES = ("config.json", "metrics.csv", "model.pt", "last.pt", "summary.json")
# a run's token and MLflow run ids (fmae.trackers), once it was logged to a tracker: added then to its record
TRACKER_IDS = "trackers.json"
RESOLVED_CONFIG = "config.toml"  # the command's resolved settings (--print-config's TOML; --config reads it)
# a sweep directory's own files (fmae.sweeps writes them; its cells are run directories)
SWEEP_FILES = ("sweep.json", "results.csv", "results.json", "results_groups.csv", "best.pt", TRACKER_IDS,
               RESOLVED_CONFIG)
METRIC_FIELDS = ("epoch", "train_loss", "test_loss", "seconds")
RESUMABLE = ("epochs", "patience", "min-delta")  # the settings --resume (and a rerun of a sweep) may change


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirError(f"{path}: unreadable or not JSON ({exc})") from None


# ---------------------------------------------------------------- run directories


@dataclass(frozen=True)
class RunDir:
    path: Path

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def exists(self) -> bool:
        """Whether it holds a run (its config.json); a directory fmae owns may hold none yet."""
        return self.file("config.json").exists()

    def saved_environment(self) -> dict[str, Any] | None:
        """config.json's environment (what the run was made with), None where there is none to read."""
        try:
            env = read_json(self.file("config.json")).get("environment")
        except (RunDirError, AttributeError):
            return None
        return env if isinstance(env, dict) else None

    def saved_config(self) -> TrainConfig:
        hint = "fmae did not write it, or it was edited: choose an empty or new directory"
        try:
            return TrainConfig.from_dict(read_json(self.file("config.json"))["config"])
        except RunDirError as exc:
            raise RunDirError(exc.message, hint) from None
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise RunDirError(f"{self.file('config.json')}: not an fmae run config ({exc})", hint) from None

    def owned_files(self) -> tuple[str, ...]:
        """The files of a run that fmae wrote here, as its record names them; for a directory made
        before fmae kept one, its run files when they are fmae's (a config.json of fmae's, or, left
        by a killed --overwrite, nothing but fmae's run files and a checkpoint of fmae's); else none."""
        record = manifest.read(self.path) if self.path.is_dir() else None
        if record is not None:
            return record[1] if record[0] == "run" else ()
        if self.exists:
            try:
                self.saved_config()
            except RunDirError:
                return ()
            return RUN_FILES
        return RUN_FILES if self._legacy_leftovers() else ()

    def _legacy_leftovers(self) -> bool:
        try:
            names = {p.name for p in self.path.iterdir()} if self.path.is_dir() else set()
        except OSError:
            return False
        names = {n for n in names if n != LOCK_NAME and not atomic.is_temporary(n, RUN_FILES)}
        if not names or not names <= set(RUN_FILES) or self.path.is_symlink():
            return False
        for name, kind in (("last.pt", "resume"), ("model.pt", "model")):
            if name in names and not self.file(name).is_symlink():
                try:
                    load_checkpoint(self.file(name), kind)
                    return True
                except FmaeError:
                    pass
        return False

    def check(self, config: TrainConfig, *, overwrite: bool = False, resume: bool = False) -> dict[str, Any] | None:
        """Refuse a directory that holds another run, or files fmae did not write; returns the resume
        state when resuming (checked to be this run's, with no more epochs than `config` trains).

        Changes nothing on disk: `reset` (for --overwrite) comes later, once the data is loaded.
        """
        check_text_path(self.path)
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"{self.path} exists and is not a directory", "choose another --run-dir")
        record = manifest.read(self.path) if self.path.is_dir() else None
        if (record or ("",))[0] == "sweep" or (record is None and (self.path / "sweep.json").exists()):
            raise RunDirError(f"{self.path} is a sweep directory", "choose another --run-dir for fmae train")
        if not self.exists:
            if resume:
                raise RunDirError(f"{self.path} holds no run to resume",
                                  "check --run-dir, or drop --resume to start a new run there")
            owned = self.owned_files()
            if not owned:
                refuse_foreign(self.path, RUN_FILES)
            left = [n for n in owned if self.file(n).exists()]
            if left and not overwrite and not (record and record.resetting):
                raise RunDirError(f"{self.path} holds files of an fmae run but no config.json ({', '.join(left)})",
                                  "add --overwrite to replace them, or choose another --run-dir")
            return None  # nothing of a run: `reset` clears what fmae left there, if anything
        if overwrite:
            if not self.owned_files():
                self.saved_config()  # names the config.json fmae did not write: only fmae's run is replaced
            return None
        saved = self.saved_config()
        if not resume:
            same = saved.to_dict() == config.to_dict()
            raise RunDirError(
                f"{self.path} already holds a run" + ("" if same else " with other settings"),
                "add --resume to continue it, --overwrite to replace it, or choose another --run-dir",
            )
        diff = saved.differences(config, ignore=RESUMABLE)
        if diff:
            raise RunDirError(
                f"{self.path} holds a run with other settings ({', '.join(diff)}); --resume may only change "
                "--epochs, --patience and --min-delta",
                "use --overwrite to replace it or choose another --run-dir",
            )
        state = self.load_last(config) if self.file("last.pt").exists() else None
        done = int(state["epoch"]) if state else 0
        if config.epochs < done:
            raise RunDirError(f"--epochs {config.epochs} is fewer than the {done} epochs {self.path} has trained",
                              "--epochs may only grow when resuming; use --overwrite to start anew")
        return state

    def resumed_config(self, requested: TrainConfig, given: Iterable[str]) -> TrainConfig:
        """The config `--resume` continues: the run's own (config.json), with the resumable settings
        among the flags `given` taken from `requested`; a given flag that differs otherwise is named."""
        given = {flag.replace("_", "-") for flag in given}
        if not self.exists:
            check_text_path(self.path)
            raise RunDirError(f"{self.path} holds no run to resume",
                              "check --run-dir, or drop --resume to start a new run there")
        saved = self.saved_config()
        diff = [d for d in saved.differences(requested, ignore=RESUMABLE) if d.split(" ")[0] in given]
        if diff:
            raise RunDirError(f"{self.path} holds a run with other settings ({', '.join(diff)}); --resume may only "
                              "change --epochs, --patience and --min-delta",
                              "drop those flags to resume it, use --overwrite to replace it, or choose another "
                              "--run-dir")
        changed = {k.replace("-", "_"): getattr(requested, k.replace("-", "_")) for k in RESUMABLE if k in given}
        return dataclasses.replace(saved, **changed)

    def reset(self) -> None:
        """Make the directory fmae's, holding no run: its record first, then the files of the fmae run
        it held before removed (none other)."""
        owned = self.owned_files()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise atomic.io_error(self.path, exc) from None
        if owned:  # the record says a reset is under way until it is done: a kill midway, and any run finishes it
            manifest.write(self.path, "run", (*RUN_FILES, *owned), resetting=True)
            manifest.remove_owned(self.path, owned)
        manifest.write(self.path, "run", RUN_FILES)

    def abandon(self) -> None:
        """A run that trained nothing leaves nothing that would "already hold" one: its config.json,
        then its record."""
        atomic.unlink_quietly(self.file("config.json"))
        atomic.unlink_quietly(self.file(RESOLVED_CONFIG))
        atomic.unlink_quietly(self.file(manifest.MANIFEST))

    def claim(self) -> None:
        """Record the directory as an fmae run (a run made before fmae kept records, once checked)."""
        if manifest.read(self.path) is None:
            manifest.write(self.path, "run", RUN_FILES)

    def write_config(self, config: TrainConfig, env: dict[str, Any]) -> None:
        self.claim()
        atomic.write_json(self.file("config.json"), {
            "schema_version": SCHEMA_VERSION, "config": config.to_dict(), "environment": env,
        })

    def write_metrics(self, history: Iterable[Any]) -> None:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(METRIC_FIELDS)
        for m in history:
            writer.writerow([m.epoch, repr(m.train_loss), repr(m.test_loss), f"{m.seconds:.4f}"])
        atomic.write_text(self.file("metrics.csv"), out.getvalue())

    def read_metrics(self) -> list[dict[str, float]]:
        """metrics.csv's rows, checked to be what fmae writes (its columns, one row per epoch, numbers)."""
        path = self.file("metrics.csv")
        try:
            with open(path, newline="", encoding="utf-8") as fh:
                lines = list(csv.reader(fh))
            if not lines or tuple(lines[0]) != METRIC_FIELDS:
                raise ValueError(f"columns {','.join(lines[0]) if lines else '(none)'}, "
                                 f"expected {','.join(METRIC_FIELDS)}")
            rows = []
            for i, line in enumerate(lines[1:], 1):
                values = [float(v) for v in line]
                if len(values) != len(METRIC_FIELDS) or values[0] != i:
                    raise ValueError(f"row {i} is {','.join(line)!r}, expected epoch {i} and "
                                     f"{len(METRIC_FIELDS) - 1} numbers")
                rows.append(dict(zip(METRIC_FIELDS, values)))
            return rows
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError, ValueError, csv.Error) as exc:
            raise RunDirError(f"{path}: not fmae's metrics ({exc})",
                              "fmae did not write it, or it was edited") from None

    def repair_metrics(self, state: dict[str, Any]) -> None:
        """metrics.csv from the resume state when they disagree (a kill between last.pt and metrics.csv)."""
        from fmae.training.contract import history_of_state

        rows = [(m["epoch"], m["train_loss"], m["test_loss"]) for m in self.read_metrics()]
        history = history_of_state(state)
        if rows != [(m.epoch, m.train_loss, m.test_loss) for m in history]:
            self.write_metrics(history)

    def save_last(self, config: TrainConfig, state: dict[str, Any]) -> None:
        atomic.torch_save(self.file("last.pt"), checkpoint("resume", config, state))

    def load_last(self, config: TrainConfig | None = None) -> dict[str, Any]:
        """last.pt, checked to be a resume state; with `config`, checked to be this run's (settings
        and optimizer's), so that a run never trains on with another run's state."""
        state = load_checkpoint(self.file("last.pt"), "resume")
        if config is not None:
            check_belongs(self.file("last.pt"), state, config, ignore=RESUMABLE)
        return state

    def save_model(self, config: TrainConfig, state_dict: dict[str, Any], history: Sequence[Any],
                   status: str, env: dict[str, Any]) -> None:
        atomic.torch_save(self.file("model.pt"), checkpoint("model", config, {
            "state_dict": to_cpu(state_dict),
            "status": str(status),  # a plain string: torch loads no enum
            "metrics": {f: [getattr(m, f) for m in history] for f in METRIC_FIELDS},
            "environment": env,
        }))

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic.write_json(self.file("summary.json"), summary)

    # The end-of-run sequence below is the seam between training and the disk, written once: `fmae train`
    # and every sweep executor (in-process, --jobs, Ray) save a run through it and fmae.saving (each
    # epoch: metrics.csv, and last.pt when due), in the driver.

    def finish(self, config: TrainConfig, status: str, history: Sequence[Any], model_state: dict[str, Any],
               env: dict[str, Any], *, device: str, wall_seconds: float) -> dict[str, Any]:
        """The end of a run, after its last.pt: metrics.csv from the full history (it may have run
        ahead of last.pt, see fmae.saving), model.pt unless diverged, summary.json last; returns the summary."""
        self.write_metrics(history)
        if status != Status.DIVERGED:
            self.save_model(config, model_state, history, status, env)
        summary = summarize(config, status, history, run_dir=self.path, device=device, wall_seconds=wall_seconds)
        self.write_summary(summary)
        return summary


def write_resolved_config(directory: Path, text: str | None) -> None:
    """config.toml, the command's resolved settings (None: none to write): named in the directory's
    record first (fmae's file: --overwrite removes it), then written."""
    if text is None:
        return
    record = manifest.read(directory)
    if record is not None and RESOLVED_CONFIG not in record.files:
        manifest.write(directory, record.kind, (*record.files, RESOLVED_CONFIG), resetting=record.resetting)
    atomic.write_text(Path(directory) / RESOLVED_CONFIG, text)


def check_text_path(path: Path) -> None:
    """fmae records its paths in JSON and CSV, which hold text: a path whose bytes are not UTF-8
    (here, as Python's surrogate escapes) is refused before anything is written."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        shown = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise ConfigError(f"--run-dir {shown}: the path holds bytes that are not UTF-8 text",
                          "fmae records paths in JSON and CSV files: choose or rename a directory with a UTF-8 name") \
            from None


def summarize(config: TrainConfig, status: str, history: Sequence[Any], *, run_dir: Path,
              device: str, wall_seconds: float) -> dict[str, Any]:
    """The summary document of a run: what summary.json holds and `--json` prints."""
    finite = [m for m in history if finite_or_none(m.test_loss) is not None]
    best = min(finite, key=lambda m: m.test_loss) if finite else None
    last = history[-1] if history else None
    return {
        "schema_version": SCHEMA_VERSION,
        "status": status,
        "run_dir": str(run_dir),
        "model": str(run_dir / "model.pt") if status in WITH_MODEL else None,
        "config": config.to_dict(),
        "device": device,
        "epochs_run": len(history),
        "final_train_loss": finite_or_none(last.train_loss) if last else None,
        "final_test_loss": finite_or_none(last.test_loss) if last else None,
        "best_test_loss": best.test_loss if best else None,
        "best_epoch": best.epoch if best else None,
        "train_seconds": round(sum(m.seconds for m in history), 4),
        "wall_seconds": round(wall_seconds, 4),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def finite_or_none(value: Any) -> float | None:
    """JSON has no NaN or infinity: a diverged loss is written as null."""
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def refuse_foreign(directory: Path, targets: Sequence[str]) -> None:
    """A directory holding files but no fmae run (or sweep) is not fmae's to write in."""
    try:
        names = [p.name for p in Path(directory).iterdir()] if Path(directory).is_dir() else []
    except OSError as exc:
        raise RunDirError(f"cannot read {directory}: {exc.strerror or exc}", "check its permissions") from None
    foreign = sorted(n for n in names if n != LOCK_NAME and not atomic.is_temporary(n, (*targets, manifest.MANIFEST)))
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise RunDirError(f"{directory} holds files but no fmae run ({shown})",
                          "choose an empty or new directory; fmae never writes among files it did not make")


def cell_name(config: TrainConfig) -> str:
    """`<optim>-lr<lr>-h<hidden>-s<seed>[-<noise><sigma>]`: a sweep cell's directory, `fmae train`'s default."""
    # repr, not :g, so that two learning rates never share a directory (0.0012345671 vs ...72)
    name = f"{config.optim}-lr{config.lr!r}-h{config.model.hidden}-s{config.seed}"
    return name if config.noise is None else f"{name}-{config.noise.kind}{config.noise.sigma!r}"


@dataclass(frozen=True)
class RunRecord:
    """A training run directory as read back for reports: config, per-epoch metrics, status."""

    path: Path
    config: TrainConfig
    metrics: tuple[dict[str, float], ...]
    status: str

    def file_exists(self, name: str) -> bool:
        return (self.path / name).is_file()

    @property
    def final_test_loss(self) -> float | None:
        if not self.metrics or self.status in LOST:
            return None
        return finite_or_none(self.metrics[-1]["test_loss"])


def read_run(path: Path) -> RunRecord:
    run = RunDir(Path(path))
    summary = read_json(run.file("summary.json")) if run.file("summary.json").exists() else {}
    return RunRecord(run.path, run.saved_config(), tuple(run.read_metrics()), summary.get("status", Status.UNFINISHED))


def read_source(path: str | Path) -> tuple[str, list[RunRecord]]:
    """('run', [record]) for a training run directory, ('sweep', [records]) for a sweep directory."""
    path = Path(path)
    if (path / "sweep.json").is_file():
        cells = sorted(p for p in (path / "cells").glob("*") if (p / "config.json").is_file())
        return "sweep", [read_run(p) for p in cells]
    if (path / "config.json").is_file():
        return "run", [read_run(path)]
    if path.is_file() and path.suffix == ".pt":
        raise RunDirError(f"{path} is a checkpoint", "pass the run or sweep directory that holds it")
    raise RunDirError(f"{path} is neither a training run nor a sweep directory",
                      "pass a directory made by fmae train (config.json) or fmae sweep (sweep.json)")
