"""Figures as pure functions returning matplotlib Figures (object API, no pyplot state): learning
curves, grid heatmaps, the SGD-Adam comparison, reconstructions, and denoising's grid and curve.

Saving is separate (`figure_bytes`, `save`), with fixed metadata so the same inputs give the same
bytes. What each figure shows, chosen from the sources, is fmae.figures.choice's.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from fmae.config import figure_format, optim_label
from fmae.stats import within
from fmae.status import MARKED, Status


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
    # two lines: with one model the grid is three images wide, too narrow for one line of title
    fig.suptitle(f"Denoising: {noise} noise, sigma = {sigma:g}\n(titles: PSNR against the clean image)", fontsize=10)
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


def save(fig: Figure, path: Path, fmt: str | None = None) -> None:
    """Write a figure atomically, in `fmt` or else the format its file name asks for."""
    from fmae import atomic

    atomic.write_bytes(path, figure_bytes(fig, fmt or figure_format(path)))


# ------------------------------------------------------------------ run and sweep figures


def best_record(records: Sequence[Any], optim: str | None = None) -> Any | None:
    """The run with the lowest final test loss (never a diverged one), optionally for one optimizer."""
    pool = [r for r in records if r.final_test_loss is not None and (optim is None or r.config.optim == optim)]
    return min(pool, key=lambda r: r.final_test_loss) if pool else None


def _rows(records: Sequence[Any]) -> list[dict[str, Any]]:
    """Records as the result rows that `stats.groups` takes."""
    return [{"optim": r.config.optim, "lr": r.config.lr, "hidden": r.config.model.hidden,
             "seed": r.config.seed, "status": r.status if r.final_test_loss is not None else "lost",
             "final_test_loss": r.final_test_loss} for r in records]


def best_lr(records: Sequence[Any], optim: str) -> float | None:
    """The learning rate of the best cell, or, over several seeds, of the best group (lowest mean)."""
    from fmae import stats

    mine = [r for r in records if r.config.optim == optim]
    if stats.has_seeds(_rows(mine)):
        ranked = [g for g in stats.groups(_rows(mine)) if g["mean_final_test_loss"] is not None]
        return min(ranked, key=lambda g: g["mean_final_test_loss"])["lr"] if ranked else None
    best = best_record(records, optim)
    return best.config.lr if best else None


def has_seeds(records: Sequence[Any]) -> bool:
    from fmae import stats

    return stats.has_seeds(_rows(records))


def optimizers(records: Sequence[Any]) -> list[str]:
    """The optimizers present, in the report's order (SGD first)."""
    return sorted({r.config.optim for r in records}, key=lambda o: (o != "sgd", o))


def _integer_epochs(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def curves(sources: Mapping[str, Sequence[Any]], *, train: bool = False, overlay: bool = False) -> Figure:
    """Test loss against epoch, one line per hidden size at each optimizer's best learning rate."""
    panels = []  # (title, source name, records)
    for name, records in sources.items():
        for optim in optimizers(records):
            lr = best_lr(records, optim)
            chosen = [r for r in records if r.config.optim == optim and r.config.lr == lr] if lr else []
            if chosen:
                what = f"{optim_label(optim)}, lr = {lr:g}"
                panels.append((what if name.lower() == optim else f"{name}: {what}", name, chosen))
    if not panels:
        raise ValueError("no finished run to draw")
    n = 1 if overlay else len(panels)
    fig = Figure(figsize=(6.4 if n == 1 else 5.2 * n, 4.4), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False, sharey=True)[0]
    for i, (title, source, records) in enumerate(panels):
        ax = axes[0 if overlay else i]
        for hidden in sorted({r.config.model.hidden for r in records}):
            seeds = [r for r in records if r.config.model.hidden == hidden and r.final_test_loss is not None]
            label = f"h = {hidden}" + (f" ({source}, {optim_label(records[0].config.optim)})" if overlay else "")
            label += f" (mean ± std of {len(seeds)} seeds)" if len(seeds) > 1 else ""
            if not seeds:
                continue
            colour = None
            for key in ("test_loss", "train_loss") if train else ("test_loss",):
                test = key == "test_loss"
                epochs, mean, std = _band(seeds, key)
                line, = ax.plot(epochs, mean, "-" if test else "--", color=colour, label=label if test else None,
                                alpha=1.0 if test else 0.7)
                colour = line.get_color()
                if len(seeds) > 1:
                    ax.fill_between(epochs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                                    color=colour, alpha=0.2 if test else 0.1, lw=0)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        _integer_epochs(ax)
        ax.set_title(title if not overlay else "test loss at each optimizer's best learning rate", fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, title="dashed: train loss" if train else None, title_fontsize=8)
    axes[0].set_ylabel("test MSE per pixel (log scale)")
    fig.suptitle("Learning curves by hidden size", fontsize=11)
    return fig


def _band(records: Sequence[Any], key: str) -> tuple[list[int], list[float], list[float]]:
    """Per epoch: the mean of `key` over the records that reached it, and its sample std (0 for one)."""
    import statistics

    epochs = sorted({m["epoch"] for r in records for m in r.metrics})
    values = [[m[key] for r in records for m in r.metrics if m["epoch"] == e] for e in epochs]
    return epochs, [statistics.fmean(v) for v in values], [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]


def heatmap(records: Sequence[Any], *, title: str = "") -> Figure:
    """Final test loss over learning rate x hidden size, one panel per optimizer, each with its own
    colour scale and bar (a shared one leaves SGD's panel one colour beside Adam's far lower losses)."""
    import numpy as np
    from matplotlib.colors import LogNorm

    opts = optimizers(records)
    fig = Figure(figsize=(5.4 * len(opts) + 0.4, 3.8), layout="constrained")
    axes = fig.subplots(1, len(opts), squeeze=False)[0]
    for ax, optim in zip(axes, opts):
        mine = [r for r in records if r.config.optim == optim]
        lrs = sorted({r.config.lr for r in mine}, reverse=True)
        hs = sorted({r.config.model.hidden for r in mine})
        grid = np.full((len(lrs), len(hs)), np.nan)
        for i, lr in enumerate(lrs):
            for j, h in enumerate(hs):
                here = [r for r in mine if r.config.lr == lr and r.config.model.hidden == h]
                losses = [r.final_test_loss for r in here if r.final_test_loss is not None]
                lost = sorted({r.status for r in here if r.status in MARKED})
                if losses:  # the mean over seeds; cells lost for some seeds are named below it
                    grid[i, j] = float(np.mean(losses))
                if lost:
                    ax.text(j, i + (0.28 if losses else 0), "\n".join(lost), ha="center", va="center", fontsize=7,
                            color="red" if lost != [Status.PRUNED] else "0.35")
        finite = grid[~np.isnan(grid)]
        vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (1e-3, 1.0)
        image = ax.imshow(grid, cmap="viridis_r", norm=LogNorm(vmin=vmin, vmax=max(vmax, vmin * 1.0001)),
                          aspect="auto")
        for i in range(len(lrs)):
            for j in range(len(hs)):
                if not np.isnan(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.4f}", ha="center", va="center", fontsize=8,
                            color="white" if grid[i, j] > (vmin * vmax) ** 0.5 else "black")
        ax.set_xticks(range(len(hs)), [str(h) for h in hs])
        ax.set_yticks(range(len(lrs)), [f"{lr:g}" for lr in lrs])
        ax.set_xlabel("hidden units h")
        ax.set_ylabel("learning rate")
        ax.set_title(optim_label(optim), fontsize=10)
        fig.colorbar(image, ax=ax, label=f"{optim_label(optim)} final test MSE per pixel")
    several = has_seeds(records)
    fig.suptitle(title or "Final test loss over the grid" + (", mean over seeds" if several else ""), fontsize=11)
    return fig


