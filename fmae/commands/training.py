"""`fmae train` and `fmae sweep`: parse -> config -> engine -> runs -> render."""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from fmae.config import ExecutorConfig, ModelConfig, NoiseConfig, PruneConfig, SweepConfig, TrainConfig
from fmae.errors import ConfigError, check_fail_on
from fmae.locks import lock_run_dir
from fmae.status import Status
from fmae.options import (
    CHECKPOINT_EVERY, E, N, T, Activation, Address, BatchSize, CheckpointEvery, CpusPerCell, DataDir, Device,
    Dropout, Engine, Epochs, Eta, Executor, FailOn, GpusPerCell, Hidden, Jobs, Json, Lr, M, MaxRetries, MinDelta,
    MinEpochs, Momentum, NoDownload, Optim, OptimizerName, Patience, Precision, Prune, Quiet, S, Seed, Threads,
    TrainNoise, TrainNoiseSigma,
)


def _interrupted(exc: BaseException, what: str, saved_any: bool, resume: list[str]) -> Exception:
    from fmae.cli import interrupted

    saved = "finished epochs are saved" if saved_any else "it was interrupted before any epoch finished"
    return interrupted(exc, what, saved, f"resume with: {shlex.join(resume)}")


def _given(device: str, data_dir: Path | None, no_download: bool) -> list[str]:
    """Where to train and where the data is, as given (not settings of the run, but the command's)."""
    return [*(["--device", device] if device != "auto" else []),
            *(["--data-dir", str(data_dir)] if data_dir is not None else []),
            *(["--no-download"] if no_download else [])]


def _hint_if_busy(feedback: Any, command: str, default_threads: bool) -> None:
    """On a busy machine, with the default threads: say what trains faster (stderr, not with --quiet)."""
    from fmae import executors

    hint = executors.busy_hint(command) if default_threads else None
    if hint:
        feedback.message(hint)


def _train_command(config: TrainConfig, run_dir: Path, threads: int | None, given: list[str]) -> list[str]:
    """The `fmae train` line that resumes a run: every setting that must match, spelled out."""
    return ["fmae", "train", "--run-dir", str(run_dir), *config.to_args(),
            *(["--threads", str(threads)] if threads is not None else []), *given, "--resume"]


def _sweep_command(grid: SweepConfig, options: ExecutorConfig, pruning: PruneConfig | None, run_dir: Path,
                   fail_fast: bool, given: list[str]) -> list[str]:
    """The `fmae sweep` line that resumes a sweep: the grid, the shared settings, the executor, the pruning."""
    return ["fmae", "sweep", "--run-dir", str(run_dir), *grid.to_args(), *options.to_args(),
            *(pruning.to_args() if pruning is not None else []), *given, *(["--fail-fast"] if fail_fast else [])]


def _explicit(ctx: typer.Context) -> list[str]:
    """The parameters the user gave (on the command line or through the environment), not defaults."""
    sources = {p.name: ctx.get_parameter_source(p.name) for p in ctx.command.params if p.name}
    # by name: typer may bring a click of its own, whose ParameterSource is another enum
    return [name for name, source in sources.items() if getattr(source, "name", "") in ("COMMANDLINE", "ENVIRONMENT")]


