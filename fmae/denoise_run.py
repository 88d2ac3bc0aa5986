"""Denoising with checkpoints (`fmae denoise`): a DenoiseConfig in, the results document out.

On the test set: every checkpoint filters the same seeded noisy images at every sigma
(fmae.denoising), and the figures asked for are drawn (fmae.figures). With `input`: the user's own
images through the one checkpoint, the result written. It never prints: progress flows through one
Progress object.
"""

from __future__ import annotations

from typing import Any

from fmae.config import DenoiseConfig
from fmae.progress import Progress


def run_denoise(config: DenoiseConfig, progress: Progress) -> dict[str, Any]:
    """The metrics before and after each checkpoint at each sigma, and the figures written (`fmae
    denoise --json`); with `config.input`, what `_denoise_input` returns."""
    from fmae import data, denoising, runs
    from fmae.checkpoints import load_models
    from fmae.device import resolve_device
    from fmae.figures import choice as figure_choice

    torch_device = resolve_device(config.device)
    if config.input is not None:
        return _denoise_input(config, torch_device)
    models = load_models(list(config.ckpts), torch_device)
    with progress:
        dataset = data.find_and_load(config.data_dir, download=config.download, device=torch_device,
                                     splits=("test",), on_found=progress.message)
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
            progress.message(f"wrote {path}")
    return {"schema_version": runs.SCHEMA_VERSION, "noise": config.kind, "seed": config.seed,
            "images": int(images.shape[0]), "results": result.rows, "figures": figures}


def _denoise_input(config: DenoiseConfig, device: Any) -> dict[str, Any]:
    """`--input`: the user's images (.png or .npy) through the one checkpoint, written to `config.output`
    (or <input>.denoised<ext>); returns what was read and written."""
    from fmae import atomic, denoising, runs
    from fmae.checkpoints import load_models
    from fmae.errors import ConfigError

    if len(config.ckpts) != 1:
        raise ConfigError("--input takes exactly one --ckpt")
    (loaded,) = load_models(list(config.ckpts), device)
    target = config.output or denoising.default_output(config.input)
    count, data = denoising.denoise_file(loaded, config.input, target, device)
    atomic.write_bytes(target, data)
    return {"schema_version": runs.SCHEMA_VERSION, "checkpoint": loaded.path, "input": str(config.input),
            "output": str(target), "images": count}
