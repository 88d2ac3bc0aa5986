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


DPI = 120
MAX_PIXELS = 3000  # a PNG's longest side at most: what a screen shows (with zoom)
MAX_TICKS = 30  # tick labels along one axis at most; past that, every k-th is labelled
MAX_ANNOTATED = (20, 10)  # a heatmap writes each cell's loss in it up to this many rates x hidden sizes
MAX_SETUPS = 24  # the seeds figure's set-ups (all panels), the best ones past that
MAX_LINES = 10  # the curves' lines per panel (hidden sizes), the best ones past that
MAX_PANELS = 12  # the curves' panels (source x optimizer), the best ones past that; 4 to a row


def dpi_for(width_in: float, height_in: float) -> float:
    """The resolution a figure of this size is rendered at: DPI, lowered for one whose longest side
    would pass MAX_PIXELS (every figure here bounds its own size; this is the last guard)."""
    return min(DPI, MAX_PIXELS / max(width_in, height_in, 1e-9))


def tick_positions(n: int, most: int = MAX_TICKS) -> list[int]:
    """Which of `n` positions along an axis get a label: all up to `most`, else every k-th from the first."""
    step = -(-n // most) if n > most else 1
    return list(range(0, n, step))


def best_first(keys: Sequence[Any], score: Mapping[Any, float | None], most: int) -> list[Any]:
    """The `most` keys of lowest score (None last), in their given order: what a figure shows of too many."""
    if len(keys) <= most:
        return list(keys)
    ranked = sorted(range(len(keys)), key=lambda i: (score.get(keys[i]) is None, score.get(keys[i]) or 0.0, i))
    return [keys[i] for i in sorted(ranked[:most])]


def figure_bytes(fig: Figure, fmt: str) -> bytes:
    """Render with fixed metadata so the same figure gives the same bytes."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    metadata = {"png": {"Software": "fmae"}, "svg": {"Date": None, "Creator": "fmae"},
                "pdf": {"CreationDate": None, "ModDate": None, "Creator": "fmae", "Producer": "fmae"}}[fmt]
    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "fmae"}):
        fig.savefig(buffer, format=fmt, dpi=dpi_for(*fig.get_size_inches()), metadata=metadata)
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


def result_rows(records: Sequence[Any]) -> list[dict[str, Any]]:
    """Records as the result rows that `stats.groups` takes."""
    return [{"optim": r.config.optim, "lr": r.config.lr, "hidden": r.config.model.hidden,
             "seed": r.config.seed, "status": r.status if r.final_test_loss is not None else "lost",
             "final_test_loss": r.final_test_loss} for r in records]


def best_lr(records: Sequence[Any], optim: str) -> float | None:
    """The learning rate of the best cell, or, over several seeds, of the best group (lowest mean)."""
    from fmae import stats

    mine = [r for r in records if r.config.optim == optim]
    if stats.has_seeds(result_rows(mine)):
        ranked = [g for g in stats.groups(result_rows(mine)) if g["mean_final_test_loss"] is not None]
        return min(ranked, key=lambda g: g["mean_final_test_loss"])["lr"] if ranked else None
    best = best_record(records, optim)
    return best.config.lr if best else None


def has_seeds(records: Sequence[Any]) -> bool:
    from fmae import stats

    return stats.has_seeds(result_rows(records))


def optimizers(records: Sequence[Any]) -> list[str]:
    """The optimizers present, in the report's order (SGD first)."""
    return sorted({r.config.optim for r in records}, key=lambda o: (o != "sgd", o))


def _integer_epochs(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def curves(sources: Mapping[str, Sequence[Any]], *, train: bool = False, overlay: bool = False,
           linear: bool = False) -> Figure:
    """Test loss against epoch, one line per hidden size at each optimizer's best learning rate.

    One panel per source and optimizer, four to a row; past MAX_PANELS panels the best ones (lowest
    final loss), past MAX_LINES hidden sizes in a panel the best ones, each said in the titles."""
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
    score = {i: min((r.final_test_loss for r in p[2] if r.final_test_loss is not None), default=None)
             for i, p in enumerate(panels)}
    total = len(panels)
    panels = [panels[i] for i in best_first(list(range(total)), score, MAX_PANELS)]
    n = 1 if overlay else len(panels)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig = Figure(figsize=(6.4 if n == 1 else 5.2 * cols, 4.4 * rows), layout="constrained")
    grid = fig.subplots(rows, cols, squeeze=False, sharey=True)
    axes = [ax for row in grid for ax in row]
    for ax in axes[n:]:
        ax.set_axis_off()
    for i, (title, source, records) in enumerate(panels):
        ax = axes[0 if overlay else i]
        sizes = sorted({r.config.model.hidden for r in records})
        finals = {h: [r.final_test_loss for r in records if r.config.model.hidden == h
                      and r.final_test_loss is not None] for h in sizes}
        shown = best_first(sizes, {h: sum(v) / len(v) if v else None for h, v in finals.items()}, MAX_LINES)
        if len(shown) < len(sizes):
            title += f" (the best {len(shown)} of {len(sizes)} hidden sizes)"
        for hidden in shown:
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
                                alpha=1.0 if test else 0.7, marker="o" if len(epochs) == 1 else None)  # 1 epoch: a dot
                colour = line.get_color()
                if len(seeds) > 1:
                    ax.fill_between(epochs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                                    color=colour, alpha=0.2 if test else 0.1, lw=0)
        ax.set_yscale("linear" if linear else "log")
        ax.set_xlabel("epoch")
        _integer_epochs(ax)
        ax.set_title(title if not overlay else "test loss at each optimizer's best learning rate", fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8, title="dashed: train loss" if train else None, title_fontsize=8)
    for row in grid:
        row[0].set_ylabel(loss_axis("test MSE per pixel", linear))
    fig.suptitle("Learning curves by hidden size" + (f": the best {len(panels)} of {total} panels (lowest final "
                                                    "loss)" if len(panels) < total else ""), fontsize=11)
    return fig


def _band(records: Sequence[Any], key: str) -> tuple[list[int], list[float], list[float]]:
    """Per epoch: the mean of `key` over the records that reached it, and its sample std (0 for one)."""
    import statistics

    epochs = sorted({m["epoch"] for r in records for m in r.metrics})
    values = [[m[key] for r in records for m in r.metrics if m["epoch"] == e] for e in epochs]
    return epochs, [statistics.fmean(v) for v in values], [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]


def heatmap(records: Sequence[Any], *, title: str = "") -> Figure:
    """Final test loss over learning rate x hidden size, one panel per optimizer, each with its own
    colour scale and bar (a shared one leaves SGD's panel one colour beside Adam's far lower losses).

    Up to MAX_ANNOTATED rates x hidden sizes each cell carries its loss, and the statuses that lost
    it seeds; a larger grid grows taller (to 10 inches), labels every k-th rate and size
    (tick_positions), and marks such cells with an x instead of words."""
    import numpy as np
    from matplotlib.colors import LogNorm

    opts = optimizers(records)
    rows = max(len({r.config.lr for r in records if r.config.optim == o}) for o in opts)
    fig = Figure(figsize=(5.4 * len(opts) + 0.4, min(10.0, max(3.8, 1.6 + 0.16 * rows))), layout="constrained")
    axes = fig.subplots(1, len(opts), squeeze=False)[0]
    marked_any = False
    for ax, optim in zip(axes, opts):
        mine = [r for r in records if r.config.optim == optim]
        lrs = sorted({r.config.lr for r in mine}, reverse=True)
        hs = sorted({r.config.model.hidden for r in mine})
        at = {(lr, h): i for i, lr in enumerate(lrs) for h in hs}
        annotate = len(lrs) <= MAX_ANNOTATED[0] and len(hs) <= MAX_ANNOTATED[1]
        grid = np.full((len(lrs), len(hs)), np.nan)
        cells: dict[tuple[int, int], list[Any]] = {}
        for r in mine:
            cells.setdefault((at[r.config.lr, r.config.model.hidden], hs.index(r.config.model.hidden)), []).append(r)
        marks: dict[str, list[tuple[int, int]]] = {}
        for (i, j), here in cells.items():
            losses = [r.final_test_loss for r in here if r.final_test_loss is not None]
            lost = sorted({r.status for r in here if r.status in MARKED})
            if losses:  # the mean over seeds; cells lost for some seeds are named below it
                grid[i, j] = float(np.mean(losses))
            if lost and annotate:
                ax.text(j, i + (0.28 if losses else 0), "\n".join(lost), ha="center", va="center", fontsize=7,
                        color="red" if lost != [Status.PRUNED] else "0.35")
            elif lost:
                marks.setdefault(str(Status.PRUNED) if lost == [Status.PRUNED] else "lost", []).append((j, i))
        finite = grid[~np.isnan(grid)]
        vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (1e-3, 1.0)
        image = ax.imshow(grid, cmap="viridis_r", norm=LogNorm(vmin=vmin, vmax=max(vmax, vmin * 1.0001)),
                          aspect="auto", interpolation="nearest")
        if annotate:
            for i in range(len(lrs)):
                for j in range(len(hs)):
                    if not np.isnan(grid[i, j]):
                        ax.text(j, i, f"{grid[i, j]:.4f}", ha="center", va="center", fontsize=8,
                                color="white" if grid[i, j] > (vmin * vmax) ** 0.5 else "black")
        for kind, where in marks.items():
            marked_any = True
            ax.scatter(*zip(*where), marker="x", s=12, linewidths=0.8, color="red" if kind == "lost" else "0.35")
        xs, ys = tick_positions(len(hs)), tick_positions(len(lrs))
        ax.set_xticks(xs, [str(hs[j]) for j in xs])
        ax.set_yticks(ys, [f"{lrs[i]:g}" for i in ys], fontsize=None if len(ys) == len(lrs) else 7)
        ax.set_xlabel("hidden units h" + ("" if len(xs) == len(hs) else f" ({len(hs)}; one in {xs[1]} labelled)"))
        ax.set_ylabel("learning rate" + ("" if len(ys) == len(lrs) else f" ({len(lrs)}; one in {ys[1]} labelled)"))
        ax.set_title(optim_label(optim), fontsize=10)
        fig.colorbar(image, ax=ax, label=f"{optim_label(optim)} final test MSE per pixel")
    several = has_seeds(records)
    note = "\nx: seeds lost (red: diverged or collapsed,\ngrey: pruned); blank: no usable seed" if marked_any else ""
    fig.suptitle((title or "Final test loss over the grid" + (", mean over seeds" if several else "")) + note,
                 fontsize=11 if not note else 10)
    return fig


def loss_axis(label: str, linear: bool) -> str:
    return label if linear else f"{label} (log scale)"


def compare(records: Sequence[Any], *, linear: bool = False) -> Figure:
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
    ax.set_yscale("linear" if linear else "log")
    ax.set_xlabel("epoch")
    _integer_epochs(ax)
    ax.set_ylabel(loss_axis("test MSE per pixel", linear))
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

