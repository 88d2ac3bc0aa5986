"""`fmae eval`, `fmae denoise` and `fmae plot`: checkpoints and run directories in, tables and figures out.

Each command is its signature -> settings -> one library call (fmae.eval_run.run_eval,
fmae.denoise_run.run_denoise, fmae.figures.run.run_plot) with one progress object -> render.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from fmae.cli.options import NOISE_DEFAULTS, Ckpts, DataDir, Json, NoDownload, PlotKind, Quiet, RunDevice
from fmae.config import (
    BASELINES,
    FIGURE_FORMATS,
    NOISES,
    PLOT_KINDS,
    SPLITS,
    DenoiseConfig,
)
from fmae.settings import EvalSettings, PlotSettings

# the defaults, written once in fmae.config/settings
DENOISE_DEFAULTS, EVAL_DEFAULTS, PLOT_DEFAULTS = DenoiseConfig(), EvalSettings(), PlotSettings()


def eval_(
    ckpt: Ckpts,
    split: Annotated[Literal[SPLITS], typer.Option(help="Which split to evaluate on.")] = EVAL_DEFAULTS.split,
    baseline: Annotated[Literal[BASELINES] | None, typer.Option(
        help="Also report PCA with k = h components fitted on the training set: the best linear autoencoder.",
        show_default=False)] = EVAL_DEFAULTS.baseline,
    device: RunDevice = "auto",
    data_dir: DataDir = None,
    no_download: NoDownload = False,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Evaluate checkpoints: MSE, PSNR, SSIM and MSE per class, side by side.

    Example: fmae eval --ckpt runs/a/model.pt runs/s/model.pt --baseline pca
    """
    from fmae.cli.ui import Feedback, emit
    from fmae.eval_run import run_eval

    settings = EvalSettings(tuple(ckpt), split, baseline, device=device, data_dir=data_dir, download=not no_download)
    emit(run_eval(settings, Feedback(quiet=quiet)), json_out, _print_eval)


def _print_eval(doc: dict[str, Any]) -> None:
    from fmae.cli.ui import fmt_loss, print_table
    from fmae.data import CLASS_NAMES
    from fmae.figures.choice import short_names

    rows = doc["checkpoints"]
    names = short_names([r["checkpoint"] for r in rows])
    table = [["MSE", *(fmt_loss(r["mse"]) for r in rows)],
             ["PSNR (dB)", *(f"{r['psnr']:.2f}" for r in rows)],
             ["SSIM", *(f"{r['ssim']:.4f}" for r in rows)]]
    if rows and "pca_mse" in rows[0]:
        table.append(["PCA MSE, k = h", *(fmt_loss(r["pca_mse"]) for r in rows)])
    table += [[f"MSE {name}", *(fmt_loss(r["per_class_mse"][name]) for r in rows)] for name in CLASS_NAMES]
    print_table(f"fmae eval: {doc['split']} split, {doc['images']} images", ["setting", *names.values()], table)


