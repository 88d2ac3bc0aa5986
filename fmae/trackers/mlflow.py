"""MLflow: a run per training run; a sweep is a parent run with a child run per cell (named after
the cell), the grid as the parent's tags, the seed groups' mean/std/95% CI as its metrics and the
best cell as its tag. A run is found again by the id trackers.json keeps for the tracking URI, or
(killed between creating the run and keeping its id) by the run's token, tag `fmae.uid`. What a
run holds is read back once (its params and each metric's steps) and never logged twice.
Needs only mlflow-skinny (the client); the full mlflow serves the UI."""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmae.errors import ConfigError, first_line
from fmae.status import Status
from fmae.trackers.base import Point, Target, TrackerError, finite

EXPERIMENT = "fmae"  # the experiment, unless MLFLOW_EXPERIMENT_NAME names one
TERMINAL = {Status.COMPLETED: "FINISHED", Status.STOPPED_EARLY: "FINISHED", Status.PRUNED: "FINISHED",
            Status.DIVERGED: "FAILED", Status.COLLAPSED: "FAILED", Status.FAILED: "FAILED",
            Status.INTERRUPTED: "KILLED"}
# a server that is gone costs seconds, not MLflow's default minutes of retries; MLflow's INFO lines
# ("Creating initial MLflow database tables...") stay off fmae's stderr; a file: store, which MLflow 3
# refuses unless asked (it is in maintenance mode there), is taken: with mlflow-skinny alone it is the
# only store without a server (the user's settings win)
SETTINGS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1", "MLFLOW_LOGGING_LEVEL": "WARNING",
            "MLFLOW_ALLOW_FILE_STORE": "true"}
# stores in a database (SQLAlchemy URIs): the full mlflow package, not mlflow-skinny, can open them
DATABASES = ("sqlite", "postgresql", "mysql", "mssql")
QUIET_STDOUT = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"
# the loggers of MLflow and the packages it drives: a failure of theirs is fmae's one warning (or error)
# line, never their tracebacks (MLflow logs each database error with its SQL and traceback)
LOGGERS = ("mlflow", "sqlalchemy", "alembic", "huey")
BATCH = 1000  # MLflow's log_batch limit on metrics per call


def first_sentence(exc: BaseException, limit: int = 200) -> str:
    """An error's first sentence (MLflow's run to paragraphs with links), at most `limit` characters."""
    line = first_line(exc)
    end = line.find(". ")
    line = line[:end + 1] if end >= 0 else line
    return line if len(line) <= limit else line[:limit - 3].rstrip() + "..."


def reason(exc: BaseException) -> str:
    """Why an MLflow call failed, in a few words: the database's own error where there is one
    (SQLAlchemy's first line may be a remark such as "(raised as a result of Query-invoked
    autoflush; ...)", the cause on a later line), else the error's first sentence."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        orig = getattr(cause, "orig", None)  # SQLAlchemy's DBAPIError: the driver's error
        if isinstance(orig, BaseException):
            return first_sentence(orig)
        cause = cause.__cause__ or cause.__context__
    return first_sentence(exc)


def scheme(uri: str) -> str:
    return uri.split(":", 1)[0].split("+", 1)[0].lower()


def in_memory(uri: str) -> bool:
    """An sqlite store in memory (`sqlite://`, `sqlite:///`, `sqlite:///:memory:`, `?mode=memory`): each
    of MLflow's connections gets a database of its own, empty, and all of it is lost at exit."""
    if scheme(uri) != "sqlite":
        return False
    rest = uri.split("://", 1)[1] if "://" in uri else uri.split(":", 1)[1]
    path, _, query = rest.partition("?")
    database = path[1:] if path.startswith("/") else path
    return database in ("", ":memory:") or database.startswith("file::memory:") or "mode=memory" in query


def sqlite_path(uri: str) -> Path | None:
    """An sqlite store's database file (relative to the working directory unless absolute, as
    SQLAlchemy reads `sqlite:///rel.db` and `sqlite:////abs.db`); None for any other store."""
    if scheme(uri) != "sqlite" or in_memory(uri) or "://" not in uri:
        return None
    path = uri.split("://", 1)[1].partition("?")[0]
    return Path(path[1:] if path.startswith("/") else path)


