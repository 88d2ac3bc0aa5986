"""Typed, frozen, validated configurations, and the vocabularies they accept (optimizers, noise
kinds, devices, plot kinds, figure formats). Their defaults are the CLI's defaults."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmae.checks import choice, finite, int_at_least, int_at_most
from fmae.errors import ConfigError
from fmae.optim import SPECS

INPUT_DIM = 784
# the optimizers' vocabulary, read from their specs (fmae.optim, which loads torch only to build one)
OPTIMIZERS = tuple(SPECS)
OPTIMIZER_LABELS = {name: spec.label for name, spec in SPECS.items()}  # as the report and the literature write them
ACTIVATIONS = ("relu", "sigmoid", "identity")
PRECISIONS = ("fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda", "mps")
ENGINES = ("auto", "stacked", "cells")  # the engines fmae.engine chooses between; auto: stacked on cuda and mps
DEFAULT_LR = {name: spec.default_lr for name, spec in SPECS.items()}  # the report's best; --lr when not given
WITH_MOMENTUM = tuple(name for name, spec in SPECS.items() if spec.momentum)
NOISES = ("image-gaussian", "gaussian", "salt-pepper", "speckle")  # fmae.noise implements them
PLOT_KINDS = ("curves", "recon", "heatmap", "compare", "seeds")  # fmae.figures.plots draws them, in this order
FIGURE_FORMATS = ("png", "svg", "pdf")
SPLITS = ("test", "train")  # the splits `fmae eval` evaluates on
BASELINES = ("pca",)  # what `fmae eval --baseline` puts beside the checkpoints


def optim_label(optim: str) -> str:
    return OPTIMIZER_LABELS.get(optim, optim)


def changed_args(*settings: tuple[str, Any, Any]) -> list[str]:
    """The flags of the (flag, value, default) settings whose value is not the default: what a
    printed resume line spells out (nothing at its default). A tuple value is a list option's
    values after one flag; a switch (True) its flag alone; a float is written as repr() writes it,
    which reads back the same."""
    def spelled(value: Any) -> str:
        return repr(float(value)) if isinstance(value, float) else str(value)

    args: list[str] = []
    for flag, value, default in settings:
        if value != default:
            if isinstance(value, bool):  # a switch: its flag alone
                args.append(flag)
            else:
                args += [flag, *map(spelled, value)] if isinstance(value, tuple) else [flag, spelled(value)]
    return args


@dataclass(frozen=True)
class NoiseConfig:
    """A noise model and its strength: sigma scales the noise (a fraction of pixels for salt-pepper)."""

    kind: str = "image-gaussian"
    sigma: float = 0.5

    def __post_init__(self) -> None:
        choice("noise", self.kind, NOISES)
        sigma = finite("sigma", self.sigma)
        if sigma < 0:
            raise ConfigError(f"sigma must be >= 0, got {self.sigma}", "e.g. 0.5; 0 adds no noise")
        if self.kind == "salt-pepper" and sigma > 1:
            raise ConfigError(f"sigma is a fraction of pixels for salt-pepper: at most 1, got {self.sigma}",
                              "e.g. 0.1 flips a tenth of the pixels")

    @classmethod
    def training(cls, kind: str | None, sigma: float) -> NoiseConfig | None:
        """--noise and --noise-sigma of train and sweep: None without --noise (the sigma still checked)."""
        noise = cls(kind or cls.kind, sigma)
        return noise if kind else None


SEED_MAX = 2**63 - 1  # torch's generators take seeds up to this
# Rows of the figures --examples sets (`plot --kind recon`, `denoise --out`): at fmae.figures.plots' 120 dpi
# the taller of the two (denoise's 1.7 in a row) stays below the 2**16 pixels matplotlib can render.
MAX_EXAMPLES = 300


def check_examples(examples: int) -> int:
    if examples < 1:
        raise ConfigError(f"examples must be >= 1, got {examples}")
    if examples > MAX_EXAMPLES:
        raise ConfigError(f"examples must be at most {MAX_EXAMPLES}, got {examples}",
                          f"--examples takes at most {MAX_EXAMPLES}: a taller figure is beyond the 65536 pixels "
                          "an image may have")
    return examples


def check_seed(seed: int) -> int:
    """A seed: 0 to 2**63 - 1, as torch's generators take (the message of a negative one kept)."""
    if seed < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}", "--seed takes a whole number >= 0")
    int_at_least("seed", seed, 0, SEED_MAX)
    return seed


