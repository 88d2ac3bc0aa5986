"""The Typer app: parse -> config -> engine -> runs -> render.

No torch, torchvision or matplotlib import at module level: --help, --version and shell
completion must stay fast. Errors are translated to one `error:` line and an exit code once,
in FmaeGroup.main.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer
from typer.core import TyperCommand, TyperGroup

from fmae import __version__
from fmae.config import ACTIVATIONS, DEVICES, OPTIMIZERS, PRECISIONS, ModelConfig, SweepConfig, TrainConfig
from fmae.errors import FmaeError, Interrupted

_M, _T = ModelConfig(), TrainConfig()


class FmaeGroup(TyperGroup):
    """Translates every failure into one `error: ...` line and the documented exit code."""

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            rv = super().main(args=args, prog_name=prog_name or "fmae", complete_var=complete_var,
                              standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) else 0
        except typer.TyperException as exc:  # typer's own click: usage errors (exit 2) and the like
            ctx = getattr(exc, "ctx", None)
            sub = ctx.info_name if ctx is not None and ctx.parent is not None else None
            hint = f" (hint: see `fmae {sub} --help`)" if sub else " (hint: see `fmae --help`)"
            code = _fail(exc.format_message() + (hint if exc.exit_code == 2 else ""), exc.exit_code)
        except typer.Abort:
            code = _fail("interrupted", 130)
        except FmaeError as exc:
            code = _fail(str(exc), exc.exit_code)
        except Exception as exc:  # noqa: BLE001 - the last line of defence: no traceback for users
            code = _fail(f"unexpected {type(exc).__name__}: {exc} (hint: rerun with FMAE_DEBUG=1 and report it)", 1)
        if standalone_mode:
            sys.exit(code)
        return code


def _fail(message: str, code: int) -> int:
    from fmae.ui import print_error

    if os.environ.get("FMAE_DEBUG") == "1" and sys.exc_info()[0] is not None:
        traceback.print_exc()
    print_error(message)
    return code


class MultiValueCommand(TyperCommand):
    """Lets list options take several values after one flag: `--lr 0.1 0.01 0.001`.

    Also accepted: the flag repeated (`--lr 0.1 --lr 0.01`) and comma lists (`--lr 0.1,0.01`).
    The arguments are rewritten to the repeated form before click parses them, so click's own
    validation, help and completion keep working.
    """

    multi_value_options: tuple[str, ...] = ()

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, expand_multi_values(args, self.multi_value_options))


def expand_multi_values(args: list[str], options: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    current: str | None = None  # the list option whose values are being read
    got = 0

    def close() -> None:
        if current is not None and got == 0:
            from fmae.errors import ConfigError

            raise ConfigError(f"{current} needs at least one value", f"e.g. {current} 1 2 3")

    for arg in args:
        flag, eq, value = arg.partition("=")
        if flag in options:
            close()
            current, got = flag, 0
            if eq:
                out += [x for v in value.split(",") for x in (flag, v)]
                got = 1
            continue
        if current is not None and arg != "--" and not _looks_like_flag(arg):
            out += [x for v in arg.split(",") for x in (current, v)]
            got += 1
            continue
        close()
        current = None
        out.append(arg)
    close()
    return out


def _looks_like_flag(arg: str) -> bool:
    if not arg.startswith("-") or arg == "-":
        return False
    try:
        float(arg.split(",")[0])  # a negative number is a value (and will be refused as such)
        return False
    except ValueError:
        return True


def _multi(*options: str) -> type[MultiValueCommand]:
    return type("MultiValue", (MultiValueCommand,), {"multi_value_options": options})


app = typer.Typer(
    cls=FmaeGroup,
    name="fmae",
    help="Train, sweep, evaluate and apply feed-forward autoencoders on Fashion-MNIST.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fmae {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Train, sweep, evaluate and apply feed-forward autoencoders on Fashion-MNIST."""


# Options shared by the commands that train; defaults come from the configs.
Optim = Annotated[Literal[OPTIMIZERS], typer.Option(help="Optimizer.")]
Lr = Annotated[Optional[float], typer.Option(help="Learning rate \\[default: 0.001 for adam, 0.1 for sgd].",
                                             show_default=False)]
Hidden = Annotated[int, typer.Option(help="Hidden units h of the 784 -> h -> 784 autoencoder.")]
Momentum = Annotated[float, typer.Option(help="SGD momentum.")]
Dropout = Annotated[float, typer.Option(help="Dropout probability after the hidden ReLU, in [0, 1).")]
Activation = Annotated[Literal[ACTIVATIONS], typer.Option(help="Output activation.")]
Epochs = Annotated[int, typer.Option(help="Epochs to train.")]
BatchSize = Annotated[int, typer.Option(help="Minibatch size.")]
Seed = Annotated[int, typer.Option(help="Seed for weight init, data order and dropout.")]
Precision = Annotated[Literal[PRECISIONS], typer.Option(
                                        help="fp32, or bf16 autocast (fast only on hardware with bf16 units).")]
