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
from fmae.config import (
    ACTIVATIONS, DEVICES, NOISES, OPTIMIZERS, PRECISIONS, ModelConfig, NoiseConfig, SweepConfig, TrainConfig,
)
from fmae.errors import FmaeError, Interrupted

_M, _T, _N = ModelConfig(), TrainConfig(), NoiseConfig()


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
        strict = not ctx.resilient_parsing  # shell completion parses half-typed lines
        return super().parse_args(ctx, expand_multi_values(args, self.multi_value_options, strict=strict))


def expand_multi_values(args: list[str], options: tuple[str, ...], *, strict: bool = True) -> list[str]:
    out: list[str] = []
    current: str | None = None  # the list option whose values are being read
    got = 0

    def close() -> None:
        if current is not None and got == 0 and not strict:
            out.append(current)
        elif current is not None and got == 0:
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
    rich_markup_mode=None,  # plain click help: rendering help with rich costs ~0.25 s of imports
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
Lr = Annotated[Optional[float], typer.Option(help="Learning rate [default: 0.001 for adam, 0.1 for sgd].",
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
TrainNoise = Annotated[Optional[Literal[NOISES]], typer.Option(
    "--noise", help="Train a denoising autoencoder: this noise on the input, the clean image as target.",
    show_default=False)]
TrainNoiseSigma = Annotated[float, typer.Option(help="Noise scale for --noise.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON document with the results on stdout.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output on stderr.")]


def _training_noise(kind: Optional[str], sigma: float) -> Optional[NoiseConfig]:
    noise = NoiseConfig(kind or _N.kind, sigma)  # validates --noise-sigma even without --noise
    return noise if kind else None


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
    if config.noise is not None:
        args += ["--noise", config.noise.kind, "--noise-sigma", f"{config.noise.sigma:g}"]
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
             "[default: runs/<optim>-lr<lr>-h<hidden>-s<seed>].", show_default=False)] = None,
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
    noise: TrainNoise = None,
    noise_sigma: TrainNoiseSigma = _N.sigma,
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
        noise=_training_noise(noise, noise_sigma),
    ).resolved()
    run = runs.RunDir(run_dir or Path("runs") / runs.cell_name(config))
    torch_device = engine.resolve_device(check_device(device))
    started = time.perf_counter()
    with runs.DirectoryLock(run.path), Feedback(quiet=quiet) as feedback, _signals() as seen:
        state = run.check(config, overwrite=overwrite, resume=resume)
        runs.remove_stale_temporaries(run.path)
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
            run.save_last(config, cell.resume_state(data_rng))  # first: metrics.csv never runs ahead of it
            run.write_metrics(cell.history)
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
        help="Sweep directory: sweep.json, results.csv/json, best.pt, cells/ [default: runs/sweep-<optims>].",
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
    noise: TrainNoise = None,
    noise_sigma: TrainNoiseSigma = _N.sigma,
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
    with runs.DirectoryLock(where.path), Feedback(quiet=quiet) as feedback, _signals() as seen:
        merged = where.open(grid, overwrite=overwrite)
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


Ckpts = Annotated[list[Path], typer.Option(
    "--ckpt", help="Checkpoints (a run's model.pt or a sweep's best.pt); several after one flag.",
    show_default=False)]


def _load_models(paths: list[Path], device: Any) -> list[Any]:
    from fmae import runs
    from fmae.quality import Loaded

    seen = set()
    out = []
    for path in paths:
        if str(path) in seen:
            continue
        seen.add(str(path))
        model, ckpt = runs.load_model(path, device)
        out.append(Loaded(str(path), model, ckpt))
    return out


def _short_names(paths: list[str]) -> dict[str, str]:
    """Column labels: the file name, or its parent directory for model.pt/best.pt."""
    names = {}
    for p in paths:
        path = Path(p)
        base = path.parent.name if path.name in ("model.pt", "best.pt", "last.pt") and path.parent.name else path.name
        names[p] = base if base not in names.values() else p
    return names