def train(
    ctx: typer.Context,
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
    engine: Engine = E.engine,
    threads: Threads = None,
    patience: Patience = T.patience,
    min_delta: MinDelta = T.min_delta,
    noise: TrainNoise = None,
    noise_sigma: TrainNoiseSigma = N.sigma,
    data_dir: DataDir = None,
    no_download: NoDownload = False,
    checkpoint_every: CheckpointEvery = CHECKPOINT_EVERY,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --run-dir from its last.pt.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the run in --run-dir.")] = False,
    json_out: Json = False,
    quiet: Quiet = False,
    fail_on: FailOn = None,
) -> None:
    """Train one autoencoder and save it in a run directory.

    Example: fmae train --optim adam --hidden 512 --epochs 30 --run-dir runs/a
    """
    from fmae import data, executors, runs, saving
    from fmae import engine as engines
    from fmae.checkpoints import cloned
    from fmae.config import check_checkpoint_every, check_engine, check_threads
    from fmae.errors import out_of_memory
    from fmae.ui import Feedback, emit

    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other")
    config = TrainConfig(
        model=ModelConfig(hidden=hidden, dropout=dropout, activation=activation),
        optim=optim, lr=lr, momentum=momentum, epochs=epochs, batch_size=batch_size, seed=seed,
        precision=precision, patience=patience, min_delta=min_delta,
        noise=NoiseConfig.training(noise, noise_sigma),
    ).resolved()
    run = runs.RunDir(run_dir or Path("runs") / runs.cell_name(config))
    torch_device = engines.resolve_device(device)
    trainer = engines.resolve_engine(check_engine(engine), torch_device)
    engines.set_threads(check_threads(threads, executors.cores()))
    every = check_checkpoint_every(checkpoint_every)
    started = time.perf_counter()
    with lock_run_dir(run.path), Feedback(quiet=quiet) as feedback, saving.Saver(every) as saver:
        _hint_if_busy(feedback, "train", threads is None)
        if resume:  # the run's own settings; of the flags given, only --epochs, --patience, --min-delta may differ
            config = run.resumed_config(config, _explicit(ctx))
        state = run.check(config, overwrite=overwrite, resume=resume)
        runs.remove_stale_temporaries(run.path, runs.RUN_FILES)
        dataset = data.find_and_load(data_dir, download=not no_download, device=torch_device,
                                     on_found=feedback.message)
        env = runs.environment(str(torch_device), dataset.source, dataset.sha256, engine=trainer)
        if overwrite or not run.exists:
            run.reset()
        run.write_config(config, env)
        if state is not None:
            saver.resumed(run, config, state)
        done = int(state["epoch"]) if state else 0
        label = runs.cell_name(config)
        feedback.message(f"training {label} on {torch_device} ({config.precision}) -> {run.path}"
                         + (f", resuming after epoch {done}" if done else ""))
        feedback.task("epochs", label, config.epochs, done)
        history: list[Any] = runs.history_of(state) if state else []

        def on_epoch(cell: Any, m: Any, data_rng: Any) -> None:  # a copy: training goes on in place
            history[:] = saver.epoch(run, config, cloned(cell.resume_state(data_rng)))
            feedback.epoch("epochs", label, m, config.epochs)

        try:
            result = engines.train(config, dataset, torch_device, resume=state, on_epoch=on_epoch, engine=trainer)
        except KeyboardInterrupt as exc:
            saver.close()  # the latest state first: summary.json last
            run.write_summary(runs.summarize(config, Status.INTERRUPTED, history, run_dir=run.path,
                                             device=str(torch_device), wall_seconds=time.perf_counter() - started))
            resume_line = _train_command(config, run.path, threads, _given(device, data_dir, no_download))
            raise _interrupted(exc, "training", bool(history or state), resume_line) from None
        except (MemoryError, RuntimeError) as exc:
            if not history and state is None:  # nothing trained: leave no run that would "already hold" one
                run.abandon()
            raise out_of_memory(exc, config) or exc
        summary = saver.finish(run, config, result.status, result.history, result.model.state_dict(), env,
                               device=str(torch_device), wall_seconds=time.perf_counter() - started)
    emit(summary, json_out, lambda doc: _print_train(doc, feedback))
    check_fail_on([summary["status"]], [s.value for s in fail_on or ()], "runs")


