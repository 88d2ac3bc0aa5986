"""`fmae train` and `fmae sweep`: parse -> config -> engine -> runs -> render."""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from fmae.commands import load_data
from fmae.config import ModelConfig, NoiseConfig, SweepConfig, TrainConfig
from fmae.locks import lock_run_dir
from fmae.options import (
    N, T, Activation, BatchSize, DataDir, Device, Dropout, Epochs, Hidden, Json, Lr, M, MinDelta, Momentum,
    NoDownload, Optim, OptimizerName, Patience, Precision, Quiet, S, Seed, TrainNoise, TrainNoiseSigma,
)


def _training_noise(kind: Optional[str], sigma: float) -> Optional[NoiseConfig]:
    noise = NoiseConfig(kind or N.kind, sigma)  # validates --noise-sigma even without --noise
    return noise if kind else None


def _interrupted(exc: BaseException, what: str, resume_hint: str) -> Exception:
    from fmae.cli import interrupted

    return interrupted(exc, what, "finished epochs are saved", f"resume with: {resume_hint}")


def _train_command(config: TrainConfig, run_dir: Path) -> str:
    """The `fmae train` line that resumes a run: every setting that must match, spelled out."""
    m = config.model
    args = ["fmae", "train", "--run-dir", str(run_dir), "--optim", config.optim, "--lr", repr(config.learning_rate),
            "--hidden", str(m.hidden), "--epochs", str(config.epochs), "--batch-size", str(config.batch_size),
            "--dropout", repr(m.dropout), "--activation", m.activation, "--seed", str(config.seed),
            "--precision", config.precision]
    if config.momentum:
        args += ["--momentum", repr(config.momentum)]
    if config.noise is not None:
        args += ["--noise", config.noise.kind, "--noise-sigma", repr(config.noise.sigma)]
    return " ".join(shlex.quote(a) for a in args) + " --resume"