@dataclass(frozen=True)
class DenoiseConfig:
    """`fmae denoise` on the first `limit` test images: one noise kind at several sigmas, noise and
    example images drawn from `seed`; `index` picks the `grid` figure's rows; `curve`: PSNR(sigma).
    With `input`, the user's own images through the one checkpoint instead. Everything denoise uses."""

    kind: str = "image-gaussian"
    sigmas: tuple[float, ...] = (0.5,)
    seed: int = 0
    limit: int | None = None
    examples: int = 4
    index: tuple[int, ...] = ()
    grid: Path | None = None
    curve: Path | None = None
    ckpts: tuple[Path, ...] = ()  # the checkpoints compared (--input: exactly one)
    input: Path | None = None  # the user's own images instead of the test set
    output: Path | None = None  # where --input's result goes; None: <input>.denoised<ext>
    device: str = "auto"
    data_dir: Path | None = None
    download: bool = True

    def __post_init__(self) -> None:
        for sigma in self.sigmas:
            NoiseConfig(self.kind, sigma)
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be >= 1, got {self.limit}")
        if self.limit is not None:
            int_at_most("limit", self.limit, 1_000_000_000)
        check_examples(self.examples)
        check_seed(self.seed)
        if self.index and self.grid is None:
            raise ConfigError("--index picks the images of the --out figure", "add --out fig.png")
        if self.index and min(self.index) < 0:
            raise ConfigError(f"--index {min(self.index)} is negative")
        if self.index:
            int_at_most("index", max(self.index), 1_000_000_000)
        for path in (self.grid, self.curve):
            if path is not None and figure_format(path) is None:
                raise ConfigError(f"{path}: unknown figure format", "use a .png, .svg or .pdf file name")


def figure_format(path: str | Path) -> str | None:
    suffix = Path(path).suffix.lower().lstrip(".")
    return suffix if suffix in FIGURE_FORMATS else None


@dataclass(frozen=True)
class ModelConfig:
    hidden: int = 512
    dropout: float = 0.1
    activation: str = "relu"

    def __post_init__(self) -> None:
        int_at_least("hidden", self.hidden, 1, 1_000_000)
        _check_layers(self.dropout, self.activation)


