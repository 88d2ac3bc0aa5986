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

from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from fmae.config import TrainConfig
from fmae.errors import FmaeError
from fmae.execution import TrackerConfig
from fmae.runs import read_json
from fmae.trackers.base import Backend, Target, TrackerError, params, points

KINDS = ("tensorboard", "mlflow")
# what `fmae-cli[EXTRA]` installs, per tracker (pyproject.toml's extras; tested to agree)
INSTALL = {"tensorboard": "tensorboard", "mlflow": "mlflow"}


def missing(kind: str, flag: str) -> TrackerError:
    return TrackerError(f"{flag} needs the {kind} package, which is not installed",
                        f"install it with: pip install 'fmae-cli[{INSTALL[kind]}]'")


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
