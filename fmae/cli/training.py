"""`fmae train` and `fmae sweep`: signature -> settings -> one library call (fmae.train_run.run_train,
fmae.sweeps.run.run_sweep) with one progress object -> render."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from fmae.cli.options import (
    EXECUTOR_DEFAULTS,
    MODEL_DEFAULTS,
    NOISE_DEFAULTS,
    SWEEP_DEFAULTS,
    TRAIN_DEFAULTS,
    Activation,
    Address,
    BatchSize,
    CheckpointEvery,
    ConfigFile,
    CpusPerCell,
    DataDir,
    Device,
    Dropout,
    DryRun,
    Engine,
    Epochs,
    Eta,
    Executor,
    FailOn,
    GpusPerCell,
    Hidden,
    Jobs,
    Json,
    Lr,
    MaxRetries,
    MinDelta,
    MinEpochs,
    Mlflow,
    MlflowArtifacts,
    Momentum,
    NoDownload,
    Optim,
    OptimizerName,
    Patience,
    Precision,
    PrintConfig,
    Prune,
    Quiet,
    Reproducible,
    Seed,
    TensorBoard,
    Threads,
    TrainNoise,
    TrainNoiseSigma,
)
from fmae.cli.parsing import RESOLVED
from fmae.config import ModelConfig, NoiseConfig, SharedSettings, SweepConfig, TrainConfig
from fmae.errors import ConfigError, check_fail_on
from fmae.execution import CHECKPOINT_EVERY, ExecutorConfig, PruneConfig, TrackerConfig
from fmae.settings import SweepSettings, TrainSettings
from fmae.status import Status


def _explicit(ctx: typer.Context) -> list[str]:
    """The parameters the user gave (on the command line, through the environment or in --config), not defaults."""
    sources = {p.name: ctx.get_parameter_source(p.name) for p in ctx.command.params if p.name}
    # by name: typer may bring a click of its own, whose ParameterSource is another enum
    return [name for name, source in sources.items()
            if getattr(source, "name", "") in ("COMMANDLINE", "ENVIRONMENT", "DEFAULT_MAP")]  # DEFAULT_MAP: --config


def train(
    ctx: typer.Context,
    run_dir: Annotated[Path | None, typer.Option(
        help="Directory for config.json, metrics.csv, model.pt, last.pt, summary.json "
             "[default: runs/<optim>-lr<lr>-h<hidden>-s<seed>].", show_default=False)] = None,
    optim: Optim = TRAIN_DEFAULTS.optim,
    lr: Lr = None,  # the optimizer's DEFAULT_LR, filled in by TrainConfig
    hidden: Hidden = MODEL_DEFAULTS.hidden,
    epochs: Epochs = TRAIN_DEFAULTS.epochs,
    batch_size: BatchSize = TRAIN_DEFAULTS.batch_size,
    dropout: Dropout = MODEL_DEFAULTS.dropout,
    activation: Activation = MODEL_DEFAULTS.activation,
    momentum: Momentum = TRAIN_DEFAULTS.momentum,
    seed: Seed = TRAIN_DEFAULTS.seed,
    precision: Precision = TRAIN_DEFAULTS.precision,
    device: Device = "auto",
    engine: Engine = EXECUTOR_DEFAULTS.engine,
    threads: Threads = None,
    reproducible: Reproducible = False,
    patience: Patience = TRAIN_DEFAULTS.patience,
    min_delta: MinDelta = TRAIN_DEFAULTS.min_delta,
    noise: TrainNoise = None,
    noise_sigma: TrainNoiseSigma = NOISE_DEFAULTS.sigma,
    data_dir: DataDir = None,
    no_download: NoDownload = False,
    checkpoint_every: CheckpointEvery = CHECKPOINT_EVERY,
    tensorboard: TensorBoard = None,
    mlflow: Mlflow = None,
    mlflow_artifacts: MlflowArtifacts = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --run-dir from its last.pt.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the run in --run-dir.")] = False,
    json_out: Json = False,
    quiet: Quiet = False,
    fail_on: FailOn = None,
    config: ConfigFile = None,
    print_config: PrintConfig = False,
    dry_run: DryRun = False,
) -> None:
    """Train one autoencoder and save it in a run directory.

    Example: fmae train --optim adam --hidden 512 --epochs 30 --run-dir runs/a
    """
    from fmae.cli.ui import TrainFeedback, emit
    from fmae.train_run import run_train

    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other")
    config = TrainConfig(
        model=ModelConfig(hidden=hidden, dropout=dropout, activation=activation),
        optim=optim, lr=lr, momentum=momentum, epochs=epochs, batch_size=batch_size, seed=seed,
        precision=precision, patience=patience, min_delta=min_delta,
        noise=NoiseConfig.training(noise, noise_sigma),
    )
    settings = TrainSettings(config, run_dir=run_dir, device=device, engine=engine, threads=threads,
                             data_dir=data_dir, download=not no_download, checkpoint_every=checkpoint_every,
                             resume=resume, overwrite=overwrite, explicit=tuple(_explicit(ctx)),
                             trackers=TrackerConfig(tensorboard, mlflow, mlflow_artifacts),
                             fail_on=tuple(s.value for s in fail_on or ()), resolved=ctx.meta.get(RESOLVED),
                             dry_run=dry_run, reproducible=reproducible)
    progress = TrainFeedback(quiet=quiet)
    summary = run_train(settings, progress)
    emit(summary, json_out, print_dry_run if dry_run else lambda doc: _print_train(doc, progress))
    if dry_run:
        return
    check_fail_on([summary["status"]], list(settings.fail_on), "runs")


def _print_train(summary: dict[str, Any], feedback: Any) -> None:
    from fmae.cli.ui import fmt_loss, fmt_seconds, print_table

    if summary["status"] == Status.DIVERGED:
        feedback.message(f"warning: the loss became non-finite at epoch {summary['epochs_run']}; "
                         "no model.pt written (try a smaller --lr)")
    elif summary["status"] == Status.COLLAPSED:
        feedback.message("warning: the model gives every test image the same output (collapsed: every output "
                         "unit dead); try a smaller --lr")
    print_table(f"fmae train: {summary['status']}", ["run", "epochs", "train loss", "test loss", "best test (epoch)",
                                                      "seconds"],
                [[summary["run_dir"], summary["epochs_run"], fmt_loss(summary["final_train_loss"]),
                  fmt_loss(summary["final_test_loss"]),
                  f"{fmt_loss(summary['best_test_loss'])} ({summary['best_epoch'] or '-'})",
                  fmt_seconds(summary["wall_seconds"])]])


def sweep(
    ctx: typer.Context,
    optim: Annotated[list[OptimizerName], typer.Option(
        metavar="[adam|sgd]...",
        help="Optimizers to sweep; several values after one flag, e.g. --optim sgd adam.")] = [
        OptimizerName(o) for o in SWEEP_DEFAULTS.optims],
    lr: Annotated[list[float], typer.Option(
        metavar="FLOAT...",
        help="Learning rates, e.g. --lr 0.1 0.01 0.001 (or --lr 0.1,0.01 or --lr 0.1 --lr 0.01; never a decimal "
             "comma: --lr 1,5 is refused).")] = list(SWEEP_DEFAULTS.lrs),
    hidden: Annotated[list[int], typer.Option(
        metavar="INT...", help="Hidden sizes, e.g. --hidden 64 128 256 512.")] = list(SWEEP_DEFAULTS.hiddens),
    seed: Annotated[list[int], typer.Option(
        metavar="INT...", help="Seeds: every cell is repeated for each, e.g. --seed 0 1 2.",
    )] = list(SWEEP_DEFAULTS.seeds),
    run_dir: Annotated[Path | None, typer.Option(
        help="Sweep directory: sweep.json, results.csv/json, best.pt, cells/ [default: runs/sweep-<optims>].",
        show_default=False)] = None,
    epochs: Epochs = TRAIN_DEFAULTS.epochs,
    batch_size: BatchSize = TRAIN_DEFAULTS.batch_size,
    dropout: Dropout = MODEL_DEFAULTS.dropout,
    activation: Activation = MODEL_DEFAULTS.activation,
    momentum: Momentum = TRAIN_DEFAULTS.momentum,
    precision: Precision = TRAIN_DEFAULTS.precision,
    device: Device = "auto",
    engine: Engine = EXECUTOR_DEFAULTS.engine,
    jobs: Jobs = EXECUTOR_DEFAULTS.jobs,
    threads: Threads = None,
    reproducible: Reproducible = False,
    executor: Executor = EXECUTOR_DEFAULTS.executor,
    address: Address = None,
    cpus_per_cell: CpusPerCell = EXECUTOR_DEFAULTS.cpus_per_cell,
    gpus_per_cell: GpusPerCell = EXECUTOR_DEFAULTS.gpus_per_cell,
    max_retries: MaxRetries = EXECUTOR_DEFAULTS.max_retries,
    checkpoint_every: CheckpointEvery = CHECKPOINT_EVERY,
    patience: Patience = TRAIN_DEFAULTS.patience,
    min_delta: MinDelta = TRAIN_DEFAULTS.min_delta,
    noise: TrainNoise = None,
    noise_sigma: TrainNoiseSigma = NOISE_DEFAULTS.sigma,
    data_dir: DataDir = None,
    no_download: NoDownload = False,
    tensorboard: TensorBoard = None,
    mlflow: Mlflow = None,
    mlflow_artifacts: MlflowArtifacts = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start the sweep directory anew.")] = False,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Stop at the first cell that fails.")] = False,
    prune: Prune = None,
    eta: Eta = None,
    min_epochs: MinEpochs = None,
    json_out: Json = False,
    quiet: Quiet = False,
    fail_on: FailOn = None,
    config: ConfigFile = None,
    print_config: PrintConfig = False,
    dry_run: DryRun = False,
) -> None:
    """Grid search over optimizer x learning rate x hidden size x seed; resumable.

    Several values follow one flag: fmae sweep --optim sgd --lr 0.1 0.01 0.001 --hidden 64 128 256 512.
    Running the same command again skips finished cells and resumes unfinished ones; adding values
    adds only the new cells. Exit 0 when every cell completed, stopped early, diverged, collapsed or was
    pruned; 1 when one failed; 3 when one ended in a status named by --fail-on.
    Bigger sweeps: --jobs 2 trains two cells at once on this machine; --executor ray on a Ray cluster.
    """
    from fmae.cli.ui import SweepFeedback, emit
    from fmae.sweeps.run import run_sweep

    shared = SharedSettings.of(dropout=dropout, activation=activation, noise=noise, noise_sigma=noise_sigma,
                               momentum=momentum, epochs=epochs, batch_size=batch_size, precision=precision,
                               patience=patience, min_delta=min_delta)
    settings = SweepSettings(
        grid=SweepConfig(optims=tuple(o.value for o in optim), lrs=tuple(lr), hiddens=tuple(hidden),
                         seeds=tuple(seed), base=shared),
        executor=ExecutorConfig(executor=executor, jobs=jobs, threads=threads, address=address,
                                cpus_per_cell=cpus_per_cell, gpus_per_cell=gpus_per_cell,
                                max_retries=max_retries, engine=engine, reproducible=reproducible),
        pruning=PruneConfig.of(prune, eta, min_epochs), run_dir=run_dir, device=device, data_dir=data_dir,
        download=not no_download, overwrite=overwrite, fail_fast=fail_fast, checkpoint_every=checkpoint_every,
        trackers=TrackerConfig(tensorboard, mlflow, mlflow_artifacts), fail_on=tuple(s.value for s in fail_on or ()),
        resolved=ctx.meta.get(RESOLVED), dry_run=dry_run)
    doc = run_sweep(settings, SweepFeedback(quiet=quiet))
    emit(doc, json_out, print_dry_run if dry_run else _print_sweep)
    if dry_run:
        return
    statuses = [cell["status"] for cell in doc["cells"]]
    if Status.FAILED in statuses:
        raise typer.Exit(1)
    check_fail_on(statuses, list(settings.fail_on), "cells")


def _print_sweep(doc: dict[str, Any]) -> None:
    from fmae.cli.ui import clipped, fmt_loss, fmt_seconds, print_table, write_stdout

    rows, more = clipped(doc["cells"], "cells", "results.csv (and --json)")
    print_table(
        f"fmae sweep {doc['sweep_dir']}: {len(doc['cells'])} cells, "
        + (f"the best {len(rows)} shown, " if more else "") + "best marked *",
        ["rank", "optim", "lr", "hidden", "seed", "status", "epochs", "train loss", "test loss", "best (epoch)",
         "seconds"],
        [[("*1" if r["rank"] == 1 else r["rank"] or "-"), r["optim"], f"{r['lr']:g}", r["hidden"], r["seed"],
          r["status"], r["epochs_run"], fmt_loss(r["final_train_loss"]), fmt_loss(r["final_test_loss"]),
          f"{fmt_loss(r['best_test_loss'])} ({r['best_epoch'] or '-'})", fmt_seconds(r["seconds"])] for r in rows],
        highlight_row=0 if doc["best"] else None,
        droppable=("train loss", "best (epoch)", "epochs", "seed", "seconds"),  # on narrow terminals, in this order
    )
    if more:
        write_stdout(more + "\n")
    if "groups" in doc:
        groups, more = clipped(doc["groups"], "groups", "results_groups.csv (and --json)")
        print_table("groups over seeds: final test loss, mean ± std (95% interval)"
                    + (f", the best {len(groups)} of {len(doc['groups'])}" if more else ""),
                    ["rank", "optim", "lr", "hidden", "n", "mean ± std", "95% CI ±", "statuses"],
                    [[g["rank"] or "-", g["optim"], f"{g['lr']:g}", g["hidden"], g["n"],
                      f"{fmt_loss(g['mean_final_test_loss'])} ± {fmt_loss(g['std_final_test_loss'])}",
                      fmt_loss(g["ci95_final_test_loss"]),
                      " ".join(f"{k} {v}" for k, v in g["statuses"].items())] for g in groups])
        if more:
            write_stdout(more + "\n")
        print_table("best group per optimizer", ["optim", "lr", "hidden", "n", "mean test loss"],
                    [[o, f"{g['lr']:g}", g["hidden"], g["n"], fmt_loss(g["mean_final_test_loss"])]
                     for o, g in doc["best_group_per_optim"].items()])
    per = doc["best_per_optim"]
    if per:
        print_table("best cell per optimizer", ["optim", "lr", "hidden", "test loss", "model"],
                    [[o, f"{r['lr']:g}", r["hidden"], fmt_loss(r["final_test_loss"]), r["model"]]
                     for o, r in per.items()], droppable=("model",))  # a path is never cut mid-word: see below
    lines = []
    if "prune" in doc:
        p, spent = doc["prune"], doc["cell_epochs"]
        lines.append(f"successive halving (eta {p['eta']}): rungs at epochs {', '.join(map(str, p['rungs']))}; "
                     f"trained {spent['trained']} of the full grid's {spent['full_grid']} cell-epochs"
                     + (f" ({spent['fraction']:.0%})" if spent["fraction"] is not None else ""))
    best = doc["best"]
    if best is not None:
        cell = (Path(best["model"]).parent.name if best.get("model")
                else f"{best['optim']} lr {best['lr']:g} h {best['hidden']} seed {best['seed']}")
        lines += [f"best cell: {cell} (test loss {fmt_loss(best['final_test_loss'])})",
                  f"its model: {Path(doc['sweep_dir']) / 'best.pt'}"]  # a line of its own: the path is never cut
    else:
        lines.append("best cell: none (no cell completed or stopped early), so no best.pt")
    write_stdout("".join(line + "\n" for line in lines))


def print_dry_run(doc: dict[str, Any]) -> None:
    from fmae.cli.ui import fmt_seconds, print_table, write_stdout

    print_table(f"fmae {doc['command']} --dry-run: {doc.get('sweep_dir') or doc.get('run_dir')}",
                ["cell", "state", "epochs done", "epochs left", "estimated seconds"],
                [[r["name"], r["state"], r["epochs_done"], r["epochs_left"], fmt_seconds(r["seconds"])]
                 for r in doc["plan"]])
    counts, how, est = doc["cells"], doc["how"], doc["estimate"]
    cells = ", ".join(f"{n} {state}" for state, n in counts.items() if state != "total" and n)
    portable = "portable numerics, " if how.get("numerics") == "portable" else ""
    where = (f"on {how['device']} ({portable}{how['precision']}, {how['engine']} engine, {how['threads']} thread"
             f"{'s' if how['threads'] != 1 else ''}" + (f", {how['jobs']} jobs" if how.get("jobs", 1) > 1 else "")
             + (f", {how['executor']}" if how.get("executor", "local") != "local" else "") + ")")
    notes = [r["note"] for r in doc["plan"] if r.get("note")]
    write_stdout("".join(line + "\n" for line in [
        f"{plural(counts['total'], 'cell')}: {cells or 'none'}; would train {where}",
        f"estimate: {fmt_seconds(est['seconds'])} s for {plural(est['cell_epochs_left'], 'cell-epoch')} left "
        f"(calibration: {est['calibration']}" + (", measured now" if est["calibrated_now"] else "") + ")",
        *(["an upper bound: successive halving stops most cells at a rung"] if "prune" in how else []),
        *notes, "nothing was trained or written (--dry-run)"]))


def plural(n: int, word: str) -> str:
    """`1 cell`, `2 cells`."""
    return f"{n} {word}{'' if n == 1 else 's'}"
