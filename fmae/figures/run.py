"""Drawing figures from run and sweep directories (`fmae plot`): settings in, the figures written.

It reads the sources (never changing them), chooses what they allow (fmae.figures.choice), draws
each figure (fmae.figures.plots) and saves it in the output directory; the recon figure loads the
test images and the models it shows only when it is drawn. It never prints: progress flows through
one Progress object.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from fmae.progress import Progress
from fmae.settings import PlotSettings


def run_plot(settings: PlotSettings, progress: Progress) -> dict[str, Any]:
    """Draw and save every figure chosen; returns their paths by kind (`fmae plot --json`)."""
    from fmae import runs
    from fmae.figures import choice as figure_choice
    from fmae.figures import plots

    loaded = {source.name or str(source): runs.read_source(source) for source in settings.sources}
    choice = figure_choice.plot_kinds(set(settings.kinds), loaded)
    figures = {}
    with progress:
        for k, needs in choice.skipped.items():
            progress.message(f"plot: {k} skipped: it {needs} among the sources")
        for k in choice.kinds:
            fig = figure_choice.draw(k, loaded, train=settings.train, overlay=settings.overlay, linear=settings.linear,
                                     reconstructions=partial(_reconstructions, settings, loaded, progress))
            path = settings.out / f"{k}.{settings.fmt}"
            plots.save(fig, path, settings.fmt)
            figures[k] = str(path)
            progress.message(f"wrote {path}")
    return {"schema_version": runs.SCHEMA_VERSION, "figures": figures}


def _reconstructions(settings: PlotSettings, loaded: Mapping[str, Any],
                     progress: Progress) -> tuple[Any, dict[str, Any]]:
    """The recon figure's test images (a seeded choice) and each chosen model's reconstruction of them."""
    from fmae import data, evaluation
    from fmae.device import resolve_device
    from fmae.figures import choice as figure_choice

    torch_device = resolve_device(settings.device)
    dataset = data.find_and_load(settings.data_dir, download=settings.download, device=torch_device,
                                 splits=("test",), on_found=progress.message)
    pick = figure_choice.example_indices(dataset.test_images.shape[0], settings.examples, settings.seed)
    images = dataset.test_images[pick.to(dataset.test_images.device)]
    rows = evaluation.reconstructions(figure_choice.recon_models(loaded), images, torch_device)
    return evaluation.to_float(images), rows
