"""Run directories: their layout, the refusal of a directory holding another run or files fmae did
not make, their files and the end-of-run sequence (written once, for `fmae train` and every sweep
executor; fmae.saving schedules the per-epoch writes), the summary document, and runs and sweeps
read back for reports.
"""

from __future__ import annotations

import csv
import io
import json
import math
import platform
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmae import __version__, atomic
from fmae.checkpoints import checkpoint, load_checkpoint, to_cpu
from fmae.config import TrainConfig
from fmae.errors import ConfigError, RunDirError
from fmae.locks import LOCK_NAME
from fmae.stats import WITH_MODEL

SCHEMA_VERSION = 1
RUN_FILES = ("config.json", "metrics.csv", "model.pt", "last.pt", "summary.json")
METRIC_FIELDS = ("epoch", "train_loss", "test_loss", "seconds")


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirError(f"{path}: unreadable or not JSON ({exc})") from None


def environment(device: str, data_source: str = "", data_sha256: dict[str, str] | None = None,
                threads: int | None = None, engine: str = "cells") -> dict[str, Any]:
    """What a run was made with; `threads`: torch's intra-op threads of the process that trains
    (a sweep's workers may use fewer than the driver), since they change float summation order;
    `engine`: the trainer (stacked or cells), kept out of the training config so that a run may
    resume with the other."""
    import torch

    return {
        "fmae": __version__,
        "torch": str(torch.__version__),  # TorchVersion would not load with weights_only=True
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "threads": threads if threads is not None else torch.get_num_threads(),
        "engine": engine,
        "data_source": data_source,
        "data_sha256": dict(data_sha256 or {}),
    }


# ---------------------------------------------------------------- run directories


@dataclass(frozen=True)
class RunDir:
    path: Path

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def exists(self) -> bool:
        return self.file("config.json").exists()

    def saved_config(self) -> TrainConfig:
        hint = "fmae did not write it, or it was edited: choose an empty or new directory"
        try:
            return TrainConfig.from_dict(read_json(self.file("config.json"))["config"])
        except RunDirError as exc:
            raise RunDirError(exc.message, hint) from None
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise RunDirError(f"{self.file('config.json')}: not an fmae run config ({exc})", hint) from None

    def check(self, config: TrainConfig, *, overwrite: bool = False, resume: bool = False) -> dict[str, Any] | None:
        """Refuse a directory that holds another run; returns the resume state when resuming.

        Changes nothing on disk: `reset` (for --overwrite) comes later, once the data is loaded.
        """
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"{self.path} exists and is not a directory", "choose another --run-dir")
        if (self.path / "sweep.json").exists():
            raise RunDirError(f"{self.path} is a sweep directory", "choose another --run-dir for fmae train")
        if not self.exists:
            refuse_foreign(self.path, RUN_FILES)
            return None
        saved = self.saved_config()  # also with --overwrite: only an fmae run is ever replaced
        if not overwrite:
            if not resume:
                same = saved.to_dict() == config.to_dict()
                raise RunDirError(
                    f"{self.path} already holds a run" + ("" if same else " with other settings"),
                    "add --resume to continue it, --overwrite to replace it, or choose another --run-dir",
                )
            if _comparable(saved) != _comparable(config):
                raise RunDirError(
                    f"{self.path} holds a run with other settings; --resume may only change --epochs, "
                    "--patience and --min-delta",
                    "use --overwrite to replace it or choose another --run-dir",
                )
            return self.load_last() if self.file("last.pt").exists() else None
        return None

    def reset(self) -> None:
        """Create the directory, removing the files of the fmae run it held before (none other)."""
        if self.exists:
            self.remove_files()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise atomic.io_error(self.path, exc) from None

    def remove_files(self) -> None:
        """The files an fmae run writes, and their stale temporaries; nothing else."""
        for name in RUN_FILES:
            atomic.unlink_quietly(self.file(name))
        remove_stale_temporaries(self.path, RUN_FILES)

    def write_config(self, config: TrainConfig, env: dict[str, Any]) -> None:
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
        try:
            with open(self.file("metrics.csv"), newline="", encoding="utf-8") as fh:
                return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, TypeError) as exc:
            raise RunDirError(f"{self.file('metrics.csv')}: unreadable ({exc})") from None

    def save_last(self, config: TrainConfig, state: dict[str, Any]) -> None:
        atomic.torch_save(self.file("last.pt"), checkpoint("resume", config, state))

    def load_last(self) -> dict[str, Any]:
        return load_checkpoint(self.file("last.pt"), "resume")

    def save_model(self, config: TrainConfig, state_dict: dict[str, Any], history: Sequence[Any],
                   status: str, env: dict[str, Any]) -> None:
        atomic.torch_save(self.file("model.pt"), checkpoint("model", config, {
            "state_dict": to_cpu(state_dict),
            "status": status,
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
        if status != "diverged":
            self.save_model(config, model_state, history, status, env)
        summary = summarize(config, status, history, run_dir=self.path, device=device, wall_seconds=wall_seconds)
        self.write_summary(summary)
        return summary


def history_of(state: dict[str, Any]) -> list[Any]:
    """The per-epoch metrics a resume state carries, as the engine's EpochMetrics."""
    from fmae.engine import EpochMetrics

    return [EpochMetrics(int(e), float(a), float(b), float(s)) for e, a, b, s in state["history"]]


def _comparable(config: TrainConfig) -> dict[str, Any]:
    d = config.to_dict()
    for key in ("epochs", "patience", "min_delta"):
        d.pop(key)
    return d


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


def remove_stale_temporaries(directory: Path, targets: Sequence[str]) -> None:
    """fmae's own temporaries of `targets` left by a process killed mid-write (the targets are
    intact); any other file, even one named like a temporary, is left alone."""
    try:
        names = [p.name for p in Path(directory).iterdir()]
    except OSError:
        return
    for name in names:
        if atomic.is_temporary(name, targets):
            atomic.unlink_quietly(Path(directory) / name)


def refuse_foreign(directory: Path, targets: Sequence[str]) -> None:
    """A directory holding files but no fmae run (or sweep) is not fmae's to write in."""
    try:
        names = [p.name for p in Path(directory).iterdir()] if Path(directory).is_dir() else []
    except OSError as exc:
        raise RunDirError(f"cannot read {directory}: {exc.strerror or exc}", "check its permissions") from None
    foreign = sorted(n for n in names if n != LOCK_NAME and not atomic.is_temporary(n, targets))
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise RunDirError(f"{directory} holds files but no fmae run ({shown})",
                          "choose an empty or new directory; fmae never writes among files it did not make")


def cell_name(config: TrainConfig) -> str:
    """`<optim>-lr<lr>-h<hidden>-s<seed>[-<noise><sigma>]`: a sweep cell's directory, `fmae train`'s default."""
    # repr, not :g, so that two learning rates never share a directory (0.0012345671 vs ...72)
    name = f"{config.optim}-lr{config.learning_rate!r}-h{config.model.hidden}-s{config.seed}"
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
        if not self.metrics or self.status in ("diverged", "collapsed"):
            return None
        return finite_or_none(self.metrics[-1]["test_loss"])


def read_run(path: Path) -> RunRecord:
    run = RunDir(Path(path))
    summary = read_json(run.file("summary.json")) if run.file("summary.json").exists() else {}
    return RunRecord(run.path, run.saved_config(), tuple(run.read_metrics()), summary.get("status", "unfinished"))


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