def compare(records: Sequence[Any]) -> Figure:
    """Best SGD against best Adam on one axis, with the epoch from which Adam stays within 5% of its final loss."""
    fig = Figure(figsize=(6.8, 4.4), layout="constrained")
    ax = fig.subplots()
    drawn = {}
    for optim, colour in (("sgd", "tab:blue"), ("adam", "tab:orange")):
        r = best_record(records, optim)
        if r is None:
            continue
        test = [m["test_loss"] for m in r.metrics]
        drawn[optim] = test
        ax.plot([m["epoch"] for m in r.metrics], test, color=colour,
                label=f"{optim_label(optim)} lr = {r.config.lr:g}, h = {r.config.model.hidden}: "
                      f"final {test[-1]:.4f}")
    notes = []
    if "adam" in drawn:
        e, first = within(drawn["adam"]), within(drawn["adam"], stays=False)
        ax.axvline(e, color="tab:orange", ls=":", lw=1)
        notes.append(f"dotted: Adam within 5% of its final loss from epoch {e} on"
                     + (f" (first inside at epoch {first}, then out again)" if first != e else ""))
    if "adam" in drawn and "sgd" in drawn:
        sgd_final = drawn["sgd"][-1]
        ax.axhline(sgd_final, color="tab:blue", ls=":", lw=1)
        e = next((i for i, v in enumerate(drawn["adam"], 1) if v <= sgd_final), None)
        notes.append(f"Adam reaches SGD's final loss at epoch {e}" if e else "Adam never reaches SGD's final loss")
    if notes:
        ax.text(0.98, 0.97, "\n".join(notes), transform=ax.transAxes, ha="right", va="top", fontsize=8,
                bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8, "edgecolor": "0.8"})
    if not drawn:
        raise ValueError("no finished SGD or Adam run to compare")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    _integer_epochs(ax)
    ax.set_ylabel("test MSE per pixel (log scale)")
    ax.set_title("Best SGD against best Adam", fontsize=11)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="center right")
    return fig


def recon(originals: Any, rows: Mapping[str, Any]) -> Figure:
    """Originals on top, then one row of reconstructions per model (the report's Figures 2b, 3b)."""
    n = originals.shape[0]
    fig = Figure(figsize=(1.5 * n + 1.6, 1.5 * (len(rows) + 1) + 0.5), layout="constrained")
    axes = fig.subplots(len(rows) + 1, n, squeeze=False)
    for j in range(n):
        _image(axes[0][j], originals[j])
    axes[0][0].set_ylabel("original", fontsize=8)
    for i, (name, images) in enumerate(rows.items(), start=1):
        for j in range(n):
            _image(axes[i][j], images[j])
        axes[i][0].set_ylabel(name, fontsize=8)
    fig.suptitle("Test images and their reconstructions", fontsize=11)
    return fig

