"""What one command asks for, typed and frozen: `fmae train`, `sweep`, `eval` and `plot`'s settings
(the configs of fmae.config, plus where the command runs, reads its data and writes), and the
resume lines they spell out (`to_args`). `fmae denoise`'s are fmae.config.DenoiseConfig."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fmae import numerics
from fmae.checks import choice
from fmae.config import (
    BASELINES,
    FIGURE_FORMATS,
    PLOT_KINDS,
    SPLITS,
    SweepConfig,
    TrainConfig,
    changed_args,
    check_directory,
    check_examples,
    check_seed,
)
from fmae.execution import CHECKPOINT_EVERY, ExecutorConfig, PruneConfig, TrackerConfig, check_checkpoint_every


@dataclass(frozen=True)
class EvalSettings:
    """All of one `fmae eval`: the checkpoints, the split they are evaluated on, the baseline beside
    them (None, or "pca": PCA with k = h fitted on the training set), where it runs and reads its data."""

    ckpts: tuple[Path, ...] = ()
    split: str = "test"
    baseline: str | None = None
    device: str = "auto"
    data_dir: Path | None = None
    download: bool = True

    def __post_init__(self) -> None:
        choice("split", self.split, SPLITS)
        if self.baseline is not None:
            choice("baseline", self.baseline, BASELINES)


@dataclass(frozen=True)
class PlotSettings:
    """All of one `fmae plot`: the run and sweep directories read, where the figures go and in which
    format, the kinds wanted ("all": every kind the sources allow), the curves' options, the recon
    figure's examples (a seeded choice), where it runs and reads its data."""

    sources: tuple[Path, ...] = ()
    out: Path = Path("figures")
    kinds: tuple[str, ...] = ("all",)
    fmt: str = "png"
    train: bool = False  # curves: train loss too
    overlay: bool = False  # curves: all sources on one axis
    examples: int = 3
    seed: int = 0
    device: str = "auto"
    data_dir: Path | None = None
    download: bool = True
    linear: bool = False  # curves and compare: a linear loss axis

    def __post_init__(self) -> None:
        check_examples(self.examples)
        check_seed(self.seed)
        for kind in self.kinds:
            choice("kind", kind, ("all", *PLOT_KINDS))
        choice("format", self.fmt, FIGURE_FORMATS)


@dataclass(frozen=True)
class TrainSettings:
    """All of one `fmae train`: the run's config, where it trains and reads its data, and how it runs.
    `explicit`: the flags the user gave (with --resume, only --epochs, --patience, --min-delta may
    differ from the run's own). `to_args(config)` is the command that resumes it."""

    config: TrainConfig
    run_dir: Path | None = None  # None: runs/<optim>-lr<lr>-h<hidden>-s<seed>
    device: str = "auto"
    engine: str = "auto"
    threads: int | None = None
    data_dir: Path | None = None
    download: bool = True
    checkpoint_every: float = CHECKPOINT_EVERY
    resume: bool = False
    overwrite: bool = False
    explicit: tuple[str, ...] = ()
    trackers: TrackerConfig = field(default_factory=TrackerConfig)  # --tensorboard, --mlflow
    fail_on: tuple[str, ...] = ()  # --fail-on: statuses that make the command exit 3
    resolved: str | None = None  # the command's settings as TOML (fmae.cli.configfile), saved as config.toml
    dry_run: bool = False  # what it would do and how long it would take, nothing run (fmae.sweeps.dry_run)
    reproducible: bool = False  # the portable numerics (fmae.numerics): 1 thread, on the CPU

    def __post_init__(self) -> None:
        object.__setattr__(self, "threads", numerics.check(self.reproducible, self.threads, self.device))

    @property
    def numerics(self) -> str:
        return numerics.mode(self.reproducible)

    def to_args(self, config: TrainConfig, run_dir: Path) -> list[str]:
        """The `fmae train` line that resumes the run of `config` in `run_dir`: every setting that
        differs from its default, and only those (the run's own settings come from its config.json)."""
        return ["fmae", "train", "--run-dir", str(run_dir), *config.to_args(),
                *changed_args(("--threads", None if self.reproducible else self.threads, None),
                              ("--engine", self.engine, "auto"), ("--reproducible", self.reproducible, False)),
                *run_args(self.checkpoint_every, self.fail_on), *given_args(self.device, self.data_dir, self.download),
                *self.trackers.to_args(), "--resume"]