Device = Annotated[Literal[DEVICES], typer.Option(help="Where to train; auto: cuda, mps, cpu.")]
Patience = Annotated[int, typer.Option(help="Early stopping window in epochs; 0 turns early stopping off.")]
MinDelta = Annotated[float, typer.Option(
    help="Early stopping: stop when the test loss fell by less than this fraction over --patience epochs.")]
DataDir = Annotated[Optional[Path], typer.Option(help="Directory holding the Fashion-MNIST IDX files (.gz or raw).",
                                                 show_default=False)]
NoDownload = Annotated[bool, typer.Option("--no-download", help="Never download the dataset.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON document with the results on stdout.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output on stderr.")]


@contextmanager
def _signals() -> Iterator[dict[str, int]]:
    """Turn SIGTERM into KeyboardInterrupt so both stop training the same way (exit 143 vs 130)."""
    seen: dict[str, int] = {}

    def on_term(signum: int, _frame: Any) -> None:
        seen["signal"] = signum
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield seen
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupted(seen: dict[str, int], what: str, resume_hint: str) -> Interrupted:
    err = Interrupted(f"{what} interrupted; finished epochs are saved", f"resume with: {resume_hint}")
    if seen.get("signal") == signal.SIGTERM:
        err.exit_code = 143
    return err


def _train_command(config: TrainConfig, run_dir: Path) -> str:
    """The `fmae train` line that resumes a run: every setting that must match, spelled out."""
    m = config.model
    args = ["fmae", "train", "--run-dir", str(run_dir), "--optim", config.optim, "--lr", f"{config.learning_rate:g}",
            "--hidden", str(m.hidden), "--epochs", str(config.epochs), "--batch-size", str(config.batch_size),
            "--dropout", f"{m.dropout:g}", "--activation", m.activation, "--seed", str(config.seed),
            "--precision", config.precision]
    if config.momentum:
        args += ["--momentum", f"{config.momentum:g}"]
    return " ".join(shlex.quote(a) for a in args) + " --resume"


def _load_data(data_dir: Optional[Path], no_download: bool, device: Any, feedback: Any) -> Any:
    from fmae import data

    directory = data.locate(data_dir, download=not no_download)
    dataset = data.load(directory, device)
    feedback.message(f"data: {directory} (checksums ok)")
    return dataset


@app.command()
def train(
    run_dir: Annotated[Optional[Path], typer.Option(
        help="Directory for config.json, metrics.csv, model.pt, last.pt, summary.json "
             "\\[default: runs/<optim>-lr<lr>-h<hidden>-s<seed>].", show_default=False)] = None,
    optim: Optim = _T.optim,
    lr: Lr = _T.lr,
    hidden: Hidden = _M.hidden,
    epochs: Epochs = _T.epochs,
    batch_size: BatchSize = _T.batch_size,
    dropout: Dropout = _M.dropout,
    activation: Activation = _M.activation,
    momentum: Momentum = _T.momentum,
    seed: Seed = _T.seed,
    precision: Precision = _T.precision,
    device: Device = "auto",
    patience: Patience = _T.patience,
    min_delta: MinDelta = _T.min_delta,
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
    from fmae.errors import ConfigError
    from fmae.ui import Feedback, epoch_info, print_json, print_table, fmt_loss

    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other")
    config = TrainConfig(
        model=ModelConfig(hidden=hidden, dropout=dropout, activation=activation),
        optim=optim, lr=lr, momentum=momentum, epochs=epochs, batch_size=batch_size, seed=seed,
        precision=precision, patience=patience, min_delta=min_delta,
    ).resolved()
    run = runs.RunDir(run_dir or Path("runs") / runs.cell_name(config))
    torch_device = engine.resolve_device(check_device(device))
    state = run.check(config, overwrite=overwrite, resume=resume)
    started = time.perf_counter()
    with Feedback(quiet=quiet) as feedback, _signals() as seen:
        dataset = _load_data(data_dir, no_download, torch_device, feedback)
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
            run.write_metrics(cell.history)
            run.save_last(config, cell.resume_state(data_rng))
            feedback.advance("epochs", m.epoch, config.epochs, epoch_info(m.train_loss, m.test_loss),
                             f"{label} epoch {m.epoch}/{config.epochs} train_loss={fmt_loss(m.train_loss)} "
                             f"test_loss={fmt_loss(m.test_loss)} seconds={m.seconds:.2f}")

        try:
            result = engine.train(config, dataset, torch_device, resume=state, on_epoch=on_epoch)
        except KeyboardInterrupt:
            run.write_summary(runs.summarize(config, "interrupted", history, run_dir=run.path,
                                             device=str(torch_device), wall_seconds=time.perf_counter() - started))
            raise _interrupted(seen, "training", _train_command(config, run.path)) from None
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
                  f"{fmt_loss(summary['best_test_loss'])} ({summary['best_epoch']})", summary["wall_seconds"]]])


_S = SweepConfig()
OptimizerName = Enum("OptimizerName", {o: o for o in OPTIMIZERS}, type=str)  # typer: lists need Enum, not Literal
SWEEP_LISTS = ("--optim", "--lr", "--hidden", "--seed")


