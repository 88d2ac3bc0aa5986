"""`fmae eval`, `fmae denoise` and `fmae plot`: checkpoints and run directories in, tables and figures out.

Each command is its signature, its calls into the library (fmae.evaluation, fmae.denoising,
fmae.figures) and its render.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer

from fmae.cli.options import Ckpts, DataDir, Json, N, NoDownload, PlotKind, Quiet, RunDevice
from fmae.config import FIGURE_FORMATS, NOISES, PLOT_KINDS, DenoiseConfig

D = DenoiseConfig()


def eval_(
    ckpt: Ckpts,
    split: Annotated[Literal["test", "train"], typer.Option(help="Which split to evaluate on.")] = "test",
    baseline: Annotated[Optional[Literal["pca"]], typer.Option(
        help="Also report PCA with k = h components fitted on the training set: the best linear autoencoder.",
        show_default=False)] = None,
    device: RunDevice = "auto",
    data_dir: DataDir = None,
    no_download: NoDownload = False,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Evaluate checkpoints: MSE, PSNR, SSIM and MSE per class, side by side.

    Example: fmae eval --ckpt runs/a/model.pt runs/s/model.pt --baseline pca
    """
    from fmae import data, engine, evaluation, runs
    from fmae.checkpoints import load_models
    from fmae.cli.ui import Feedback, emit

    torch_device = engine.resolve_device(device)
    models = load_models(ckpt, torch_device)
    with Feedback(quiet=quiet) as feedback:
        needed = ("test",) if split == "test" and baseline is None else ("train", "test")
        dataset = data.find_and_load(data_dir, download=not no_download, device=torch_device, splits=needed,
                                     on_found=feedback.message)
        images, labels = evaluation.split(dataset, split)
        rows = [evaluation.evaluate_checkpoint(m, images, labels) for m in models]
        if baseline == "pca":
            feedback.message("fitting PCA on the training set")
            pca = evaluation.pca_baseline(dataset, images, [r["hidden"] for r in rows])
            for r in rows:
                r["pca_mse"] = pca[r["hidden"]]
    emit({"schema_version": runs.SCHEMA_VERSION, "split": split, "images": int(images.shape[0]), "checkpoints": rows},
         json_out, _print_eval)


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
        metavar="FLOAT...", help="Noise scales; several give a curve, e.g. --sigma 0.25 0.5 1.")] = [
        N.sigma],  # noqa: B006 - typer reads list defaults, it never mutates them
    noise: Annotated[Literal[NOISES], typer.Option(
        help="image-gaussian: the report's (each image's own mean and std); gaussian; salt-pepper; speckle.")
    ] = N.kind,
    seed: Annotated[int, typer.Option(help="Seed of the noise and of the example images.")] = D.seed,
    limit: Annotated[Optional[int], typer.Option(help="Use the first N test images [default: all].",
                                                 show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option(help="Save the Figure-4 grid (png, svg or pdf).",
                                                show_default=False)] = None,
    examples: Annotated[int, typer.Option(help="Rows of the --out figure.")] = D.examples,
    index: Annotated[Optional[list[int]], typer.Option(
        metavar="INT...", help="Test images to show in --out instead of random ones.", show_default=False)] = None,
    curve: Annotated[Optional[Path], typer.Option(help="Save PSNR against sigma (png, svg or pdf).",
                                                  show_default=False)] = None,
    input_: Annotated[Optional[Path], typer.Option(
        "--input", help="Denoise your own images: a .png (28x28, or several side by side) or .npy.",
        show_default=False)] = None,
    output: Annotated[Optional[Path], typer.Option(
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
    from fmae import data, denoising, engine, runs
    from fmae.checkpoints import load_models
    from fmae.cli.ui import Feedback, emit
    from fmae.figures import choice as figure_choice

    config = DenoiseConfig(noise, tuple(sigma), seed, limit, examples, tuple(index or ()), out, curve,
                           ckpts=tuple(ckpt), input=input_, output=output, device=device, data_dir=data_dir,
                           download=not no_download)
    torch_device = engine.resolve_device(config.device)
    if config.input is not None:
        _denoise_input(config, torch_device, json_out)
        return
    models = load_models(list(config.ckpts), torch_device)
    with Feedback(quiet=quiet) as feedback:
        dataset = data.find_and_load(config.data_dir, download=config.download, device=torch_device,
                                     splits=("test",), on_found=feedback.message)
        images = dataset.test_images[:config.limit] if config.limit else dataset.test_images
        result = denoising.denoise(models, images, config.kind, config.sigmas, config.seed)
        labels = figure_choice.figure_labels(models, figure_choice.short_names([m.path for m in models]))
        figures = {}
        if config.grid is not None or config.curve is not None:
            from fmae.figures import plots  # matplotlib only when there is a figure to draw
        if config.grid is not None:
            figures["grid"] = str(config.grid)
            plots.save(figure_choice.denoise_grid(result, labels, config), config.grid)
        if config.curve is not None:
            figures["curve"] = str(config.curve)
            plots.save(plots.psnr_curve(result.rows, labels, noise=config.kind), config.curve)
        for path in figures.values():
            feedback.message(f"wrote {path}")
    emit({"schema_version": runs.SCHEMA_VERSION, "noise": config.kind, "seed": config.seed,
          "images": int(images.shape[0]), "results": result.rows, "figures": figures}, json_out, _print_denoise)


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


def _denoise_input(config: DenoiseConfig, device: Any, json_out: bool) -> None:
    from fmae import atomic, denoising, runs
    from fmae.checkpoints import load_models
    from fmae.cli.ui import emit, write_stdout
    from fmae.errors import ConfigError

    if len(config.ckpts) != 1:
        raise ConfigError("--input takes exactly one --ckpt")
    (loaded,) = load_models(list(config.ckpts), device)
    input_ = config.input
    target = config.output or denoising.default_output(input_)
    count, data = denoising.denoise_file(loaded, input_, target, device)
    atomic.write_bytes(target, data)
    emit({"schema_version": runs.SCHEMA_VERSION, "checkpoint": loaded.path, "input": str(input_),
          "output": str(target), "images": count}, json_out,
         lambda doc: write_stdout(f"denoised {doc['images']} image(s) from {input_} -> {target}\n"))


def plot(
    sources: Annotated[list[Path], typer.Argument(
        metavar="PATH...", help="Training run or sweep directories (read, never changed).", show_default=False)],
    out: Annotated[Path, typer.Option(help="Directory for the figures (created if needed).")] = Path("figures"),
    kind: Annotated[list[PlotKind], typer.Option(
        metavar=f"[{'|'.join(k.value for k in PlotKind)}]...",
        help=f"{', '.join(PLOT_KINDS)}, or all that the sources allow.")] = [PlotKind("all")],  # noqa: B006
    fmt: Annotated[Literal[FIGURE_FORMATS], typer.Option("--format", help="Figure file format.")] = "png",
    train_loss: Annotated[bool, typer.Option("--train", help="curves: also draw train loss (dashed).")] = False,
    overlay: Annotated[bool, typer.Option("--overlay", help="curves: all sources on one axis.")] = False,
    examples: Annotated[int, typer.Option(help="recon: test images shown.")] = 3,
    seed: Annotated[int, typer.Option(help="recon: which test images (seeded choice).")] = 0,
    device: RunDevice = "auto",
    data_dir: DataDir = None,
    no_download: NoDownload = False,
    json_out: Json = False,
    quiet: Quiet = False,
) -> None:
    """Draw learning curves, reconstructions, grid heatmaps and the SGD-Adam comparison.

    Example: fmae plot runs/sgd runs/adam --out runs/figures
    """
    from fmae import data, evaluation, runs
    from fmae.cli.ui import Feedback, emit, write_stdout
    from fmae.config import check_examples, check_seed
    from fmae.figures import choice as figure_choice
    from fmae.figures import plots

    check_examples(examples)
    check_seed(seed)
    loaded = {source.name or str(source): runs.read_source(source) for source in sources}
    choice = figure_choice.plot_kinds({k.value for k in kind}, loaded)
    figures = {}
    with Feedback(quiet=quiet) as feedback:
        for k, needs in choice.skipped.items():
            feedback.message(f"plot: {k} skipped: it {needs} among the sources")

        def reconstructions() -> tuple[Any, dict[str, Any]]:
            from fmae import engine

            torch_device = engine.resolve_device(device)
            dataset = data.find_and_load(data_dir, download=not no_download, device=torch_device,
                                         splits=("test",), on_found=feedback.message)
            pick = figure_choice.example_indices(dataset.test_images.shape[0], examples, seed)
            images = dataset.test_images[pick.to(dataset.test_images.device)]
            rows = evaluation.reconstructions(figure_choice.recon_models(loaded), images, torch_device)
            return evaluation.to_float(images), rows

        for k in choice.kinds:
            fig = figure_choice.draw(k, loaded, train=train_loss, overlay=overlay, reconstructions=reconstructions)
            path = out / f"{k}.{fmt}"
            plots.save(fig, path, fmt)
            figures[k] = str(path)
            feedback.message(f"wrote {path}")
    emit({"schema_version": runs.SCHEMA_VERSION, "figures": figures}, json_out,
         lambda doc: write_stdout("".join(f"{path}\n" for path in doc["figures"].values())))
