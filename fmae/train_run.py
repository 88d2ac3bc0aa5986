"""One training run (`fmae train`): settings in, the run directory written, its summary out.

It locks and checks the run directory (or resumes its run), trains with the engine, every epoch
through the driver's writer (fmae.saving), and ends the run (model.pt, summary.json). It never
prints: progress flows through one TrainProgress object.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol

from fmae.settings import TrainSettings
from fmae.status import Status


class TrainProgress(Protocol):
    """What a training run reports as it goes (fmae.cli.ui.TrainFeedback draws it). A context
    manager, entered once the run directory is locked."""

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: object) -> None: ...

    def message(self, text: str) -> None:
        """A line for the user (stderr): the data found, what trains where, a hint."""

    def begin(self, label: str, epochs: int, done: int) -> None:
        """The run `label` trains to `epochs`, `done` of them already (resumed)."""

    def epoch_done(self, metrics: Any) -> None: ...


def run_train(settings: TrainSettings, progress: TrainProgress) -> dict[str, Any]:
    """Train one run and return its summary (`fmae train --json`). Ctrl-C and SIGTERM write
    summary.json (status interrupted) after the latest state and raise Interrupted naming the
    command that resumes the run; a failure before any epoch leaves no run behind. With --dry-run,
    what it would do (fmae.sweeps.dry_run), nothing written."""
    if settings.dry_run:
        from fmae.sweeps.dry_run import plan_train

        return plan_train(settings, progress)
    from fmae import numerics

    numerics.enter(settings.numerics)  # before torch loads
    from fmae import data, manifest, runs, saving
    from fmae import engine as engines
    from fmae.config import check_engine
    from fmae.device import environment, resolve_device, set_threads
    from fmae.errors import out_of_memory
    from fmae.execution import check_checkpoint_every, check_threads
    from fmae.executors.base import busy_hint, cores
    from fmae.interrupts import interrupted
    from fmae.locks import lock_run_dir
    from fmae.trackers import open_trackers, require
    from fmae.training.contract import history_of_state

    config = settings.config
    run = runs.RunDir(settings.run_dir or Path("runs") / runs.cell_name(config))
    torch_device = resolve_device("cpu" if settings.reproducible else settings.device)
    engine_name = engines.resolve_engine(check_engine(settings.engine), torch_device)
    set_threads(check_threads(settings.threads, cores()))
    numerics.verify(settings.numerics)
    every = check_checkpoint_every(settings.checkpoint_every)
    require(settings.trackers)  # a missing package: one error, before anything is written
    started = time.perf_counter()
    with lock_run_dir(run.path), progress, open_trackers(settings.trackers, progress.message) as trackers, \
            saving.Saver(every, trackers=trackers) as saver:
        hint = busy_hint("train") if settings.threads is None else None
        if hint:
            progress.message(hint)
        # resume: the run's own settings; of the flags given, only --epochs, --patience, --min-delta may differ
        if settings.resume:
            config = run.resumed_config(config, settings.explicit)
        state = run.check(config, overwrite=settings.overwrite, resume=settings.resume)
        if state is not None:
            numerics.resumable(run.saved_environment(), settings.numerics, f"the run in {run.path}")
        manifest.remove_stale_temporaries(run.path, runs.RUN_FILES)
        dataset = data.find_and_load(settings.data_dir, download=settings.download, device=torch_device,
                                     on_found=progress.message)
        env = environment(str(torch_device), dataset.source, dataset.sha256, engine=engine_name,
                          numerics=settings.numerics)
        if settings.overwrite or not run.exists:
            run.reset()
        run.write_config(config, env)
        runs.write_resolved_config(run.path, settings.resolved)
        if state is not None:
            saver.resumed(run, config, state)
        else:
            saver.begin(run, config)  # the checkpoint clock starts with the run
        done = int(state["epoch"]) if state else 0
        label = runs.cell_name(config)
        how = numerics.describe(settings.numerics)
        progress.message(f"training {label} on {torch_device} ({how}{config.precision}) -> {run.path}"
                         + (f", resuming after epoch {done}" if done else ""))
        progress.begin(label, config.epochs, done)
        history: list[Any] = history_of_state(state) if state else []

        def on_epoch(cell: Any, m: Any, data_rng: Any) -> None:  # an owned snapshot: training goes on in place
            history[:] = saver.epoch(run, config, cell.snapshot(data_rng))
            progress.epoch_done(m)

        try:
            result = engines.train(config, dataset, torch_device, resume=state, on_epoch=on_epoch, engine=engine_name)
        except KeyboardInterrupt as exc:
            saver.close()  # the latest state first: summary.json last
            summary = runs.summarize(config, Status.INTERRUPTED, history, run_dir=run.path,
                                     device=str(torch_device), wall_seconds=time.perf_counter() - started)
            run.write_summary(summary)
            trackers.log(run.path, config, history, summary)
            saved = ("finished epochs are saved" if history or state
                     else "it was interrupted before any epoch finished")
            raise interrupted(exc, "training", saved, resume=settings.to_args(config, run.path),
                              partial=summary) from None
        except (MemoryError, RuntimeError) as exc:
            if not history and state is None:  # nothing trained: leave no run that would "already hold" one
                run.abandon()
            oom = out_of_memory(exc, config)
            if oom is None:
                raise
            raise oom from exc
        return saver.finish(run, config, result.status, result.history, result.model.state_dict(), env,
                            device=str(torch_device), wall_seconds=time.perf_counter() - started)