def _print_train(summary: dict[str, Any], feedback: Any) -> None:
    from fmae.ui import fmt_loss, fmt_seconds, print_table

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
    engine: Engine = E.engine,
    jobs: Jobs = E.jobs,
    threads: Threads = None,
    executor: Executor = E.executor,
    address: Address = None,
    cpus_per_cell: CpusPerCell = E.cpus_per_cell,
    gpus_per_cell: GpusPerCell = E.gpus_per_cell,
    max_retries: MaxRetries = E.max_retries,
    checkpoint_every: CheckpointEvery = CHECKPOINT_EVERY,
    patience: Patience = T.patience,
    min_delta: MinDelta = T.min_delta,
    noise: TrainNoise = None,
    noise_sigma: TrainNoiseSigma = N.sigma,
    data_dir: DataDir = None,
    no_download: NoDownload = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start the sweep directory anew.")] = False,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Stop at the first cell that fails.")] = False,
    prune: Prune = None,
    eta: Eta = None,
    min_epochs: MinEpochs = None,
    json_out: Json = False,
    quiet: Quiet = False,
    fail_on: FailOn = None,
) -> None:
    """Grid search over optimizer x learning rate x hidden size x seed; resumable.

    Several values follow one flag: fmae sweep --optim sgd --lr 0.1 0.01 0.001 --hidden 64 128 256 512.
    Running the same command again skips finished cells and resumes unfinished ones; adding values
    adds only the new cells. Exit 0 when every cell completed, stopped early, diverged, collapsed or was
    pruned; 1 when one failed; 3 when one ended in a status named by --fail-on.
    Bigger sweeps: --jobs 2 trains two cells at once on this machine; --executor ray on a Ray cluster.
    """
    from fmae import data, executors, halving, results, runs, saving
    from fmae import sweep as sweeps
    from fmae.config import check_checkpoint_every
    from fmae.ui import Feedback, emit

    base = TrainConfig(model=ModelConfig(dropout=dropout, activation=activation), optim="sgd", momentum=momentum,
                       epochs=epochs, batch_size=batch_size, precision=precision, patience=patience,
                       min_delta=min_delta, noise=NoiseConfig.training(noise, noise_sigma))
    grid = SweepConfig(optims=tuple(o.value for o in optim), lrs=tuple(lr), hiddens=tuple(hidden), seeds=tuple(seed), base=base)
    options = ExecutorConfig(executor=executor, jobs=jobs, threads=threads, address=address,
                             cpus_per_cell=cpus_per_cell, gpus_per_cell=gpus_per_cell, max_retries=max_retries,
                             engine=engine)
    where = sweeps.SweepDir(run_dir or Path("runs") / ("sweep-" + "-".join(grid.optims)))
    pruning = PruneConfig.of(prune, eta, min_epochs)
    rungs = pruning.rungs(epochs) if pruning is not None else ()
    pruned_how = None if pruning is None else {"method": "halving", "eta": pruning.eta, "rungs": list(rungs)}
    every = check_checkpoint_every(checkpoint_every)
    executors.start_early(options)
    torch_device = sweeps.cell_device(options, device)
    started = time.perf_counter()
    with lock_run_dir(where.path), Feedback(quiet=quiet) as feedback:
        _hint_if_busy(feedback, "sweep", executor == "local" and jobs == 1 and threads is None)
        merged = where.open(grid, overwrite=overwrite)
        dataset = data.find_and_load(data_dir, download=not no_download, on_found=feedback.message,
                                     device="cpu" if executor == "ray" else torch_device)
        env = runs.environment(str(torch_device), dataset.source, dataset.sha256, threads=sweeps.cell_threads(options),
                               engine=sweeps.cell_engine(options, torch_device))
        where.reset(overwrite)
        where.write_grid(merged)
        plans = where.plan(grid)
        todo = [p for p in plans if not p.done]
        threads_each = f"{env['threads']} thread{'s' if env['threads'] != 1 else ''}"
        how = (f"{jobs} jobs x {threads_each}" if executor == "local" and jobs > 1
               else f"ray, {threads_each} per cell" if executor == "ray" else threads_each)
        held = sum(1 for p in todo if p.saved_status == Status.PRUNED)  # pruned at a rung: finished, though resumable
        feedback.message(f"sweep {where.path}: {len(plans)} cells, {len(plans) - len(todo) + held} already finished"
                         + (f" ({held} pruned)" if held else "") + f", on {torch_device} ({precision}, {how})")

        training: dict[str, None] = {}  # the cells in training now, in the order they started

        def training_now() -> str:  # the cells bar names the cells the executor is training
            names = list(training)
            return f"training {', '.join(names[:2])}" + (f" +{len(names) - 2}" if len(names) > 2 else "") \
                if names else ""

        feedback.task("cells", "cells", len(plans), len(plans) - len(todo))
        finished = {"n": len(plans) - len(todo)}

        def on_start(plan: Any) -> None:  # a bar per running cell: its epoch and last losses
            training[plan.name] = None
            feedback.task(plan.name, plan.name, epochs, plan.start_epoch)
            feedback.info("cells", training_now())

        def on_epoch(plan: Any, m: Any) -> None:
            feedback.epoch(plan.name, plan.name, m, epochs)

        def on_cell(plan: Any, status: str) -> None:
            training.pop(plan.name, None)
            finished["n"] += 1
            feedback.remove(plan.name)
            feedback.advance("cells", finished["n"], len(plans), training_now(),
                             f"cell {finished['n']}/{len(plans)} {plan.name} {status}"
                             + (f": {plan.error}" if plan.error else ""))

        def pruned(plan: Any) -> None:
            halving.prune(plan, str(torch_device))
            on_cell(plan, Status.PRUNED)

        try:  # one executor for the whole sweep (every rung), closed before the writer writes the latest states
            with saving.Saver(every) as saver, executors.Session(options, dataset, torch_device) as session:
                def train_to(subset: list[Any], stop_at: int | None = None) -> None:
                    sweeps.run(subset, session, saver, env, options, device=torch_device, on_start=on_start,
                               on_epoch=on_epoch, on_cell=on_cell, fail_fast=fail_fast, stop_at=stop_at)
                    for plan in subset:  # paused at a rung of successive halving: no longer in training
                        if plan.name in training:
                            del training[plan.name]
                            feedback.remove(plan.name)
                    feedback.info("cells", training_now())

                if pruning is None:
                    train_to(plans)
                else:
                    halving.successive_halving(plans, rungs, pruning.eta, train_to, pruned)
        except KeyboardInterrupt as exc:
            rows = results.collect(where, merged, plans)
            results.write(where, rows, merged.base.epochs, pruned_how)
            raise _interrupted(exc, "sweep", any(r["epochs_run"] for r in rows),
                               _sweep_command(grid, options, pruning, where.path, fail_fast,
                                              _given(device, data_dir, no_download))) from None
        rows = results.collect(where, merged, plans)
        best = results.write(where, rows, merged.base.epochs, pruned_how)
    failed = [r for r in rows if r["status"] == Status.FAILED]
    doc = results.document(where, rows, best, merged.base.epochs, pruned_how)
    doc["wall_seconds"] = round(time.perf_counter() - started, 3)
    emit(doc, json_out, _print_sweep)
    if failed:
        raise typer.Exit(1)
    check_fail_on([r["status"] for r in rows], [s.value for s in fail_on or ()], "cells")


def _print_sweep(doc: dict[str, Any]) -> None:
    from fmae.ui import fmt_loss, fmt_seconds, print_table, write_stdout

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
    if "groups" in doc:
        print_table("groups over seeds: final test loss, mean ± std (95% interval)",
                    ["rank", "optim", "lr", "hidden", "n", "mean ± std", "95% CI ±", "statuses"],
                    [[g["rank"] or "-", g["optim"], f"{g['lr']:g}", g["hidden"], g["n"],
                      f"{fmt_loss(g['mean_final_test_loss'])} ± {fmt_loss(g['std_final_test_loss'])}",
                      fmt_loss(g["ci95_final_test_loss"]),
                      " ".join(f"{k} {v}" for k, v in g["statuses"].items())] for g in doc["groups"]])
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