def check_store(uri: str) -> None:
    """Before anything is written: an in-memory store is a usage error (ConfigError), and a database
    store with mlflow-skinny alone (no SQLAlchemy) one error naming the package."""
    import importlib.util

    if in_memory(uri):
        raise ConfigError(f"--mlflow {uri}: an in-memory database, which MLflow cannot keep (each of its "
                          "connections would see an empty one, and all is lost at exit)",
                          "name a file: --mlflow sqlite:///mlflow.db")
    kind = scheme(uri)
    if kind in DATABASES and importlib.util.find_spec("sqlalchemy") is None:
        raise TrackerError(f"--mlflow {uri}: a {kind} store needs the full mlflow package (SQLAlchemy), and only "
                           "mlflow-skinny is installed",
                           "the full package is mlflow on PyPI; or log to a server: --mlflow http://host:port, "
                           "or to a file: store")


NEW = ".fmae-new-"  # a store in the making: `.<name>.fmae-new-<pid>` beside it


def create_sqlite_store(uri: str) -> None:
    """A new sqlite store made whole or not at all. MLflow makes its schema by a chain of migrations
    that is not atomic: a kill midway left a store every later open trips on ("table
    _alembic_tmp_metrics already exists"). So fmae makes the schema in a file of its own beside the
    store (`.<name>.fmae-new-<pid>`), then links it into place, never over a store made meanwhile;
    such files of processes that are gone (killed while making one) are removed first."""
    path = sqlite_path(uri)
    if path is None or path.exists() or not path.parent.is_dir():  # no directory: MLflow's own error says so
        return
    for stale in path.parent.glob(f".{path.name}{NEW}*"):
        pid = stale.name[len(f".{path.name}{NEW}"):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            stale.unlink(missing_ok=True)
    temp = path.with_name(f".{path.name}{NEW}{os.getpid()}")
    from mlflow.tracking._tracking_service.utils import _get_sqlalchemy_store

    try:
        temp.unlink(missing_ok=True)
        _get_sqlalchemy_store(f"sqlite:///{temp.resolve()}", None).engine.dispose()  # the schema, as MLflow makes it
        try:
            os.link(temp, path)
        except FileExistsError:
            pass  # another fmae made it meanwhile: its store is the one
    except Exception as exc:  # noqa: BLE001 - any failure to make it is the URI's
        raise TrackerError(f"--mlflow {uri}: cannot create the tracking store ({reason(exc)})",
                           f"check that {path.parent} is writable") from None
    finally:
        temp.unlink(missing_ok=True)
        Path(f"{temp}-journal").unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_half_made(uri: str) -> None:
    """An sqlite store whose schema's creation was cut off (by MLflow itself, or an fmae before
    create_sqlite_store): a table `_alembic_tmp_*` left by an unfinished migration, which every
    later open trips on. One error naming it and the fix: a store holding no run is deleted and
    made anew."""
    import sqlite3

    path = sqlite_path(uri)
    if path is None or not path.is_file() or path.stat().st_size == 0:
        return
    try:
        with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            left = sorted(t for t in tables if t.startswith("_alembic_tmp_"))
            runs = db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] if left and "runs" in tables else 0
    except sqlite3.Error:
        return  # not a database, locked, ...: MLflow's own error says so
    if not left:
        return
    if runs == 0:
        raise TrackerError(f"--mlflow {uri}: {path} is a half-created MLflow store holding no runs (its schema's "
                           f"creation was cut off: table {left[0]} is left over)",
                           f"delete it (rm {shlex.quote(str(path))}) and run the same command again: fmae makes "
                           "a new one")
    raise TrackerError(f"--mlflow {uri}: {path} holds {runs} runs, but an upgrade of its schema was cut off "
                       f"(table {left[0]} is left over), so MLflow cannot open it",
                       "restore it from a backup, or log to a new store and `fmae export` the runs there")


def prepare() -> None:
    """SETTINGS, before MLflow is imported (it reads its logging level then; when it was imported
    already, its logger is set here)."""
    import logging

    if "MLFLOW_LOGGING_LEVEL" not in os.environ:
        logging.getLogger("mlflow").setLevel(SETTINGS["MLFLOW_LOGGING_LEVEL"])
    for key, value in SETTINGS.items():
        os.environ.setdefault(key, value)
    os.environ[QUIET_STDOUT] = "true"  # stdout holds fmae's results (--json): never MLflow's "View run" lines


