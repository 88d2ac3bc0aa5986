"""`fmae eval`, `fmae denoise` and `fmae plot`: checkpoints and run directories in, tables and figures out."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer

from fmae.commands import load_data
from fmae.config import NOISES, NoiseConfig, optim_label
from fmae.options import N, Ckpts, DataDir, Json, NoDownload, PlotKind, Quiet, RunDevice


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


def _figure_labels(models: list[Any], names: dict[str, str]) -> dict[str, str]:
    """What each model is (`SGD h=512`), with its learning rate, then its short name, where that is ambiguous."""
    def label(m: Any, lr: bool) -> str:
        config = m.checkpoint["config"]
        return f"{optim_label(config.optim)} h={config.model.hidden}" + (f" lr={config.learning_rate:g}" if lr else "")

    for lr in (False, True):
        labels = {m.path: label(m, lr) for m in models}
        if len(set(labels.values())) == len(labels):
            return labels
    return {m.path: f"{labels[m.path]} ({names[m.path]})" for m in models}


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
    from fmae import engine, quality, runs
    from fmae.config import check_device
    from fmae.data import CLASS_NAMES
    from fmae.ui import Feedback, fmt_loss, print_json, print_table

    torch_device = engine.resolve_device(check_device(device))
    models = _load_models(ckpt, torch_device)
    with Feedback(quiet=quiet) as feedback:
        needed = ("test",) if split == "test" and baseline is None else ("train", "test")
        dataset = load_data(data_dir, no_download, torch_device, feedback, splits=needed)
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


def denoise(
    ckpt: Ckpts,
    sigma: Annotated[list[float], typer.Option(
        metavar="FLOAT...", help="Noise scales; several give a curve, e.g. --sigma 0.25 0.5 1.")] = [
        N.sigma],  # noqa: B006 - typer reads list defaults, it never mutates them
    noise: Annotated[Literal[NOISES], typer.Option(
        help="image-gaussian: the report's (each image's own mean and std); gaussian; salt-pepper; speckle.")
    ] = N.kind,
    seed: Annotated[int, typer.Option(help="Seed of the noise and of the example images.")] = 0,
    limit: Annotated[Optional[int], typer.Option(help="Use the first N test images [default: all].",
                                                 show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option(help="Save the Figure-4 grid (png, svg or pdf).",
                                                show_default=False)] = None,
    examples: Annotated[int, typer.Option(help="Rows of the --out figure.")] = 4,
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
    from fmae import atomic, engine, quality, runs
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
        dataset = load_data(data_dir, no_download, torch_device, feedback, splits=("test",))
        images = dataset.test_images[:limit] if limit else dataset.test_images
        result = quality.denoise(models, images, noise, [c.sigma for c in noise_configs], seed)
        names = _short_names([m.path for m in models])
        labels = _figure_labels(models, names)
        figures = {}
        if out is not None:
            figures["grid"] = str(out)
            _save_grid(result, labels, out, examples, index, seed, noise)
        if curve is not None:
            from fmae import plots

            figures["curve"] = str(curve)
            atomic.write_bytes(curve, plots.figure_bytes(plots.psnr_curve(result.rows, labels, noise=noise),
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
                 for r in result.rows],
                droppable=("noisy MSE", "output MSE", "noisy SSIM", "output SSIM"))


def plots_format(path: Path) -> str | None:
    from fmae.plots import format_of

    return format_of(path)


def _save_grid(result: Any, names: dict[str, str], out: Path, examples: int, index: Optional[list[int]],
               seed: int, noise: str) -> None:
    import torch

    from fmae import atomic, plots
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
    atomic.write_bytes(out, plots.figure_bytes(fig, plots_format(out)))


def _denoise_input(ckpt: list[Path], input_: Path, output: Optional[Path], device: Any, json_out: bool) -> None:
    from fmae import atomic, engine, runs
    from fmae import images as user_images
    from fmae.errors import ConfigError
    from fmae.ui import print_json, write_stdout

    if len(ckpt) != 1:
        raise ConfigError("--input takes exactly one --ckpt")
    (loaded,) = _load_models(ckpt, device)
    images = user_images.read_user_images(input_)
    target = output or input_.with_name(f"{input_.stem}.denoised{input_.suffix.lower()}")
    result = engine.reconstruct(loaded.model, images.to(device), loaded.precision)
    atomic.write_bytes(target, user_images.encode_user_images(result, target.suffix.lower()))
    doc = {"schema_version": runs.SCHEMA_VERSION, "checkpoint": loaded.path, "input": str(input_),
           "output": str(target), "images": int(images.shape[0])}
    if json_out:
        print_json(doc)
    else:
        write_stdout(f"denoised {doc['images']} image(s) from {input_} -> {target}\n")




def plot(
    sources: Annotated[list[Path], typer.Argument(
        metavar="PATH...", help="Training run or sweep directories (read, never changed).", show_default=False)],
    out: Annotated[Path, typer.Option(help="Directory for the figures (created if needed).")] = Path("figures"),
    kind: Annotated[list[PlotKind], typer.Option(
        metavar="[all|curves|recon|heatmap|compare|seeds]...",
        help="curves, recon, heatmap, compare, seeds, or all that the sources allow.")] = [PlotKind("all")],  # noqa: B006
    fmt: Annotated[Literal["png", "svg", "pdf"], typer.Option("--format", help="Figure file format.")] = "png",
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
    from fmae import atomic, plots, runs
    from fmae.errors import ConfigError
    from fmae.ui import Feedback, print_json, write_stdout

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
        "seeds": plots.has_seeds(records),
    }
    reasons = {"curves": "no finished run", "recon": "no model.pt", "heatmap": "needs a sweep directory",
               "compare": "needs finished SGD and Adam runs", "seeds": "needs a sweep with several seeds"}
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
            elif k == "seeds":
                from fmae.plots_seeds import seeds as seeds_figure

                fig = seeds_figure(records)
            else:
                fig = _recon_figure(loaded, examples, seed, device, data_dir, no_download, feedback)
            path = out / f"{k}.{fmt}"
            atomic.write_bytes(path, plots.figure_bytes(fig, fmt))
            figures[k] = str(path)
            feedback.message(f"wrote {path}")
    if json_out:
        print_json({"schema_version": runs.SCHEMA_VERSION, "figures": figures})
    else:
        write_stdout("".join(f"{path}\n" for path in figures.values()))


def _recon_figure(loaded: dict[str, Any], examples: int, seed: int, device: str, data_dir: Optional[Path],
                  no_download: bool, feedback: Any) -> Any:
    import torch

    from fmae import engine, plots, runs
    from fmae.config import check_device

    torch_device = engine.resolve_device(check_device(device))
    dataset = load_data(data_dir, no_download, torch_device, feedback, splits=("test",))
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
                label = f"{optim_label(optim)} h={r.config.model.hidden}"
                if len(loaded) > 1 and name.lower() != optim:
                    label += f"\n{name}"
                rows[label] = engine.reconstruct(model, images, ckpt["config"].precision)
    return plots.recon(engine.to_float(images), rows)