def train(
    run_dir: Annotated[Optional[Path], typer.Option(
        help="Directory for config.json, metrics.csv, model.pt, last.pt, summary.json "
             "[default: runs/<optim>-lr<lr>-h<hidden>-s<seed>].", show_default=False)] = None,
    optim: Optim = T.optim,
    lr: Lr = T.lr,
    hidden: Hidden = M.hidden,
    epochs: Epochs = T.epochs,
    batch_size: BatchSize = T.batch_size,
    dropout: Dropout = M.dropout,
    activation: Activation = M.activation,
    momentum: Momentum = T.momentum,
    seed: Seed = T.seed,
    precision: Precision = T.precision,
    device: Device = "auto",
    patience: Patience = T.patience,
    min_delta: MinDelta = T.min_delta,
    noise: TrainNoise = None,
    noise_sigma: TrainNoiseSigma = N.sigma,
    data_dir: DataDir = None,
    no_download: NoDownload = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --run-dir from its last.pt.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the run in --run-dir.")] = False,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Train one autoencoder and save it in a run directory.

    Example: fmae train --optim adam --hidden 512 --epochs 30 --run-dir runs/a
    """
    from fmae import engine, runs
    from fmae.config import check_device
    from fmae.errors import ConfigError, out_of_memory
    from fmae.ui import Feedback, epoch_info, fmt_loss, fmt_seconds, print_json, print_table

    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other")
    config = TrainConfig(
        model=ModelConfig(hidden=hidden, dropout=dropout, activation=activation),
        optim=optim, lr=lr, momentum=momentum, epochs=epochs, batch_size=batch_size, seed=seed,
        precision=precision, patience=patience, min_delta=min_delta,
        noise=_training_noise(noise, noise_sigma),
    ).resolved()
    run = runs.RunDir(run_dir or Path("runs") / runs.cell_name(config))
    torch_device = engine.resolve_device(check_device(device))
    started = time.perf_counter()
    with lock_run_dir(run.path), Feedback(quiet=quiet) as feedback:
        state = run.check(config, overwrite=overwrite, resume=resume)
        runs.remove_stale_temporaries(run.path, runs.RUN_FILES)
        dataset = load_data(data_dir, no_download, torch_device, feedback)
        env = runs.environment(str(torch_device), dataset.source, dataset.sha256)
        if overwrite or not run.exists:
            run.reset()
        run.write_config(config, env)
        done = int(state["epoch"]) if state else 0
        label = runs.cell_name(config)
        feedback.message(f"training {label} on {torch_device} ({precision}) -> {run.path}"
                         + (f", resuming after epoch {done}" if done else ""))
        feedback.task("epochs", label, config.epochs, done)
        history: list[Any] = []

        def on_epoch(cell: Any, m: Any, data_rng: Any) -> None:
            history[:] = cell.history
            run.save_last(config, cell.resume_state(data_rng))  # first: metrics.csv never runs ahead of it
            run.write_metrics(cell.history)
            feedback.advance("epochs", m.epoch, config.epochs, epoch_info(m.train_loss, m.test_loss),
                             f"{label} epoch {m.epoch}/{config.epochs} train_loss={fmt_loss(m.train_loss)} "
                             f"test_loss={fmt_loss(m.test_loss)} seconds={m.seconds:.2f}")

        try:
            result = engine.train(config, dataset, torch_device, resume=state, on_epoch=on_epoch)
        except KeyboardInterrupt as exc:
            run.write_summary(runs.summarize(config, "interrupted", history, run_dir=run.path,
                                             device=str(torch_device), wall_seconds=time.perf_counter() - started))
            raise _interrupted(exc, "training", _train_command(config, run.path)) from None
        except (MemoryError, RuntimeError) as exc:
            if not history and state is None:  # nothing trained: leave no run that would "already hold" one
                runs.unlink_quietly(run.file("config.json"))
            raise out_of_memory(exc, config) or exc
        run.write_metrics(result.history)  # a kill between last.pt and metrics.csv may have left it behind
        if result.status != "diverged":
            run.save_model(config, result.model.state_dict(), result.history, result.status, env)
        summary = runs.summarize(config, result.status, result.history, run_dir=run.path,
                                 device=str(torch_device), wall_seconds=time.perf_counter() - started)
        run.write_summary(summary)
    if json_out:
        print_json(summary)
        return
    if result.status == "diverged":
        feedback.message(f"warning: the loss became non-finite at epoch {result.epochs_run}; "
                         "no model.pt written (try a smaller --lr)")
    print_table(f"fmae train: {summary['status']}", ["run", "epochs", "train loss", "test loss", "best test (epoch)",
                                                      "seconds"],
                [[str(run.path), summary["epochs_run"], fmt_loss(summary["final_train_loss"]),
                  fmt_loss(summary["final_test_loss"]),
                  f"{fmt_loss(summary['best_test_loss'])} ({summary['best_epoch']})",
                  fmt_seconds(summary["wall_seconds"])]])



def sweep(
    optim: Annotated[list[OptimizerName], typer.Option(
        metavar="[adam|sgd]...", help="Optimizers to sweep; several values after one flag, e.g. --optim sgd adam.")] = [
        OptimizerName(o) for o in S.optims],
    lr: Annotated[list[float], typer.Option(
        metavar="FLOAT...", help="Learning rates, e.g. --lr 0.1 0.01 0.001 (or --lr 0.1,0.01 or --lr 0.1 --lr 0.01).")] = list(S.lrs),
    hidden: Annotated[list[int], typer.Option(metavar="INT...", help="Hidden sizes, e.g. --hidden 64 128 256 512.")] = list(S.hiddens),
    seed: Annotated[list[int], typer.Option(metavar="INT...", help="Seeds: every cell is repeated for each, e.g. --seed 0 1 2.")] = list(
        S.seeds),
    run_dir: Annotated[Optional[Path], typer.Option(
        help="Sweep directory: sweep.json, results.csv/json, best.pt, cells/ [default: runs/sweep-<optims>].",
        show_default=False)] = None,
    epochs: Epochs = T.epochs,
    batch_size: BatchSize = T.batch_size,
    dropout: Dropout = M.dropout,
    activation: Activation = M.activation,
    momentum: Momentum = T.momentum,
    precision: Precision = T.precision,
    device: Device = "auto",
    patience: Patience = T.patience,
    min_delta: MinDelta = T.min_delta,
    noise: TrainNoise = None,
    noise_sigma: TrainNoiseSigma = N.sigma,
    data_dir: DataDir = None,
    no_download: NoDownload = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start the sweep directory anew.")] = False,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Stop at the first cell that fails.")] = False,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Grid search over optimizer x learning rate x hidden size x seed; resumable.

    Several values follow one flag: fmae sweep --optim sgd --lr 0.1 0.01 0.001 --hidden 64 128 256 512.
    Running the same command again skips finished cells and resumes unfinished ones; adding values
    adds only the new cells. Exit 0 when every cell completed, stopped early or diverged; 1 when one failed.
    """
    from fmae import engine, runs
    from fmae import sweep as sweeps
    from fmae.config import check_device
    from fmae.ui import Feedback, epoch_info, fmt_loss, print_json

    base = TrainConfig(model=ModelConfig(dropout=dropout, activation=activation), optim="sgd", momentum=momentum,
                       epochs=epochs, batch_size=batch_size, precision=precision, patience=patience,
                       min_delta=min_delta, noise=_training_noise(noise, noise_sigma))
    grid = SweepConfig(optims=tuple(o.value for o in optim), lrs=tuple(lr), hiddens=tuple(hidden), seeds=tuple(seed), base=base)
    where = sweeps.SweepDir(run_dir or Path("runs") / ("sweep-" + "-".join(grid.optims)))
    torch_device = engine.resolve_device(check_device(device))
    started = time.perf_counter()
    with lock_run_dir(where.path), Feedback(quiet=quiet) as feedback:
        merged = where.open(grid, overwrite=overwrite)
        dataset = load_data(data_dir, no_download, torch_device, feedback)
        env = runs.environment(str(torch_device), dataset.source, dataset.sha256)
        where.reset(overwrite)
        where.write_grid(merged)
        plans = where.plan(grid)
        todo = [p for p in plans if not p.done]
        feedback.message(f"sweep {where.path}: {len(plans)} cells, {len(plans) - len(todo)} already finished, "
                         f"on {torch_device} ({precision})")
        def training_now() -> str:  # the cells bar names the cell in training, not the one just finished
            pending = next((p.name for p in todo if not p.done and not p.error), None)
            return f"training {pending}" if pending else ""

        feedback.task("cells", "cells", len(plans), len(plans) - len(todo), info=training_now())
        finished = {"n": len(plans) - len(todo)}
        shown = {"epoch": 0}

        def on_epoch(plan: Any, m: Any) -> None:
            if m.epoch < shown["epoch"] or shown["epoch"] == 0:  # a new cell (or group of cells) began
                feedback.task("epochs", "epochs", epochs, m.epoch - 1)
            shown["epoch"] = m.epoch
            feedback.advance("epochs", m.epoch, epochs, f"{plan.name} {epoch_info(m.train_loss, m.test_loss)}",
                             f"{plan.name} epoch {m.epoch}/{epochs} train_loss={fmt_loss(m.train_loss)} "
                             f"test_loss={fmt_loss(m.test_loss)} seconds={m.seconds:.2f}")

        def on_cell(plan: Any, status: str) -> None:
            finished["n"] += 1
            feedback.advance("cells", finished["n"], len(plans), training_now(),
                             f"cell {finished['n']}/{len(plans)} {plan.name} {status}"
                             + (f": {plan.error}" if plan.error else ""))

        try:
            sweeps.run_in_process(plans, dataset, torch_device, env, on_epoch=on_epoch, on_cell=on_cell,
                                  fail_fast=fail_fast)
        except KeyboardInterrupt as exc:
            sweeps.write_results(where, sweeps.results(where, merged, plans))
            raise _interrupted(exc, "sweep", "the same fmae sweep command") from None
        rows = sweeps.results(where, merged, plans)
        best = sweeps.write_results(where, rows)
    failed = [r for r in rows if r["status"] == "failed"]
    doc = {"schema_version": runs.SCHEMA_VERSION, "sweep_dir": str(where.path), "cells": rows, "best": best,
           "best_per_optim": sweeps.best_per_optim(rows), "wall_seconds": round(time.perf_counter() - started, 3)}
    if json_out:
        print_json(doc)
    else:
        _print_sweep(doc)
    if failed:
        raise typer.Exit(1)


def _print_sweep(doc: dict[str, Any]) -> None:
    from fmae.ui import fmt_loss, fmt_seconds, print_table

    rows = doc["cells"]
    print_table(
        f"fmae sweep {doc['sweep_dir']}: {len(rows)} cells, best marked *",
        ["rank", "optim", "lr", "hidden", "seed", "status", "epochs", "train loss", "test loss", "best (epoch)",
         "seconds"],
        [[("*1" if r["rank"] == 1 else r["rank"] or "-"), r["optim"], f"{r['lr']:g}", r["hidden"], r["seed"],
          r["status"], r["epochs_run"], fmt_loss(r["final_train_loss"]), fmt_loss(r["final_test_loss"]),
          f"{fmt_loss(r['best_test_loss'])} ({r['best_epoch'] or '-'})", fmt_seconds(r["seconds"])] for r in rows],
        highlight_row=0 if doc["best"] else None,
        droppable=("train loss", "best (epoch)", "epochs", "seed", "seconds"),  # on narrow terminals, in this order
    )
    per = doc["best_per_optim"]
    if per:
        print_table("best per optimizer", ["optim", "lr", "hidden", "test loss", "model"],
                    [[o, f"{r['lr']:g}", r["hidden"], fmt_loss(r["final_test_loss"]), r["model"]]
                     for o, r in per.items()])

