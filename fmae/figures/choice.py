"""What a figure shows, chosen from the sources: the plot kinds that `fmae plot`'s run and sweep
directories allow, the models its recon figure shows (each optimizer's best learning rate), the
seeded choice of example images, and the rows, models and labels of `fmae denoise`'s figures.
Drawing is fmae.figures.plots'; this room decides what goes in (and imports matplotlib only to draw).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmae.config import PLOT_KINDS, DenoiseConfig, optim_label
from fmae.errors import ConfigError

Sources = Mapping[str, tuple[str, Sequence[Any]]]  # name -> ("run" | "sweep", run records)
NEEDS = {"curves": "no finished run", "recon": "no model.pt", "heatmap": "needs a sweep directory",
         "compare": "needs finished SGD and Adam runs", "seeds": "needs a sweep with several seeds"}
SKIP_NOTED = ("compare", "seeds")  # the kinds `all` says it skipped: the others need no sweep to be expected


def example_indices(n: int, count: int, seed: int) -> Any:
    """`count` of `n` images, a seeded choice: the same seed shows the same images."""
    import torch

    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:count]


def _records(sources: Sources) -> list[Any]:
    return [r for _, recs in sources.values() for r in recs]


@dataclass(frozen=True)
class PlotChoice:
    """The kinds to draw, and why `all` left out the kinds a user may have expected (compare, seeds)."""

    kinds: list[str]
    skipped: dict[str, str]  # kind -> what it needs


def plot_kinds(wanted: Collection[str], sources: Sources) -> PlotChoice:
    """The figures to draw, in PLOT_KINDS order: with `all`, every kind the sources allow, and the
    compare and seeds figures it skips with what they need; a kind asked for by name that they do not
    allow is a ConfigError that says what it needs."""
    from fmae.figures import plots

    records = _records(sources)
    allowed = {
        "curves": any(r.final_test_loss is not None for r in records),
        "recon": any(r.file_exists("model.pt") for r in records) if records else False,
        "heatmap": any(k == "sweep" for k, _ in sources.values()),
        "compare": {"sgd", "adam"} <= {r.config.optim for r in records if r.final_test_loss is not None},
        "seeds": plots.has_seeds(records),
    }
    skipped = {}
    if "all" in wanted:
        chosen = [k for k in PLOT_KINDS if allowed[k]]
        skipped = {k: NEEDS[k] for k in SKIP_NOTED if not allowed[k]}
    else:
        chosen = [k for k in PLOT_KINDS if k in wanted]
        for k in chosen:
            if not allowed[k]:
                raise ConfigError(f"plot {k}: {NEEDS[k]} among the sources")
    if not chosen:
        raise ConfigError("nothing to draw from these sources", "train or sweep first")
    return PlotChoice(chosen, skipped)


def recon_models(sources: Sources) -> dict[str, Path]:
    """The recon figure's rows: for each source and optimizer, every hidden size at the best
    learning rate (the best plots.MAX_LINES of more), as {label: model.pt}."""
    from fmae.figures import plots

    rows = {}
    for name, (_, records) in sources.items():
        for optim in plots.optimizers(records):
            lr = plots.best_lr(records, optim)
            chosen = [r for r in records if r.config.optim == optim and r.config.lr == lr and r.file_exists("model.pt")]
            by_size = {r.config.model.hidden: r for r in chosen}  # one model per size: its last seed's
            sizes = sorted(by_size)
            for r in (by_size[h] for h in plots.best_first(sizes, {h: by_size[h].final_test_loss for h in sizes},
                                                           plots.MAX_LINES)):
                label = f"{optim_label(optim)} h={r.config.model.hidden}"
                if len(sources) > 1 and name.lower() != optim:
                    label += f"\n{name}"
                rows[label] = r.path / "model.pt"
    return rows


def draw(kind: str, sources: Sources, *, train: bool, overlay: bool,
         reconstructions: Callable[[], tuple[Any, Mapping[str, Any]]], linear: bool = False) -> Any:
    """The figure of one plot kind; `reconstructions()`: (originals, {label: outputs}) for recon;
    `linear`: curves and compare on a linear loss axis (log by default)."""
    from fmae.figures import plots

    records = _records(sources)
    if kind == "curves":
        return plots.curves({name: recs for name, (_, recs) in sources.items()}, train=train, overlay=overlay,
                           linear=linear)
    if kind == "heatmap":
        return plots.heatmap([r for sk, recs in sources.values() if sk == "sweep" for r in recs])
    if kind == "compare":
        return plots.compare(records, linear=linear)
    if kind == "seeds":
        from fmae.figures.seeds import seeds

        return seeds(records)
    if kind == "recon":
        return plots.recon(*reconstructions())
    raise ValueError(f"no figure for plot kind {kind!r}")  # a kind of fmae.config.PLOT_KINDS without its branch


def short_names(paths: Sequence[str]) -> dict[str, str]:
    """Column labels: the file name, or its parent directory for model.pt/best.pt."""
    names: dict[str, str] = {}
    for p in paths:
        path = Path(p)
        base = path.parent.name if path.name in ("model.pt", "best.pt", "last.pt") and path.parent.name else path.name
        names[p] = base if base not in names.values() else p
    return names


def figure_labels(models: Sequence[Any], names: Mapping[str, str]) -> dict[str, str]:
    """What each model is (`SGD h=512`), with its learning rate, then its short name, where that is ambiguous."""
    def label(m: Any, lr: bool) -> str:
        config = m.checkpoint["config"]
        return f"{optim_label(config.optim)} h={config.model.hidden}" + (f" lr={config.lr:g}" if lr else "")

    for lr in (False, True):
        labels = {m.path: label(m, lr) for m in models}
        if len(set(labels.values())) == len(labels):
            return labels
    return {m.path: f"{labels[m.path]} ({names[m.path]})" for m in models}


def denoise_grid(result: Any, labels: Mapping[str, str], config: DenoiseConfig) -> Any:
    """The report's Figure 4 at the strongest sigma (it shows the difference best): the rows
    `config.index` names, else `config.examples` seeded ones."""
    import torch

    from fmae.figures import plots

    n = result.clean.shape[0]
    if config.index:
        bad = [i for i in config.index if not 0 <= i < n]
        if bad:
            raise ConfigError(f"--index {bad[0]} is outside the {n} test images in use")
        rows = torch.tensor(config.index)
    else:
        rows = example_indices(n, min(config.examples, n), config.seed)
    sigma = max(result.noisy)
    outputs = {labels[path]: result.outputs[(i, sigma)][rows] for i, path in enumerate(labels)}
    return plots.denoise_grid(result.clean[rows], result.noisy[sigma][rows], outputs, sigma=sigma, noise=config.kind)