def denoise(
    ckpt: Ckpts,
    sigma: Annotated[list[float], typer.Option(
        metavar="FLOAT...",
        help="Noise scales; several give a curve, e.g. --sigma 0.25 0.5 1.")] = [NOISE_DEFAULTS.sigma],  # noqa: B006 - typer reads it
    noise: Annotated[Literal[NOISES], typer.Option(
        help="image-gaussian: the report's (each image's own mean and std); gaussian; salt-pepper; speckle.")
    ] = NOISE_DEFAULTS.kind,
    seed: Annotated[int, typer.Option(help="Seed of the noise and of the example images.")] = DENOISE_DEFAULTS.seed,
    limit: Annotated[int | None, typer.Option(help="Use the first N test images [default: all].",
                                                 show_default=False)] = None,
    out: Annotated[Path | None, typer.Option(help="Save the Figure-4 grid (png, svg or pdf).",
                                                show_default=False)] = None,
    examples: Annotated[int, typer.Option(help="Rows of the --out figure.")] = DENOISE_DEFAULTS.examples,
    index: Annotated[list[int] | None, typer.Option(
        metavar="INT...", help="Test images to show in --out instead of random ones.", show_default=False)] = None,
    curve: Annotated[Path | None, typer.Option(help="Save PSNR against sigma (png, svg or pdf).",
                                                  show_default=False)] = None,
    input_: Annotated[Path | None, typer.Option(
        "--input", help="Denoise your own images: a .png (28x28, or several side by side) or .npy.",
        show_default=False)] = None,
    output: Annotated[Path | None, typer.Option(
        help="Where --input's result goes (.png or .npy) [default: <input>.denoised<ext>].",
        show_default=False)] = None,
    device: RunDevice = "auto",
    data_dir: DataDir = None,
    no_download: NoDownload = False,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Add noise to test images and compare checkpoints as filters (PSNR, SSIM, MSE).

    Example: fmae denoise --ckpt runs/sgd/best.pt --sigma 0.5
    """
    from fmae.cli.ui import Feedback, emit
    from fmae.denoise_run import run_denoise

    config = DenoiseConfig(noise, tuple(sigma), seed, limit, examples, tuple(index or ()), out, curve,
                           ckpts=tuple(ckpt), input=input_, output=output, device=device, data_dir=data_dir,
                           download=not no_download)
    emit(run_denoise(config, Feedback(quiet=quiet)), json_out,
         _print_denoised_input if config.input is not None else _print_denoise)


def _print_denoise(doc: dict[str, Any]) -> None:
    from fmae.cli.ui import fmt_loss, print_table
    from fmae.figures.choice import short_names

    names = short_names(list(dict.fromkeys(r["checkpoint"] for r in doc["results"])))
    print_table(f"fmae denoise: {doc['noise']} noise, {doc['images']} test images, seed {doc['seed']}",
                ["model", "sigma", "noisy PSNR", "output PSNR", "PSNR gain", "noisy SSIM", "output SSIM",
                 "noisy MSE", "output MSE"],
                [[names[r["checkpoint"]], f"{r['sigma']:g}", f"{r['noisy']['psnr']:.2f}",
                  f"{r['output']['psnr']:.2f}", f"{r['gain']['psnr']:+.2f}", f"{r['noisy']['ssim']:.4f}",
                  f"{r['output']['ssim']:.4f}", fmt_loss(r["noisy"]["mse"]), fmt_loss(r["output"]["mse"])]
                 for r in doc["results"]],
                droppable=("noisy MSE", "output MSE", "noisy SSIM", "output SSIM"))


def _print_denoised_input(doc: dict[str, Any]) -> None:
    from fmae.cli.ui import write_stdout

    write_stdout(f"denoised {doc['images']} image(s) from {doc['input']} -> {doc['output']}\n")


def plot(
    sources: Annotated[list[Path], typer.Argument(
        metavar="PATH...", help="Training run or sweep directories (read, never changed).", show_default=False)],
    out: Annotated[Path, typer.Option(help="Directory for the figures (created if needed).")] = PLOT_DEFAULTS.out,
    kind: Annotated[list[PlotKind], typer.Option(
        metavar=f"[{'|'.join(k.value for k in PlotKind)}]...",
        help=f"{', '.join(PLOT_KINDS)}, or all that the sources allow.")] = [PlotKind("all")],  # noqa: B006
    fmt: Annotated[Literal[FIGURE_FORMATS], typer.Option("--format", help="Figure file format.")] = PLOT_DEFAULTS.fmt,
    train_loss: Annotated[bool, typer.Option("--train", help="curves: also draw train loss (dashed).")] = False,
    overlay: Annotated[bool, typer.Option("--overlay", help="curves: all sources on one axis.")] = False,
    linear: Annotated[bool, typer.Option("--linear", help="curves, compare: a linear loss axis [default: log].")
                      ] = False,
    examples: Annotated[int, typer.Option(help="recon: test images shown.")] = PLOT_DEFAULTS.examples,
    seed: Annotated[int, typer.Option(help="recon: which test images (seeded choice).")] = PLOT_DEFAULTS.seed,
    device: RunDevice = "auto",
    data_dir: DataDir = None,
    no_download: NoDownload = False,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Draw learning curves, reconstructions, grid heatmaps and the SGD-Adam comparison.

    Example: fmae plot runs/sgd runs/adam --out runs/figures
    """
    from fmae.cli.ui import Feedback, emit
    from fmae.figures.run import run_plot

    settings = PlotSettings(tuple(sources), out, tuple(k.value for k in kind), fmt, train_loss, overlay, examples,
                            seed, device=device, data_dir=data_dir, download=not no_download, linear=linear)
    emit(run_plot(settings, Feedback(quiet=quiet)), json_out, _print_plot)


def _print_plot(doc: dict[str, Any]) -> None:
    from fmae.cli.ui import write_stdout

    write_stdout("".join(f"{path}\n" for path in doc["figures"].values()))
