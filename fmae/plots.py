"""Figures as pure functions returning matplotlib Figures (object API, no pyplot state).

Saving is separate (`figure_bytes`), with fixed metadata so the same inputs give the same bytes.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

FORMATS = ("png", "svg", "pdf")


def _image(ax: Any, flat: Any, title: str | None = None) -> None:
    ax.imshow(flat.reshape(28, 28).cpu().numpy(), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def denoise_grid(clean: Any, noisy: Any, outputs: Mapping[str, Any], *, sigma: float, noise: str) -> Figure:
    """The report's Figure 4: one row per image; clean | noisy | one column per model, PSNR in titles."""
    from fmae.metrics import psnr_per_image

    n, cols = clean.shape[0], 2 + len(outputs)
    fig = Figure(figsize=(1.6 * cols + 0.4, 1.7 * n + 0.7), layout="constrained")
    axes = fig.subplots(n, cols, squeeze=False)
    noisy_psnr = psnr_per_image(noisy, clean)
    out_psnr = {name: psnr_per_image(out, clean) for name, out in outputs.items()}
    for r in range(n):
        _image(axes[r][0], clean[r], "clean" if r == 0 else None)
        _image(axes[r][1], noisy[r], f"noisy\n{noisy_psnr[r]:.1f} dB" if r == 0 else f"{noisy_psnr[r]:.1f} dB")
        for c, (name, out) in enumerate(outputs.items(), start=2):
            label = f"{name}\n{out_psnr[name][r]:.1f} dB" if r == 0 else f"{out_psnr[name][r]:.1f} dB"
            _image(axes[r][c], out[r], label)
    fig.suptitle(f"Denoising: {noise} noise, sigma = {sigma:g} (titles: PSNR against the clean image)", fontsize=10)
    return fig


def psnr_curve(rows: Sequence[Mapping[str, Any]], names: Mapping[str, str], *, noise: str) -> Figure:
    """Mean PSNR of each model's output against sigma, with the noisy input as reference."""
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    sigmas = sorted({r["sigma"] for r in rows})
    first = rows[0]["checkpoint"]
    noisy = [next(r["noisy"]["psnr"] for r in rows if r["sigma"] == s and r["checkpoint"] == first) for s in sigmas]
    ax.plot(sigmas, noisy, "k--", marker="o", label="noisy input")
    for path, name in names.items():
        ax.plot(sigmas, [next(r["output"]["psnr"] for r in rows if r["sigma"] == s and r["checkpoint"] == path)
                         for s in sigmas], marker="o", label=name)
    ax.set_xlabel("noise scale sigma")
    ax.set_ylabel("mean PSNR against the clean image (dB)")
    ax.set_title(f"Denoising {noise} noise: PSNR against sigma")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def figure_bytes(fig: Figure, fmt: str) -> bytes:
    """Render with fixed metadata so the same figure gives the same bytes."""
    import matplotlib

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    metadata = {"png": {"Software": "fmae"}, "svg": {"Date": None, "Creator": "fmae"},
                "pdf": {"CreationDate": None, "ModDate": None, "Creator": "fmae", "Producer": "fmae"}}[fmt]
    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "fmae"}):
        fig.savefig(buffer, format=fmt, dpi=120, metadata=metadata)
    return buffer.getvalue()


def format_of(path: str | Path) -> str | None:
    suffix = Path(path).suffix.lower().lstrip(".")
    return suffix if suffix in FORMATS else None