@dataclass(frozen=True)
class SweepSettings:
    """All of one `fmae sweep`: the grid and its shared settings, the executor, the pruning, where the
    sweep and its data are, and how it runs. `to_args()` is the command that resumes it."""

    grid: SweepConfig
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    pruning: PruneConfig | None = None
    run_dir: Path | None = None  # None: runs/sweep-<optims>
    device: str = "auto"
    data_dir: Path | None = None
    download: bool = True
    overwrite: bool = False
    fail_fast: bool = False
    checkpoint_every: float = CHECKPOINT_EVERY
    trackers: TrackerConfig = field(default_factory=TrackerConfig)  # --tensorboard, --mlflow
    fail_on: tuple[str, ...] = ()  # --fail-on: statuses that make the command exit 3
    resolved: str | None = None  # the command's settings as TOML (fmae.cli.configfile), saved as config.toml
    dry_run: bool = False  # what it would do and how long it would take, nothing run (fmae.sweeps.dry_run)

    def __post_init__(self) -> None:
        numerics.check(self.executor.reproducible, self.executor.threads, self.device)
        if self.pruning is not None:
            self.pruning.rungs(self.grid.base.epochs)  # min-epochs at most --epochs
        check_checkpoint_every(self.checkpoint_every)

    @property
    def path(self) -> Path:
        return self.run_dir if self.run_dir is not None else Path("runs") / ("sweep-" + "-".join(self.grid.optims))

    def to_args(self) -> list[str]:
        """The `fmae sweep` line that resumes this sweep, with the same exit code: the grid, the shared
        settings, the executor, the pruning, where it trains and reads its data, how it saves and
        fails; every setting that differs from its default, and only those."""
        return ["fmae", "sweep", "--run-dir", str(self.path), *self.grid.to_args(), *self.executor.to_args(),
                *(self.pruning.to_args() if self.pruning is not None else []),
                *run_args(self.checkpoint_every, self.fail_on), *given_args(self.device, self.data_dir, self.download),
                *(["--fail-fast"] if self.fail_fast else []), *self.trackers.to_args()]


def run_args(checkpoint_every: float, fail_on: tuple[str, ...]) -> list[str]:
    """How a command saves and when it fails (--checkpoint-every, --fail-on), when not the defaults."""
    return changed_args(("--checkpoint-every", checkpoint_every, CHECKPOINT_EVERY),
                        ("--fail-on", tuple(fail_on), ()))


def given_args(device: str, data_dir: Path | None, download: bool) -> list[str]:
    """Where to train and where the data is, as given (not settings of the run, but the command's)."""
    return [*(["--device", device] if device != "auto" else []),
            *(["--data-dir", str(data_dir)] if data_dir is not None else []),
            *(["--no-download"] if not download else [])]


EXPORTS = ("tensorboard", "mlflow", "safetensors")  # where `fmae export` sends runs and models


@dataclass(frozen=True)
class ExportSettings:
    """All of one `fmae export`: where to (a tracker, or safetensors files), the run and sweep
    directories or checkpoints, the destination (a directory or an MLflow URI), MLflow's artifacts."""

    kind: str
    paths: tuple[Path, ...]
    to: str
    artifacts: bool = False

    def __post_init__(self) -> None:
        choice("export", self.kind, EXPORTS)
        if self.kind != "mlflow":  # an MLflow URI: TrackerConfig checks it
            check_directory("--to", self.to, "tb" if self.kind == "tensorboard" else "hub/model")
        if self.artifacts and self.kind == "safetensors":  # tensorboard: TrackerConfig says it
            from fmae.errors import ConfigError

            raise ConfigError("--mlflow-artifacts applies to fmae export mlflow only")
