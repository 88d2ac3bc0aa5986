"""TensorBoard: each run's scalars (train_loss, test_loss, epoch_seconds per epoch; final_test_loss)
and its HParams session in event files of its own, `<logdir>/<run>` for `fmae train` and
`<logdir>/<sweep>/<cell>` for a sweep's cells; a sweep's grid as the HParams experiment in
`<logdir>/<sweep>`. fmae's event files are named after the run's token (`.fmae-<uid>`): what they
hold is read back once with TensorBoard's own reader and never written twice."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmae.errors import first_line
from fmae.status import Status
from fmae.trackers.base import PARAMS, STRINGS, Point, Target, TrackerError, finite

# a run's end as an HParams session status (there are four: unknown, success, failure, running)
STATUS = {Status.COMPLETED: "STATUS_SUCCESS", Status.STOPPED_EARLY: "STATUS_SUCCESS", Status.PRUNED: "STATUS_SUCCESS",
          Status.INTERRUPTED: "STATUS_UNKNOWN", Status.DIVERGED: "STATUS_FAILURE", Status.COLLAPSED: "STATUS_FAILURE",
          Status.FAILED: "STATUS_FAILURE"}
METRICS = ("test_loss", "train_loss", "epoch_seconds", "final_test_loss")


@dataclass
class _Log:
    """One TensorBoard run directory: what fmae's files of this token hold, and the writer (made
    when there is something new to write)."""

    directory: Path
    uid: str
    steps: dict[str, set[int]] = field(default_factory=dict)
    ended: set[int] = field(default_factory=set)  # session end statuses written
    experiment: set[bytes] = field(default_factory=set)  # experiment summaries written
    writer: Any = None


class TensorBoard:
    name = "tensorboard"

    def __init__(self, logdir: Path, on_warning: Callable[[str], None] = lambda text: None) -> None:
        from tensorboard.backend.event_processing.event_file_loader import (
            EventFileLoader,
        )
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._loader, self._writer_class = EventFileLoader, EventFileWriter
        self._event, self._summary, self._api, self._meta, self._plugin = (
            event_pb2, summary_pb2, api_pb2, metadata, plugin_data_pb2)
        self.logdir = Path(logdir)
        try:
            self.logdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackerError(f"--tensorboard {self.logdir}: cannot make the directory ({exc.strerror or exc})",
                               "choose a writable directory") from None
        self._logs: dict[Path, _Log] = {}
        self._warn, self._warned = on_warning, False
        self.sent = 0

    # ------------------------------------------------------------ files

    def _log(self, directory: Path, uid: str) -> _Log:
        log = self._logs.get(directory)
        if log is None:
            log = self._logs[directory] = _Log(directory, uid)
            for path in sorted(directory.glob(f"*tfevents*.fmae-{uid}")) if directory.is_dir() else ():
                for event in self._loader(str(path)).Load():  # a kill -9 mid-write: the torn record is skipped
                    for value in event.summary.value:
                        log.steps.setdefault(value.tag, set()).add(event.step)
                        content = value.metadata.plugin_data.content
                        if value.tag == self._meta.SESSION_END_INFO_TAG:
                            log.ended.add(self._plugin.HParamsPluginData.FromString(content).session_end_info.status)
                        elif value.tag == self._meta.EXPERIMENT_TAG:
                            log.experiment.add(content)
            others = [p for p in directory.glob("*tfevents*") if not p.name.endswith(f".fmae-{uid}")] \
                if directory.is_dir() else []
            if others and not self._warned:  # never removed: they are not this run's
                self._warned = True
                self._warn(f"warning: {directory} also holds event files of another run (one replaced by --overwrite, "
                           "or another directory of the same name): TensorBoard shows both; remove the older "
                           "files or choose another --tensorboard DIR")
        return log

    def _write(self, log: _Log, step: int, values: Sequence[Any]) -> None:
        if not values:
            return
        if log.writer is None:
            log.directory.mkdir(parents=True, exist_ok=True)
            log.writer = self._writer_class(str(log.directory), flush_secs=5, filename_suffix=f".fmae-{log.uid}")
        log.writer.add_event(self._event.Event(wall_time=time.time(), step=step,
                                               summary=self._summary.Summary(value=list(values))))
        for value in values:
            log.steps.setdefault(value.tag, set()).add(step)

    def _hparams(self, tag: str, **data: Any) -> Any:
        plugin_data = self._plugin.HParamsPluginData(**data)
        return self._summary.Summary.Value(tag=tag, metadata=self._meta.create_summary_metadata(plugin_data),
                                           tensor=self._meta.NULL_TENSOR)

    # ------------------------------------------------------------ the tracker

    def begin_sweep(self, sweep: Target, grid: dict[str, list[Any]]) -> None:
        """The grid as the HParams experiment (its table and parallel-coordinates views), once per grid."""
        api = self._api
        infos = []
        for name in PARAMS:
            kind = api.DATA_TYPE_STRING if name in STRINGS else api.DATA_TYPE_FLOAT64
            info = api.HParamInfo(name=name, type=kind)
            if name in grid:
                for v in grid[name]:
                    if kind == api.DATA_TYPE_STRING:
                        info.domain_discrete.values.add().string_value = str(v)
                    else:
                        info.domain_discrete.values.add().number_value = float(v)
            infos.append(info)
        metrics = [api.MetricInfo(name=api.MetricName(tag=tag)) for tag in METRICS]
        experiment = api.Experiment(hparam_infos=infos, metric_infos=metrics)
        log = self._log(self.logdir / sweep.name, sweep.uid)
        value = self._hparams(self._meta.EXPERIMENT_TAG, experiment=experiment)
        if value.metadata.plugin_data.content not in log.experiment:
            self._write(log, 0, [value])
            log.experiment.add(value.metadata.plugin_data.content)
            log.writer.flush()

    def log_run(self, run: Target, params: dict[str, Any], points: Sequence[Point],
                summary: dict[str, Any] | None, parent: Target | None, running: bool) -> None:
        directory = self.logdir / parent.name / run.name if parent is not None else self.logdir / run.name
        log = self._log(directory, run.uid)
        if self._meta.SESSION_START_INFO_TAG not in log.steps:
            start = self._plugin.SessionStartInfo(group_name=run.name, start_time_secs=time.time())
            for k, v in params.items():
                if isinstance(v, str):
                    start.hparams[k].string_value = v
                else:
                    start.hparams[k].number_value = float(v)
            self._write(log, 0, [self._hparams(self._meta.SESSION_START_INFO_TAG, session_start_info=start)])
        for point in points:
            new = [self._summary.Summary.Value(tag=k, simple_value=v) for k, v in point.metrics().items()
                   if point.epoch not in log.steps.get(k, ())]
            self._write(log, point.epoch, new)
            self.sent += len(new)
        if summary is not None:
            final, epochs = summary.get("final_test_loss"), int(summary.get("epochs_run") or 0)
            if finite(final) and epochs not in log.steps.get("final_test_loss", ()):
                self._write(log, epochs, [self._summary.Summary.Value(tag="final_test_loss", simple_value=final)])
                self.sent += 1
            status = self._api.Status.Value(STATUS.get(summary.get("status", ""), "STATUS_UNKNOWN"))
            if status not in log.ended:
                end = self._plugin.SessionEndInfo(status=status, end_time_secs=time.time())
                self._write(log, epochs, [self._hparams(self._meta.SESSION_END_INFO_TAG, session_end_info=end)])
                log.ended.add(status)
        if log.writer is not None:
            log.writer.flush()  # each epoch on disk as it is logged: a kill loses none that was logged

    def end_sweep(self, sweep: Target, doc: dict[str, Any]) -> None:
        pass  # the cells' sessions carry what TensorBoard shows: the HParams table ranks them

    def reason(self, exc: BaseException) -> str:
        return first_line(exc)

    def close(self) -> None:
        for log in self._logs.values():
            if log.writer is not None:
                log.writer.close()
                log.writer = None