@app.command("eval", cls=_multi("--ckpt"))
def eval_(
    ckpt: Ckpts,
    split: Annotated[Literal["test", "train"], typer.Option(help="Which split to evaluate on.")] = "test",
    baseline: Annotated[Optional[Literal["pca"]], typer.Option(
        help="Also report PCA with k = h components fitted on the training set: the best linear autoencoder.",
        show_default=False)] = None,
    device: Device = "auto",
    data_dir: DataDir = None,
    no_download: NoDownload = False,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Evaluate checkpoints: MSE, PSNR, SSIM and MSE per class, side by side.

    Example: fmae eval --ckpt runs/a/model.pt runs/s/model.pt --baseline pca
    """
    from fmae import engine, quality, runs
    from fmae.config import check_device
    from fmae.data import CLASS_NAMES
    from fmae.ui import Feedback, fmt_loss, print_json, print_table

    torch_device = engine.resolve_device(check_device(device))
    models = _load_models(ckpt, torch_device)
    with Feedback(quiet=quiet) as feedback:
        dataset = _load_data(data_dir, no_download, torch_device, feedback)
        images, labels = quality.split(dataset, split)
        rows = [quality.evaluate_checkpoint(m, images, labels) for m in models]
        if baseline == "pca":
            feedback.message("fitting PCA on the training set")
            pca = quality.pca_baseline(dataset, images, [r["hidden"] for r in rows])
            for r in rows:
                r["pca_mse"] = pca[r["hidden"]]
    doc = {"schema_version": runs.SCHEMA_VERSION, "split": split, "images": int(images.shape[0]), "checkpoints": rows}
    if json_out:
        print_json(doc)
        return
    names = _short_names([r["checkpoint"] for r in rows])
    table = [["MSE", *(fmt_loss(r["mse"]) for r in rows)],
             ["PSNR (dB)", *(f"{r['psnr']:.2f}" for r in rows)],
             ["SSIM", *(f"{r['ssim']:.4f}" for r in rows)]]
    if baseline == "pca":
        table.append(["PCA MSE, k = h", *(fmt_loss(r["pca_mse"]) for r in rows)])
    table += [[f"MSE {name}", *(fmt_loss(r["per_class_mse"][name]) for r in rows)] for name in CLASS_NAMES]
    print_table(f"fmae eval: {split} split, {doc['images']} images", ["setting", *names.values()], table)


@app.command(cls=_multi("--ckpt", "--sigma", "--index"))
def denoise(
    ckpt: Ckpts,
    sigma: Annotated[list[float], typer.Option(help="Noise scales; several give a curve, e.g. --sigma 0.25 0.5 1.")] = [
        _N.sigma],  # noqa: B006 - typer reads list defaults, it never mutates them
    noise: Annotated[Literal[NOISES], typer.Option(
        help="image-gaussian: the report's (each image's own mean and std); gaussian; salt-pepper; speckle.")
    ] = _N.kind,
    seed: Annotated[int, typer.Option(help="Seed of the noise and of the example images.")] = 0,
    limit: Annotated[Optional[int], typer.Option(help="Use the first N test images [default: all].",
                                                 show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option(help="Save the Figure-4 grid (png, svg or pdf).",
                                                show_default=False)] = None,
    examples: Annotated[int, typer.Option(help="Rows of the --out figure.")] = 4,
    index: Annotated[Optional[list[int]], typer.Option(help="Test images to show in --out instead of random ones.",
                                                       show_default=False)] = None,
    curve: Annotated[Optional[Path], typer.Option(help="Save PSNR against sigma (png, svg or pdf).",
                                                  show_default=False)] = None,
    input_: Annotated[Optional[Path], typer.Option(
        "--input", help="Denoise your own images: a .png (28x28, or several side by side) or .npy.",
        show_default=False)] = None,
    output: Annotated[Optional[Path], typer.Option(
        help="Where --input's result goes (.png or .npy) [default: <input>.denoised<ext>].",
        show_default=False)] = None,
    device: Device = "auto",
    data_dir: DataDir = None,
    no_download: NoDownload = False,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Add noise to test images and compare checkpoints as filters (PSNR, SSIM, MSE).

    Example: fmae denoise --ckpt best.pt --sigma 0.5
    """
    from fmae import engine, quality, runs
    from fmae.config import check_device
    from fmae.errors import ConfigError
    from fmae.ui import Feedback, fmt_loss, print_json, print_table

    noise_configs = [NoiseConfig(noise, s) for s in sigma]  # validates every sigma
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be >= 1, got {limit}")
    if examples < 1:
        raise ConfigError(f"examples must be >= 1, got {examples}")
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
    if index and out is None:
        raise ConfigError("--index picks the images of the --out figure", "add --out fig.png")
    if index and min(index) < 0:
        raise ConfigError(f"--index {min(index)} is negative")
    for path in (out, curve):
        if path is not None and plots_format(path) is None:
            raise ConfigError(f"{path}: unknown figure format", "use a .png, .svg or .pdf file name")
    torch_device = engine.resolve_device(check_device(device))
    if input_ is not None:
        _denoise_input(ckpt, input_, output, torch_device, json_out)
        return
    models = _load_models(ckpt, torch_device)
    with Feedback(quiet=quiet) as feedback:
        dataset = _load_data(data_dir, no_download, torch_device, feedback)
        images = dataset.test_images[:limit] if limit else dataset.test_images
        result = quality.denoise(models, images, noise, [c.sigma for c in noise_configs], seed)
        names = _short_names([m.path for m in models])
        figures = {}
        if out is not None:
            figures["grid"] = str(out)
            _save_grid(result, names, out, examples, index, seed, noise)
        if curve is not None:
            from fmae import plots

            figures["curve"] = str(curve)
            runs.atomic_write_bytes(curve, plots.figure_bytes(plots.psnr_curve(result.rows, names, noise=noise),
                                                              plots_format(curve)))
        for path in figures.values():
            feedback.message(f"wrote {path}")
    doc = {"schema_version": runs.SCHEMA_VERSION, "noise": noise, "seed": seed, "images": int(images.shape[0]),
           "results": result.rows, "figures": figures}
    if json_out:
        print_json(doc)
        return
    print_table(f"fmae denoise: {noise} noise, {doc['images']} test images, seed {seed}",
                ["model", "sigma", "noisy PSNR", "output PSNR", "PSNR gain", "noisy SSIM", "output SSIM",
                 "noisy MSE", "output MSE"],
                [[names[r["checkpoint"]], f"{r['sigma']:g}", f"{r['noisy']['psnr']:.2f}",
                  f"{r['output']['psnr']:.2f}", f"{r['gain']['psnr']:+.2f}", f"{r['noisy']['ssim']:.4f}",
                  f"{r['output']['ssim']:.4f}", fmt_loss(r["noisy"]["mse"]), fmt_loss(r["output"]["mse"])]
                 for r in result.rows])


def plots_format(path: Path) -> str | None:
    from fmae.plots import format_of

    return format_of(path)


def _save_grid(result: Any, names: dict[str, str], out: Path, examples: int, index: Optional[list[int]],
               seed: int, noise: str) -> None:
    import torch

    from fmae import plots, runs
    from fmae.errors import ConfigError

    n = result.clean.shape[0]
    if index:
        bad = [i for i in index if not 0 <= i < n]
        if bad:
            raise ConfigError(f"--index {bad[0]} is outside the {n} test images in use")
        rows = torch.tensor(index)
    else:
        rows = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: min(examples, n)]
    sigma = max(result.noisy)  # the strongest noise shows the difference best
    outputs = {names[path]: result.outputs[(i, sigma)][rows] for i, path in enumerate(names)}
    fig = plots.denoise_grid(result.clean[rows], result.noisy[sigma][rows], outputs, sigma=sigma, noise=noise)
    runs.atomic_write_bytes(out, plots.figure_bytes(fig, plots_format(out)))


