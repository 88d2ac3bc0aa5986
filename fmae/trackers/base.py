"""What every tracker is, as code: the backend protocol (`Backend`), what it logs (a run's `Point`s
and `params`) and where (`Target`: a run or sweep directory's token and tracker ids), and the error
a tracker raises. fmae.trackers opens and drives the backends; each backend module
(fmae.trackers.tensorboard, fmae.trackers.mlflow) imports from here only.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fmae import atomic, manifest
from fmae.config import TrainConfig
from fmae.errors import FmaeError
from fmae.runs import RUN_FILES, SWEEP_FILES, TRACKER_IDS, read_json


class TrackerError(FmaeError):
    """A tracker could not be opened (package missing, bad URI, unwritable directory)."""


class Backend(Protocol):
    """One tracker (fmae.trackers.tensorboard, fmae.trackers.mlflow). Every method is idempotent."""

    name: str
    sent: int  # the metric values it logged that the tracker did not hold already

    def begin_sweep(self, sweep: Target, grid: dict[str, list[Any]]) -> None: ...

    def log_run(self, run: Target, params: dict[str, Any], points: Sequence[Point],
                summary: dict[str, Any] | None, parent: Target | None, running: bool) -> None: ...

    def end_sweep(self, sweep: Target, doc: dict[str, Any]) -> None: ...

    def close(self) -> None: ...

    def reason(self, exc: BaseException) -> str:
        """Why a call failed, as the one warning says it (a few words, one line)."""


@dataclass(frozen=True)
class Point:
    """One epoch as the trackers log it (step = epoch)."""

    epoch: int
    train_loss: float
    test_loss: float
    seconds: float

    def metrics(self) -> dict[str, float]:
        return {"train_loss": self.train_loss, "test_loss": self.test_loss, "epoch_seconds": self.seconds}


def points(history: Iterable[Any]) -> list[Point]:
    """A run's history (the engine's EpochMetrics, or metrics.csv's rows) as Points."""
    out = []
    for m in history:
        get = m.get if isinstance(m, dict) else lambda k, m=m: getattr(m, k)
        out.append(Point(int(get("epoch")), float(get("train_loss")), float(get("test_loss")), float(get("seconds"))))
    return out


class Target:
    """A run or sweep directory as the trackers know it: its name, its token, its tracker ids
    (trackers.json, made at first contact; written by the driver, which holds the directory's lock)."""

    def __init__(self, path: Path, kind: str) -> None:
        self.path, self.kind = Path(path), kind
        self.name = self.path.resolve().name
        self._doc = self._read()
        if not re.fullmatch(r"[0-9a-f]{16}", str(self._doc.get("uid"))):  # fmae's (it names files, and is searched)
            self._doc = {"uid": secrets.token_hex(8), "mlflow": {}}
            self._save()
        else:
            self._own()

    @property
    def uid(self) -> str:
        return self._doc["uid"]

    def mlflow_id(self, uri: str) -> str | None:
        value = self._doc.get("mlflow", {}).get(uri)
        return value if isinstance(value, str) else None

    def set_mlflow_id(self, uri: str, run_id: str) -> None:
        if self.mlflow_id(uri) != run_id:
            self._doc = {**self._doc, "mlflow": {**self._doc.get("mlflow", {}), uri: run_id}}
            self._save()

    def _read(self) -> dict[str, Any]:
        path = self.path / TRACKER_IDS
        if not path.exists():
            return {}
        try:
            doc = read_json(path)
        except FmaeError:
            return {}  # damaged (not fmae's): a new token; the old runs stay in the trackers
        return doc if isinstance(doc, dict) and isinstance(doc.get("mlflow", {}), dict) else {}

    def _save(self) -> None:
        self._own()
        atomic.write_json(self.path / TRACKER_IDS, self._doc)

    def _own(self) -> None:
        """trackers.json named in the directory's record (fmae's file: --overwrite removes it with the
        run, so a replaced run is a new run in the trackers); its stale temporaries removed."""
        record = manifest.read(self.path)
        if record is None:  # a directory made before fmae kept records (checked to be fmae's by the caller)
            kind, files = ("sweep", SWEEP_FILES) if self.kind == "sweep" else ("run", RUN_FILES)
            manifest.write(self.path, kind, (*files, TRACKER_IDS))
        elif TRACKER_IDS not in record.files:
            manifest.write(self.path, record.kind, (*record.files, TRACKER_IDS), resetting=record.resetting)
        manifest.remove_stale_temporaries(self.path, (TRACKER_IDS,))


STRINGS = ("optim", "activation", "noise", "precision", "device")  # the other parameters are numbers
PARAMS = ("optim", "lr", "hidden", "seed", "batch_size", "dropout", "activation", "momentum", "noise", "precision",
          "device", "threads")  # what params() gives; the first four are a sweep's grid


def params(config: TrainConfig, environment: dict[str, Any]) -> dict[str, Any]:
    """A run's hyper-parameters as the trackers show them (numbers stay numbers)."""
    noise = config.noise
    return {
        "optim": config.optim, "lr": float(config.lr), "hidden": config.model.hidden,
        "seed": config.seed, "batch_size": config.batch_size, "dropout": float(config.model.dropout),
        "activation": config.model.activation, "momentum": float(config.momentum),
        "noise": "none" if noise is None else f"{noise.kind}:{noise.sigma!r}",
        "precision": config.precision, "device": str(environment.get("device", "")),
        "threads": int(environment.get("threads") or 0),
    }


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