def _check_layers(dropout: float, activation: str) -> None:
    """The model settings a sweep's cells share: dropout and the output activation."""
    if not 0.0 <= finite("dropout", dropout) < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout}", "e.g. 0.1 (the report's); 0 turns it off")
    choice("activation", activation, ACTIVATIONS)


def _check_training(c: Any, optim: str | None = None, seed: int | None = None) -> None:
    """The training settings of a run (`optim` and `seed` given) or those a sweep's cells share, in
    the order their errors are reported."""
    momentum = finite("momentum", c.momentum)
    if not 0.0 <= momentum < 1.0:
        raise ConfigError(f"momentum must be in [0, 1), got {c.momentum}", "e.g. --momentum 0.9; 0 turns it off")
    if momentum and optim is not None and optim not in WITH_MOMENTUM:
        raise ConfigError(f"momentum applies to --optim {' or '.join(WITH_MOMENTUM)} only",
                          f"drop --momentum, or add --optim {WITH_MOMENTUM[0]}")
    int_at_least("epochs", c.epochs, 1, 1_000_000)
    int_at_least("batch_size", c.batch_size, 1, 10_000_000)
    if seed is not None:
        int_at_least("seed", seed, 0, SEED_MAX)
    choice("precision", c.precision, PRECISIONS)
    int_at_least("patience", c.patience, 0, 1_000_000)
    if finite("min_delta", c.min_delta) < 0:
        raise ConfigError(f"min_delta must be >= 0, got {c.min_delta}", "e.g. --min-delta 0.001 (a relative change)")


@dataclass(frozen=True)
class SharedSettings:
    """The settings every cell of a sweep shares (sweep.json's `shared`): all of a TrainConfig but
    the grid's optimizer, learning rate, hidden size and seed."""

    dropout: float = ModelConfig.dropout
    activation: str = ModelConfig.activation
    momentum: float = 0.0  # SGD's cells only; Adam's train without
    epochs: int = 100
    batch_size: int = 1000
    precision: str = "fp32"
    patience: int = 0
    min_delta: float = 0.001
    noise: NoiseConfig | None = None

    def __post_init__(self) -> None:
        _check_layers(self.dropout, self.activation)
        _check_training(self)

    @classmethod
    def of(cls, *, dropout: float, activation: str, noise: str | None, noise_sigma: float,
           **training: Any) -> SharedSettings:
        """From the flags of `fmae sweep`, checked in the order `fmae train` checks them."""
        _check_layers(dropout, activation)
        return cls(dropout=dropout, activation=activation, noise=NoiseConfig.training(noise, noise_sigma), **training)

    def to_dict(self) -> dict[str, Any]:
        """As sweep.json records it: a nested "model" of dropout and activation, the rest flat."""
        return {"model": {"dropout": self.dropout, "activation": self.activation}, "momentum": self.momentum,
                "epochs": self.epochs, "batch_size": self.batch_size, "precision": self.precision,
                "patience": self.patience, "min_delta": self.min_delta,
                "noise": dataclasses.asdict(self.noise) if self.noise is not None else None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SharedSettings:
        try:
            fields = dict(data)
            model = fields.pop("model")
            noise = fields.pop("noise", None)
            return cls(**model, noise=NoiseConfig(**noise) if noise is not None else None, **fields)
        except (TypeError, KeyError, AttributeError) as exc:
            raise ConfigError(f"not a valid training config: {exc}") from None

    def to_args(self) -> list[str]:
        """The flags of these settings that differ from their defaults (the printed resume commands
        are built from them)."""
        d, noise = SharedSettings(), self.noise or NoiseConfig()
        return changed_args(("--epochs", self.epochs, d.epochs), ("--batch-size", self.batch_size, d.batch_size),
                            ("--dropout", self.dropout, d.dropout), ("--activation", self.activation, d.activation),
                            ("--precision", self.precision, d.precision), ("--patience", self.patience, d.patience),
                            ("--min-delta", self.min_delta, d.min_delta), ("--momentum", self.momentum, d.momentum),
                            ("--noise", self.noise and self.noise.kind, None),
                            ("--noise-sigma", noise.sigma, NoiseConfig.sigma))


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: str = "adam"
    lr: float | None = None  # None: the optimizer's DEFAULT_LR, filled in when the config is built
    momentum: float = SharedSettings.momentum
    epochs: int = SharedSettings.epochs
    batch_size: int = SharedSettings.batch_size
    seed: int = 0
    precision: str = SharedSettings.precision
    patience: int = SharedSettings.patience
    min_delta: float = SharedSettings.min_delta
    noise: NoiseConfig | None = None  # a denoising autoencoder: noisy input, clean target

    def __post_init__(self) -> None:
        choice("optim", self.optim, OPTIMIZERS)
        if self.lr is not None and finite("lr", self.lr) <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}", "e.g. --lr 0.001 for adam, --lr 0.1 for sgd")
        _check_training(self, self.optim, self.seed)
        # fully resolved: no lr is left unset once a config is built (the optimizer's default fills it)
        object.__setattr__(self, "lr", float(DEFAULT_LR[self.optim] if self.lr is None else self.lr))

    def shared(self) -> SharedSettings:
        """The settings a sweep's cells share, as this run has them."""
        m = self.model
        return SharedSettings(dropout=m.dropout, activation=m.activation, momentum=self.momentum, epochs=self.epochs,
                              batch_size=self.batch_size, precision=self.precision, patience=self.patience,
                              min_delta=self.min_delta, noise=self.noise)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flags(self) -> dict[str, Any]:
        """The settings by the name of their flag: {"hidden": 64, "optim": "sgd", "noise": None, ...}."""
        d = self.to_dict()
        noise = d.pop("noise")
        flat = {**d.pop("model"), **d, "noise": noise and noise["kind"], "noise_sigma": noise and noise["sigma"]}
        return {k.replace("_", "-"): v for k, v in flat.items()}

    def differences(self, other: TrainConfig, ignore: tuple[str, ...] = ()) -> list[str]:
        """The settings that differ, as `flag old -> new` (e.g. `optim sgd -> adam`), but those in `ignore`."""
        mine, theirs = self.flags(), other.flags()
        show = lambda v: "none" if v is None else str(v) if isinstance(v, str) else repr(v)  # noqa: E731
        return [f"{k} {show(mine[k])} -> {show(theirs[k])}" for k in mine if k not in ignore and mine[k] != theirs[k]]

    def to_args(self) -> list[str]:
        """The `fmae train` flags that give this config, those at their default left out (the
        printed resume commands are built from them)."""
        d = TrainConfig()
        return [*changed_args(("--optim", self.optim, d.optim), ("--lr", self.lr, DEFAULT_LR[self.optim]),
                              ("--hidden", self.model.hidden, d.model.hidden), ("--seed", self.seed, d.seed)),
                *self.shared().to_args()]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        try:
            fields = dict(data)
            model = ModelConfig(**fields.pop("model"))
            noise = fields.pop("noise", None)
            return cls(model=model, noise=NoiseConfig(**noise) if noise is not None else None, **fields)
        except (TypeError, KeyError, AttributeError) as exc:
            raise ConfigError(f"not a valid training config: {exc}") from None


def check_device(name: str) -> str:
    choice("device", name, DEVICES)
    return name


def check_engine(name: str) -> str:
    choice("engine", name, ENGINES)
    return name


def check_directory(flag: str, value: str, example: str) -> Path:
    """A directory named on the command line. An empty one (`--tensorboard ''`) is a usage error, as
    `--mlflow ''` is: as a Path it would be the working directory, and fmae would write there."""
    if not str(value).strip():
        raise ConfigError(f"{flag} needs a directory", f"e.g. {flag} {example}")
    return Path(value)


REPORT_LRS = (0.1, 0.01, 0.001)
REPORT_HIDDEN = (64, 128, 256, 512)


@dataclass(frozen=True)
class SweepConfig:
    """A grid over optimizer x lr x hidden x seed; `base` holds every shared setting."""

    optims: tuple[str, ...] = ("adam",)
    lrs: tuple[float, ...] = REPORT_LRS
    hiddens: tuple[int, ...] = REPORT_HIDDEN
    seeds: tuple[int, ...] = (0,)
    base: SharedSettings = field(default_factory=SharedSettings)

    def __post_init__(self) -> None:
        for name, values in (("optim", self.optims), ("lr", self.lrs), ("hidden", self.hiddens), ("seed", self.seeds)):
            if not values:
                raise ConfigError(f"--{name} needs at least one value", "give one or more values after the flag")
            dupes = sorted({str(v) for v in values if list(values).count(v) > 1})
            if dupes:
                raise ConfigError(f"--{name} lists {', '.join(dupes)} more than once", "give each value once")
        self.cells()  # validates every value

    def cells(self) -> list[TrainConfig]:
        b = self.base
        return [
            TrainConfig(model=ModelConfig(hidden=hidden, dropout=b.dropout, activation=b.activation), optim=optim,
                        lr=float(lr), momentum=b.momentum if optim in WITH_MOMENTUM else 0.0, epochs=b.epochs,
                        batch_size=b.batch_size, seed=seed, precision=b.precision, patience=b.patience,
                        min_delta=b.min_delta, noise=b.noise)
            for optim in self.optims for lr in self.lrs for hidden in self.hiddens for seed in self.seeds
        ]

    def to_args(self) -> list[str]:
        """The `fmae sweep` flags of this grid and its shared settings (one flag, several values),
        those at their default left out."""
        d = SweepConfig()
        return [*changed_args(("--optim", self.optims, d.optims), ("--lr", tuple(map(float, self.lrs)), d.lrs),
                              ("--hidden", self.hiddens, d.hiddens), ("--seed", self.seeds, d.seeds)),
                *self.base.to_args()]

    def shared(self) -> dict[str, Any]:
        """The settings every cell shares: an existing sweep directory must agree on them."""
        return self.base.to_dict()