def _denoise_input(ckpt: list[Path], input_: Path, output: Optional[Path], device: Any, json_out: bool) -> None:
    from fmae import data, engine, runs
    from fmae.errors import ConfigError
    from fmae.ui import print_json

    if len(ckpt) != 1:
        raise ConfigError("--input takes exactly one --ckpt")
    (loaded,) = _load_models(ckpt, device)
    images = data.read_user_images(input_)
    target = output or input_.with_name(f"{input_.stem}.denoised{input_.suffix.lower()}")
    result = engine.reconstruct(loaded.model, images.to(device), loaded.precision)
    runs.atomic_write_bytes(target, data.encode_user_images(result, target.suffix.lower()))
    doc = {"schema_version": runs.SCHEMA_VERSION, "checkpoint": loaded.path, "input": str(input_),
           "output": str(target), "images": int(images.shape[0])}
    if json_out:
        print_json(doc)
    else:
        typer.echo(f"denoised {doc['images']} image(s) from {input_} -> {target}")


PlotKind = Enum("PlotKind", {k: k for k in ("all", "curves", "recon", "heatmap", "compare")}, type=str)


@app.command(cls=_multi("--kind"))
def plot(
    sources: Annotated[list[Path], typer.Argument(help="Training run or sweep directories (read, never changed).",
                                                  show_default=False)],
    out: Annotated[Path, typer.Option(help="Directory for the figures (created if needed).")] = Path("figures"),
    kind: Annotated[list[PlotKind], typer.Option(
        help="curves, recon, heatmap, compare, or all that the sources allow.")] = [PlotKind("all")],  # noqa: B006
    fmt: Annotated[Literal["png", "svg", "pdf"], typer.Option("--format", help="Figure file format.")] = "png",
    train_loss: Annotated[bool, typer.Option("--train", help="curves: also draw train loss (dashed).")] = False,
    overlay: Annotated[bool, typer.Option("--overlay", help="curves: all sources on one axis.")] = False,
    examples: Annotated[int, typer.Option(help="recon: test images shown.")] = 3,
    seed: Annotated[int, typer.Option(help="recon: which test images (seeded choice).")] = 0,
    device: Device = "auto",
    data_dir: DataDir = None,
    no_download: NoDownload = False,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Draw learning curves, reconstructions, grid heatmaps and the SGD-Adam comparison.

    Example: fmae plot runs/sgd runs/adam --out figures
    """
    from fmae import plots, runs
    from fmae.errors import ConfigError
    from fmae.ui import Feedback, print_json

    if examples < 1:
        raise ConfigError(f"examples must be >= 1, got {examples}")
    loaded = {}
    for source in sources:
        source_kind, records = runs.read_source(source)
        loaded[source.name or str(source)] = (source_kind, records)
    records = [r for _, recs in loaded.values() for r in recs]
    wanted = {k.value for k in kind}
    allowed = {
        "curves": any(r.final_test_loss is not None for r in records),
        "recon": any(r.file_exists("model.pt") for r in records) if records else False,
        "heatmap": any(k == "sweep" for k, _ in loaded.values()),
        "compare": {"sgd", "adam"} <= {r.config.optim for r in records if r.final_test_loss is not None},
    }
    reasons = {"curves": "no finished run", "recon": "no model.pt", "heatmap": "needs a sweep directory",
               "compare": "needs finished SGD and Adam runs"}
    if "all" in wanted:
        chosen = [k for k in plots.PLOT_KINDS if allowed[k]]
    else:
        chosen = [k for k in plots.PLOT_KINDS if k in wanted]
        for k in chosen:
            if not allowed[k]:
                raise ConfigError(f"plot {k}: {reasons[k]} among the sources")
    if not chosen:
        raise ConfigError("nothing to draw from these sources", "train or sweep first")
    figures = {}
    with Feedback(quiet=quiet) as feedback:
        for k in chosen:
            if k == "curves":
                fig = plots.curves({name: recs for name, (_, recs) in loaded.items()}, train=train_loss,
                                   overlay=overlay)
            elif k == "heatmap":
                fig = plots.heatmap([r for sk, recs in loaded.values() if sk == "sweep" for r in recs])
            elif k == "compare":
                fig = plots.compare(records)
            else:
                fig = _recon_figure(loaded, examples, seed, device, data_dir, no_download, feedback)
            path = out / f"{k}.{fmt}"
            runs.atomic_write_bytes(path, plots.figure_bytes(fig, fmt))
            figures[k] = str(path)
            feedback.message(f"wrote {path}")
    if json_out:
        print_json({"schema_version": runs.SCHEMA_VERSION, "figures": figures})
    else:
        for path in figures.values():
            typer.echo(path)


def _recon_figure(loaded: dict[str, Any], examples: int, seed: int, device: str, data_dir: Optional[Path],
                  no_download: bool, feedback: Any) -> Any:
    import torch

    from fmae import engine, plots, runs
    from fmae.config import check_device

    torch_device = engine.resolve_device(check_device(device))
    dataset = _load_data(data_dir, no_download, torch_device, feedback)
    pick = torch.randperm(dataset.test_images.shape[0], generator=torch.Generator().manual_seed(seed))[:examples]
    images = dataset.test_images[pick.to(dataset.test_images.device)]
    rows = {}
    for name, (source_kind, records) in loaded.items():
        for optim in plots.optimizers(records):
            lr = plots.best_lr(records, optim)
            chosen = [r for r in records if r.config.optim == optim and r.config.learning_rate == lr
                      and r.file_exists("model.pt")]
            for r in sorted(chosen, key=lambda r: r.config.model.hidden):
                model, ckpt = runs.load_model(r.path / "model.pt", torch_device)
                label = f"{optim.upper()} h={r.config.model.hidden}"
                if len(loaded) > 1 and name.lower() != optim:
                    label += f"\n{name}"
                rows[label] = engine.reconstruct(model, images, ckpt["config"].precision)
    return plots.recon(engine.to_float(images), rows)


def main() -> None:
    app(prog_name="fmae")
