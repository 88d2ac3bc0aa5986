"""Experiment trackers: runs and sweeps in TensorBoard and MLflow.

The driver (the only writer) logs each epoch as fmae.saving saves it, whatever the executor, so
workers need neither package; `fmae export` replays runs and sweeps made before (or without) the
flags through the very same calls, so both give one layout. Every call is idempotent: what a
tracker already holds is read back once per run and never logged again, so a resumed run (after a
kill -9 at any moment) or a second export leaves each epoch logged exactly once. Live, the run
directory's own files stay the source of truth: a tracker that fails (server gone, disk full) is
dropped after one warning and the training goes on; the export catches up later.

Layout (docs/trackers.md): a run is identified by a token in its directory's trackers.json (made
at first contact, removed with the run by --overwrite), which names its TensorBoard event files
and tags its MLflow run; the MLflow run ids are kept there too, per tracking URI.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fmae import atomic, manifest
from fmae.config import TrackerConfig, TrainConfig
from fmae.errors import FmaeError
from fmae.runs import RUN_FILES, TRACKER_IDS, read_json

KINDS = ("tensorboard", "mlflow")
# what `fmae-cli[EXTRA]` installs, per tracker (pyproject.toml's extras; tested to agree)
INSTALL = {"tensorboard": "tensorboard", "mlflow": "mlflow"}


class TrackerError(FmaeError):
    """A tracker could not be opened (package missing, bad URI, unwritable directory)."""


def missing(kind: str, flag: str) -> TrackerError:
    return TrackerError(f"{flag} needs the {kind} package, which is not installed",
                        f"install it with: pip install 'fmae-cli[{INSTALL[kind]}]'")


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
            from fmae.sweeps.directory import SWEEP_FILES

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


class Trackers:
    """The trackers a command logs to. A tracker that fails is dropped after one warning
    (`on_warning`); the others, and the training, go on. `live`: logging a run as it trains
    (an unfinished run stays running), not exporting it afterwards. `quiet`: what keeps the trackers'
    own log lines off stderr, closed last."""

    def __init__(self, backends: Sequence[Backend], on_warning: Callable[[str], None], *, live: bool,
                 quiet: ExitStack | None = None) -> None:
        self._backends = list(backends)
        self._quiet = quiet
        self._warn = on_warning
        self.live = live
        self._targets: dict[Path, tuple[Target, dict[str, Any]]] = {}
        self._sweep: Target | None = None
        self.failures: list[str] = []  # a tracker that failed, and why

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __bool__(self) -> bool:
        return bool(self._backends)

    def _each(self, call: Callable[[Backend], None]) -> None:
        for backend in list(self._backends):
            try:
                call(backend)
            except Exception as exc:  # noqa: BLE001 - any failure of a tracker: the training goes on
                self._backends.remove(backend)
                why = backend.reason(exc)
                self.failures.append(f"{backend.name}: {why[:300]}")
                self._warn(f"warning: {backend.name} logging stopped ({why[:300]}); the run directories stay "
                           f"complete: `fmae export {backend.name}` catches up later")

    def _target(self, path: Path, config: TrainConfig | None = None) -> tuple[Target, dict[str, Any]] | None:
        path = Path(path)
        if path not in self._targets:
            try:
                target = Target(path, "cell" if self._sweep is not None else "run")
                doc = read_json(path / "config.json")
                env = doc.get("environment", {}) if isinstance(doc, dict) else {}
            except (FmaeError, OSError) as exc:
                self._warn(f"warning: {path} not logged to the trackers ({getattr(exc, 'message', exc)})")
                return None
            if config is None:
                config = TrainConfig.from_dict(doc["config"])
            self._targets[path] = (target, params(config, env if isinstance(env, dict) else {}))
        return self._targets[path]

    def begin_sweep(self, path: Path, grid: dict[str, list[Any]]) -> None:
        """The runs logged from now on are cells of the sweep in `path` (a parent run in MLflow)."""
        if not self._backends:
            return
        try:
            self._sweep = Target(path, "sweep")
        except (FmaeError, OSError) as exc:
            self._warn(f"warning: {path} not logged to the trackers ({getattr(exc, 'message', exc)})")
            self._backends.clear()
            return
        sweep = self._sweep
        self._each(lambda b: b.begin_sweep(sweep, grid))

    def log(self, path: Path, config: TrainConfig | None, history: Iterable[Any],
            summary: dict[str, Any] | None = None, running: bool | None = None) -> None:
        """A run's epochs so far (those a tracker holds already are skipped) and, when it ended, its
        summary (final status and test loss). `running`: whether a run without a summary trains
        on now (by default, when logging live)."""
        running = self.live if running is None else running
        if not self._backends:
            return
        found = self._target(path, config)
        if found is None:
            return
        target, values = found
        pts = points(history)
        self._each(lambda b: b.log_run(target, values, pts, summary, self._sweep, running))

    @property
    def sent(self) -> int:
        """The metric values logged so far that the trackers did not hold already (all backends)."""
        return sum(b.sent for b in self._backends)

    def end_sweep(self, doc: dict[str, Any]) -> None:
        """A sweep's results (fmae.sweeps.results.document): the best cell and the seed groups' statistics."""
        if self._backends and self._sweep is not None:
            sweep = self._sweep
            self._each(lambda b: b.end_sweep(sweep, doc))
        self._sweep = None

    def close(self) -> None:
        try:
            self._each(lambda b: b.close())
            self._backends.clear()
        finally:
            if self._quiet is not None:
                self._quiet.close()


PACKAGES = {"tensorboard": "tensorboard.summary.writer.event_file_writer", "mlflow": "mlflow.tracking"}


def require(config: TrackerConfig) -> None:
    """Import the packages `config` needs, before anything is written: a missing one is one
    TrackerError naming the extra to install, as is a database store without the full mlflow.
    None is imported when no tracker is named."""
    import importlib

    for kind, module in PACKAGES.items():
        if getattr(config, kind) is not None:
            if kind == "mlflow":
                from fmae.trackers.mlflow import prepare

                prepare()
            try:
                importlib.import_module(module)
            except ImportError:
                raise missing(kind, f"--{kind}") from None
    if config.mlflow is not None:
        from fmae.trackers.mlflow import check_store

        check_store(config.mlflow)


def open_trackers(config: TrackerConfig, on_warning: Callable[[str], None], *, live: bool = True) -> Trackers:
    """The trackers `config` names (`require`d first), opened: a TensorBoard log directory made,
    an MLflow store reached (TrackerError if not). MLflow's loggers (and SQLAlchemy's, alembic's)
    stay off stderr from here until the trackers are closed."""
    require(config)
    quiet = ExitStack()
    backends: list[Backend] = []
    try:
        if config.tensorboard is not None:
            from fmae.trackers.tensorboard import TensorBoard

            backends.append(TensorBoard(config.tensorboard, on_warning))
        if config.mlflow is not None:
            from fmae.trackers.mlflow import Mlflow, quiet_loggers

            quiet.enter_context(quiet_loggers())
            backends.append(Mlflow(config.mlflow, artifacts=config.artifacts, live=live))
    except BaseException:
        quiet.close()
        raise
    return Trackers(backends, on_warning, live=live, quiet=quiet)
