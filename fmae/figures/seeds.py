"""The figure of the spread over seeds: each seed's final test loss per grid point, with mean ± std."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure

from fmae import stats
from fmae.config import optim_label
from fmae.figures.plots import MAX_SETUPS, best_first, optimizers, result_rows
from fmae.status import MARKED, RANKABLE


def seeds(records: Sequence[Any]) -> Figure:
    """Each seed's final test loss per (optimizer, learning rate, hidden size), with the mean ± std of
    its usable seeds; a set-up lost for some seed (diverged, collapsed, pruned) is named at its tick.
    Past MAX_SETUPS set-ups in all, each panel shows its optimizer's best (by stats.groups' rank), and
    says so in its title."""
    opts = optimizers(records)
    room = max(1, MAX_SETUPS // len(opts))
    shown, totals = {}, {}
    for optim in opts:
        mine = [r for r in records if r.config.optim == optim]
        keys = sorted({(r.config.lr, r.config.model.hidden) for r in mine}, key=lambda k: (-k[0], k[1]))
        rank = {(g["lr"], g["hidden"]): g["rank"] for g in stats.groups(result_rows(mine))}
        shown[optim], totals[optim] = best_first(keys, rank, room), len(keys)
    points = max(len(keys) for keys in shown.values())
    fig = Figure(figsize=(max(4.4, 0.8 * points + 1.6) * len(opts), 4.6), layout="constrained")
    axes = fig.subplots(1, len(opts), squeeze=False, sharey=True)[0]
    any_lost = False
    for ax, optim in zip(axes, opts):
        mine = [r for r in records if r.config.optim == optim]
        keys = shown[optim]
        for x, (lr, h) in enumerate(keys):
            here = [r for r in mine if (r.config.lr, r.config.model.hidden) == (lr, h)]
            losses = [r.final_test_loss for r in here if r.final_test_loss is not None]
            ax.plot([x] * len(losses), losses, "o", color="tab:blue", alpha=0.6, ms=4)
            usable = [r.final_test_loss for r in here if r.status in RANKABLE and r.final_test_loss is not None]
            mean, std, _ = stats.spread(usable)
            if mean is not None:
                ax.errorbar([x + 0.18], [mean], yerr=[std or 0.0], fmt="_", color="black", capsize=3, ms=10)
            lost = sorted({r.status for r in here if r.status in MARKED})
            if lost:  # named at the foot of its tick, whatever the y scale holds
                any_lost = True
                ax.text(x, 0.03, "\n".join(lost) if mean is not None else "x\n" + "\n".join(lost),
                        transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=7, color="red")
        ax.set_xticks(range(len(keys)), [f"{lr:g}\nh={h}" for lr, h in keys], fontsize=7)
        ax.set_xlim(-0.5, len(keys) - 0.5)  # a set-up with no dot keeps its room
        ax.set_xlabel("set-up: learning rate, hidden units h")
        ax.set_yscale("log")
        best = (f"the best {len(keys)} of {totals[optim]} set-ups (results_groups.csv's rank), "
                if len(keys) < totals[optim] else "")
        ax.set_title(f"{optim_label(optim)}: {best}dots are seeds, bars mean ± std", fontsize=9)
        ax.grid(alpha=0.3, which="both", axis="y")
    axes[0].set_ylabel("final test MSE per pixel (log scale)")
    note = "\n(red: seeds lost to that status, left out of the mean; x: no usable seed, so no mean)" if any_lost else ""
    fig.suptitle("Spread over seeds, per learning rate and hidden size" + note, fontsize=11 if not note else 10)
    return fig
