"""The CLI's option types, shared by the commands; their defaults come from the configs."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Literal

import typer

from fmae.config import (
    ACTIVATIONS,
    DEFAULT_LR,
    DEVICES,
    ENGINES,
    NOISES,
    OPTIMIZERS,
    PLOT_KINDS,
    PRECISIONS,
    ModelConfig,
    NoiseConfig,
    SweepConfig,
    TrainConfig,
    check_directory,
)
from fmae.execution import EXECUTORS, ExecutorConfig, PruneConfig
from fmae.status import FAIL_ON

MODEL_DEFAULTS, TRAIN_DEFAULTS, NOISE_DEFAULTS = ModelConfig(), TrainConfig(), NoiseConfig()
SWEEP_DEFAULTS, EXECUTOR_DEFAULTS = SweepConfig(), ExecutorConfig()

Optim = Annotated[Literal[OPTIMIZERS], typer.Option(help="Optimizer.")]
Lr = Annotated[float | None, typer.Option(
    help=f"Learning rate [default: {', '.join(f'{lr:g} for {o}' for o, lr in DEFAULT_LR.items())}].",
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
Engine = Annotated[Literal[ENGINES], typer.Option(
    help="The engine: stacked (cells of one shape train as one model: hidden, batch size, dropout, activation, "
         "precision and optimizer), cells (one model after another, bit for bit the CPU's numbers); "
         "auto: stacked on cuda and mps, cells on the CPU.")]
RunDevice = Annotated[Literal[DEVICES], typer.Option("--device", help="Where to run the models; auto: cuda, mps, cpu.")]
Patience = Annotated[int, typer.Option(help="Early stopping window in epochs; 0 turns early stopping off.")]
MinDelta = Annotated[float, typer.Option(
    help="Early stopping: stop when the test loss fell by less than this fraction over --patience epochs.")]
DataDir = Annotated[Path | None, typer.Option(help="Directory holding the Fashion-MNIST IDX files (.gz or raw).",
                                                 show_default=False)]
NoDownload = Annotated[bool, typer.Option("--no-download", help="Never download the dataset.")]
TrainNoise = Annotated[Literal[NOISES] | None, typer.Option(
    "--noise", help="Train a denoising autoencoder: this noise on the input, the clean image as target.",
    show_default=False)]
TrainNoiseSigma = Annotated[float, typer.Option(help="Noise scale for --noise.")]
Prune = Annotated[Literal["halving"] | None, typer.Option(
    help="Successive halving: every cell trains to the first rung, the best 1/eta go on to the next "
         "(eta times more epochs), up to --epochs; the rest stop as `pruned` (resumable).", show_default=False)]
Eta = Annotated[int | None, typer.Option(
    help=f"--prune halving: keep the best 1/eta at each rung [default: {PruneConfig.eta}].", show_default=False)]
MinEpochs = Annotated[int | None, typer.Option(
    help="--prune halving: epochs of the first rung, at least [default: epochs // eta^2, at least 1].",
    show_default=False)]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON document with the results on stdout.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output on stderr.")]
Threads = Annotated[int | None, typer.Option(
    help="Torch intra-op threads of each model in training [default: all cores; in a sweep, cores // N with "
         "--jobs N and --cpus-per-cell with Ray].", show_default=False)]
Reproducible = Annotated[bool, typer.Option(
    "--reproducible", help="Portable numerics: the same losses and weights on any x86-64 CPU with AVX2 "
    "(MKL and torch held to AVX2 kernels, 1 thread per model, on the CPU); slower matrix products. "
    "See docs/reproducibility.md.")]
Jobs = Annotated[int, typer.Option(help="Cells trained at once, each in a worker process on this machine.")]
Executor = Annotated[Literal[EXECUTORS], typer.Option(
    help="local: this machine (see --jobs); ray: Ray tasks (pip install 'fmae-cli[ray]').")]
Address = Annotated[str | None, typer.Option(
    help="--executor ray: auto or ray://host:port joins that cluster [default: a private local Ray instance].",
    show_default=False)]
CpusPerCell = Annotated[float | None, typer.Option(help="--executor ray: CPUs each cell's task asks for [default: 1].",
                                                      show_default=False)]
GpusPerCell = Annotated[float | None, typer.Option(
    help="--executor ray: GPUs each task asks for, a task being a group of cells trained together (fractions "
         "share one GPU); > 0 trains on cuda [default: 0].", show_default=False)]
CheckpointEvery = Annotated[float, typer.Option(
    metavar="SECONDS", help="Write each run's last.pt at most this often (0: after every epoch); metrics.csv gets "
                            "every epoch. A kill -9 loses at most the epochs of the last SECONDS; Ctrl-C and "
                            "SIGTERM lose none.")]
MaxRetries = Annotated[int, typer.Option(
    help="Times a cell's task is run again after its worker or node died, from its last saved epoch.")]

OptimizerName = Enum("OptimizerName", {o: o for o in OPTIMIZERS}, type=str)  # typer: lists need Enum, not Literal
SWEEP_LISTS = ("--optim", "--lr", "--hidden", "--seed", "--fail-on")

FailOnStatus = Enum("FailOnStatus", {s.value: s.value for s in FAIL_ON}, type=str)
FailOn = Annotated[list[FailOnStatus] | None, typer.Option(
    "--fail-on", metavar=f"[{'|'.join(FAIL_ON)}]...",
    help="Exit 3 (after printing the results) when a run ends in one of these statuses, "
         "e.g. --fail-on diverged,collapsed.", show_default=False)]

Ckpts = Annotated[list[Path], typer.Option(
    "--ckpt", metavar="PATH...",
    help="Checkpoints: a .pt file, a run directory (its model.pt) or a sweep directory (its best.pt); several "
         "after one flag.",
    show_default=False)]


PlotKind = Enum("PlotKind", {k: k for k in ("all", *PLOT_KINDS)}, type=str)



def directory(flag: str, example: str) -> Callable[[str], Path]:
    """The parser of a directory option (config.check_directory: an empty one is a usage error)."""
    return lambda value: check_directory(flag, value, example)


TensorBoard = Annotated[Path | None, typer.Option(
    "--tensorboard", metavar="DIR", parser=directory("--tensorboard", "tb"),
    help="Log each epoch to TensorBoard event files under DIR, and the hyper-parameters to its HParams view "
    "(pip install 'fmae-cli[tensorboard]').", show_default=False)]
Mlflow = Annotated[str | None, typer.Option(
    "--mlflow", metavar="URI", help="Log each epoch to MLflow at this tracking URI: sqlite:///mlflow.db, file:DIR "
    "or http://host:port; a sweep is a parent run with a child run per cell (pip install 'fmae-cli[mlflow]').",
    show_default=False)]
MlflowArtifacts = Annotated[bool, typer.Option(
    "--mlflow-artifacts", help="Upload model.pt (and a sweep's best.pt) to MLflow as artifacts.")]

ConfigFile = Annotated[Path | None, typer.Option(
    "--config", metavar="FILE", help="Read the settings from this TOML file (keys: the long option names, lists "
    "as arrays); flags on the command line override it.", show_default=False)]
PrintConfig = Annotated[bool, typer.Option(
    "--print-config", help="Print the resolved settings as TOML (runnable with --config) and exit.")]
DryRun = Annotated[bool, typer.Option(
    "--dry-run", help="Show the cells (new, finished, to resume, pruned), where and how they would train and an "
    "estimate of the time (calibrated on this machine); train nothing, write nothing in the run directory.")]