@app.command(cls=_multi(*SWEEP_LISTS))
def sweep(
    optim: Annotated[list[OptimizerName], typer.Option(
        help="Optimizers to sweep; several values after one flag, e.g. --optim sgd adam.")] = [
        OptimizerName(o) for o in _S.optims],
    lr: Annotated[list[float], typer.Option(
        help="Learning rates, e.g. --lr 0.1 0.01 0.001 (or --lr 0.1,0.01 or --lr 0.1 --lr 0.01).")] = list(_S.lrs),
    hidden: Annotated[list[int], typer.Option(help="Hidden sizes, e.g. --hidden 64 128 256 512.")] = list(_S.hiddens),
    seed: Annotated[list[int], typer.Option(help="Seeds: every cell is repeated for each, e.g. --seed 0 1 2.")] = list(
        _S.seeds),
    run_dir: Annotated[Optional[Path], typer.Option(
        help="Sweep directory: sweep.json, results.csv/json, best.pt, cells/ \\[default: runs/sweep-<optims>].",
        show_default=False)] = None,
    epochs: Epochs = _T.epochs,
    batch_size: BatchSize = _T.batch_size,
    dropout: Dropout = _M.dropout,
    activation: Activation = _M.activation,
    momentum: Momentum = _T.momentum,
    precision: Precision = _T.precision,
    device: Device = "auto",
    patience: Patience = _T.patience,
    min_delta: MinDelta = _T.min_delta,
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
                       min_delta=min_delta)
    grid = SweepConfig(optims=tuple(o.value for o in optim), lrs=tuple(lr), hiddens=tuple(hidden), seeds=tuple(seed), base=base)
    where = sweeps.SweepDir(run_dir or Path("runs") / ("sweep-" + "-".join(grid.optims)))
    torch_device = engine.resolve_device(check_device(device))
    merged = where.open(grid, overwrite=overwrite)
    started = time.perf_counter()
    with Feedback(quiet=quiet) as feedback, _signals() as seen:
        dataset = _load_data(data_dir, no_download, torch_device, feedback)
        env = runs.environment(str(torch_device), dataset.source, dataset.sha256)
        where.reset(overwrite)
        where.write_grid(merged)
        plans = where.plan(grid)
        todo = [p for p in plans if not p.done]
        feedback.message(f"sweep {where.path}: {len(plans)} cells, {len(plans) - len(todo)} already finished, "
                         f"on {torch_device} ({precision})")
        feedback.task("cells", "cells", len(plans), len(plans) - len(todo))
        finished = {"n": len(plans) - len(todo)}
        group_epochs: dict[int, int] = {}

        def on_epoch(plan: Any, m: Any) -> None:
            key = plan.config.seed
            if group_epochs.get(key, -1) < m.epoch:
                group_epochs[key] = m.epoch
                feedback.task("epochs", f"seed {key}", epochs, m.epoch - 1)
            feedback.advance("epochs", m.epoch, epochs, f"{plan.name} {epoch_info(m.train_loss, m.test_loss)}",
                             f"{plan.name} epoch {m.epoch}/{epochs} train_loss={fmt_loss(m.train_loss)} "
                             f"test_loss={fmt_loss(m.test_loss)} seconds={m.seconds:.2f}")

        def on_cell(plan: Any, status: str) -> None:
            finished["n"] += 1
            feedback.advance("cells", finished["n"], len(plans), plan.name,
                             f"cell {finished['n']}/{len(plans)} {plan.name} {status}"
                             + (f": {plan.error}" if plan.error else ""))

        try:
            sweeps.run_in_process(plans, dataset, torch_device, env, on_epoch=on_epoch, on_cell=on_cell,
                                  fail_fast=fail_fast)
        except KeyboardInterrupt:
            sweeps.write_results(where, sweeps.results(where, merged, plans))
            raise _interrupted(seen, "sweep", "the same fmae sweep command") from None
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
    from fmae.ui import fmt_loss, print_table

    rows = doc["cells"]
    print_table(
        f"fmae sweep {doc['sweep_dir']}: {len(rows)} cells, best marked *",
        ["rank", "optim", "lr", "hidden", "seed", "status", "epochs", "train loss", "test loss", "best (epoch)",
         "seconds"],
        [[("*1" if r["rank"] == 1 else r["rank"] or "-"), r["optim"], f"{r['lr']:g}", r["hidden"], r["seed"],
          r["status"], r["epochs_run"], fmt_loss(r["final_train_loss"]), fmt_loss(r["final_test_loss"]),
          f"{fmt_loss(r['best_test_loss'])} ({r['best_epoch'] or '-'})", r["seconds"] or "-"] for r in rows],
        highlight_row=0 if doc["best"] else None,
    )
    per = doc["best_per_optim"]
    if per:
        print_table("best per optimizer", ["optim", "lr", "hidden", "test loss", "model"],
                    [[o, f"{r['lr']:g}", r["hidden"], fmt_loss(r["final_test_loss"]), r["model"]]
                     for o, r in per.items()])


def main() -> None:
    app(prog_name="fmae")
