"""Evaluating checkpoints (`fmae eval`): settings in, the results document out.

It loads the checkpoints and the split they are evaluated on, evaluates each (fmae.evaluation) and,
with a baseline, fits PCA at each checkpoint's width. It never prints: progress flows through one
Progress object.
"""

from __future__ import annotations

from typing import Any

from fmae.progress import Progress
from fmae.settings import EvalSettings


def run_eval(settings: EvalSettings, progress: Progress) -> dict[str, Any]:
    """MSE, PSNR, SSIM and MSE per class of every checkpoint, side by side (`fmae eval --json`)."""
    from fmae import data, evaluation, runs
    from fmae.checkpoints import load_models
    from fmae.device import resolve_device

    torch_device = resolve_device(settings.device)
    models = load_models(list(settings.ckpts), torch_device)
    with progress:
        needed = ("test",) if settings.split == "test" and settings.baseline is None else ("train", "test")
        dataset = data.find_and_load(settings.data_dir, download=settings.download, device=torch_device,
                                     splits=needed, on_found=progress.message)
        images, labels = evaluation.split(dataset, settings.split)
        rows = [evaluation.evaluate_checkpoint(m, images, labels) for m in models]
        if settings.baseline == "pca":
            progress.message("fitting PCA on the training set")
            pca = evaluation.pca_baseline(dataset, images, [r["hidden"] for r in rows])
            for r in rows:
                r["pca_mse"] = pca[r["hidden"]]
    return {"schema_version": runs.SCHEMA_VERSION, "split": settings.split, "images": int(images.shape[0]),
            "checkpoints": rows}