@contextmanager
def quiet_loggers() -> Iterator[None]:
    """While fmae uses MLflow: the loggers of LOGGERS (and any of their descendants with handlers
    of their own, as MLflow gives sqlalchemy.engine) write nowhere; their handlers and propagation
    are given back afterwards. MLflow is imported first: its import sets its loggers up."""
    import logging

    import mlflow  # noqa: F401 - its import configures these loggers: done before they are set aside

    loggers = [logging.getLogger(name) for name in LOGGERS]
    loggers += [logger for name, logger in list(logging.Logger.manager.loggerDict.items())
                if isinstance(logger, logging.Logger) and logger.handlers and name not in LOGGERS
                and name.split(".", 1)[0] in LOGGERS]
    saved = [(logger, logger.handlers, logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.handlers, logger.propagate = [logging.NullHandler()], False
    try:
        yield
    finally:
        for logger, handlers, propagate in saved:
            logger.handlers, logger.propagate = handlers, propagate


@dataclass
class _Run:
    run_id: str
    status: str
    params: dict[str, str]
    latest: dict[str, float]
    steps: dict[str, set[int]] = field(default_factory=dict)
    artifacts: set[str] | None = None


class Mlflow:
    name = "mlflow"

    def __init__(self, uri: str, *, artifacts: bool = False, live: bool = True) -> None:
        """`live`: a sweep's parent run is running while it is logged (not so when exported)."""
        prepare()
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient

        self._Metric, self._Param, self._Tag = Metric, Param, RunTag
        self.uri, self.artifacts, self.live = uri, artifacts, live
        self.sent = 0
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
        check_half_made(uri)
        create_sqlite_store(uri)
        try:
            self.client = MlflowClient(tracking_uri=uri)
            found = self.client.get_experiment_by_name(name)
            if found is None:
                try:
                    self.experiment = self.client.create_experiment(name)
                except Exception:  # noqa: BLE001 - made meanwhile by another fmae
                    self.experiment = self.client.get_experiment_by_name(name).experiment_id
            else:
                self.experiment = found.experiment_id
        except Exception as exc:  # noqa: BLE001 - any failure to reach the store is the URI's
            raise TrackerError(f"--mlflow {uri}: cannot open the tracking store ({reason(exc)})",
                               "check the URI: sqlite:///path.db, file:/path or http://host:port") from None
        self._runs: dict[Path, _Run] = {}

    def _run(self, target: Target, parent: Target | None) -> _Run:
        known = self._runs.get(target.path)
        if known is not None:
            return known
        run = None
        run_id = target.mlflow_id(self.uri)
        if run_id is not None:
            try:
                run = self.client.get_run(run_id)
            except Exception:  # noqa: BLE001 - gone from this store (or another store at this URI)
                run = None
        if run is not None and run.info.lifecycle_stage == "deleted":
            run = None
        if run is None:
            found = self.client.search_runs([self.experiment], filter_string=f"tags.`fmae.uid` = '{target.uid}'",
                                            max_results=1)
            run = found[0] if found else None
        if run is None:
            tags = {"fmae.uid": target.uid, "fmae.path": str(target.path.resolve()), "fmae.kind": target.kind}
            if parent is not None:
                tags["mlflow.parentRunId"] = self._run(parent, None).run_id
            run = self.client.create_run(self.experiment, run_name=target.name, tags=tags)
        target.set_mlflow_id(self.uri, run.info.run_id)
        state = _Run(run.info.run_id, run.info.status, dict(run.data.params), dict(run.data.metrics))
        for key in run.data.metrics:
            state.steps[key] = {m.step for m in self.client.get_metric_history(state.run_id, key)}
        self._runs[target.path] = state
        return state

    def _log(self, run: _Run, metrics: Sequence[Any] = (), params: Sequence[Any] = (),
             tags: Sequence[Any] = ()) -> None:
        metrics = list(metrics)
        for i in range(0, max(len(metrics), 1), BATCH):
            chunk = metrics[i:i + BATCH]
            if chunk or (i == 0 and (params or tags)):
                self.client.log_batch(run.run_id, metrics=chunk, params=list(params) if i == 0 else [],
                                      tags=list(tags) if i == 0 else [])
        for m in metrics:
            run.steps.setdefault(m.key, set()).add(m.step)
            run.latest[m.key] = m.value
        run.params.update({p.key: p.value for p in params})

    def _status(self, run: _Run, status: str) -> None:
        if run.status != status:
            if status == "RUNNING":
                self.client.update_run(run.run_id, status="RUNNING")
            else:
                self.client.set_terminated(run.run_id, status)
            run.status = status

    def _upload(self, run: _Run, path: Path) -> None:
        if self.artifacts and path.is_file():
            if run.artifacts is None:
                run.artifacts = {a.path for a in self.client.list_artifacts(run.run_id)}
            if path.name not in run.artifacts:
                self.client.log_artifact(run.run_id, str(path))
                run.artifacts.add(path.name)

    # ------------------------------------------------------------ the tracker

    def begin_sweep(self, sweep: Target, grid: dict[str, list[Any]]) -> None:
        run = self._run(sweep, None)
        self._log(run, tags=[self._Tag(f"fmae.grid.{k}", ",".join(map(str, v))) for k, v in grid.items()])
        if self.live:
            self._status(run, "RUNNING")

    def log_run(self, target: Target, params: dict[str, Any], points: Sequence[Point],
                summary: dict[str, Any] | None, parent: Target | None, running: bool) -> None:
        run = self._run(target, parent)
        now = int(time.time() * 1000)
        metrics = [self._Metric(k, v, now, p.epoch) for p in points for k, v in p.metrics().items()
                   if finite(v) and p.epoch not in run.steps.get(k, ())]  # a diverged loss: a gap, and its status
        new_params = [self._Param(k, str(v)) for k, v in params.items() if k not in run.params]
        tags = []
        if summary is not None:
            epochs, final = int(summary.get("epochs_run") or 0), summary.get("final_test_loss")
            if finite(final) and epochs not in run.steps.get("final_test_loss", ()):
                metrics.append(self._Metric("final_test_loss", final, now, epochs))
            tags.append(self._Tag("fmae.status", str(summary.get("status"))))
        self._log(run, metrics, new_params, tags)
        self.sent += len(metrics)
        if summary is not None:
            self._upload(run, target.path / "model.pt")
            self._status(run, TERMINAL.get(str(summary.get("status")), "FINISHED"))
        else:
            self._status(run, "RUNNING" if running else "KILLED")  # unfinished, and not training now

    def end_sweep(self, sweep: Target, doc: dict[str, Any]) -> None:
        run = self._run(sweep, None)
        now = int(time.time() * 1000)
        values: dict[str, float] = {}
        best = doc.get("best")
        if best is not None and finite(best.get("final_test_loss")):
            values["best_final_test_loss"] = best["final_test_loss"]
        for g in doc.get("groups") or ():
            group = f"{g['optim']}-lr{g['lr']!r}-h{g['hidden']}"
            for stat in ("mean", "std", "ci95"):
                if finite(g.get(f"{stat}_final_test_loss")):
                    values[f"{stat}_final_test_loss/{group}"] = g[f"{stat}_final_test_loss"]
        metrics = [self._Metric(k, v, now, 0) for k, v in values.items() if run.latest.get(k) != v]
        cell = Path(best["model"]).parent.name if best is not None and best.get("model") else "none"
        self._log(run, metrics, tags=[self._Tag("fmae.best_cell", cell)])
        self._upload(run, sweep.path / "best.pt")
        statuses = [r.get("status") for r in doc.get("cells", ())]
        self._status(run, "FAILED" if Status.FAILED in statuses
                     else "FINISHED" if all(s in TERMINAL and s != Status.INTERRUPTED for s in statuses) else "KILLED")

    def close(self) -> None:
        pass

    def reason(self, exc: BaseException) -> str:
        path = sqlite_path(self.uri)
        if path is not None and not path.exists():  # sqlite calls an unlinked file read-only
            return f"its database {path} is gone: {reason(exc)}"
        return reason(exc)
