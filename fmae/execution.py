"""How and where runs execute, typed, frozen and validated, their defaults the CLI's: torch threads
(`check_threads`), the checkpoint interval (`CHECKPOINT_EVERY`), a sweep's executor
(`ExecutorConfig`, the names in `EXECUTORS`) and its pruning (`PruneConfig`), the trackers a
command logs to (`TrackerConfig`). What a run trains is fmae.config's."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fmae.checks import choice, finite, int_at_least, int_at_most
from fmae.config import changed_args, check_engine
from fmae.errors import ConfigError

THREADS_PER_CORE = 4  # --threads beyond this many per usable core only slows training down


def check_threads(threads: int | None, cores: int | None = None, where: str = "this machine") -> int | None:
    """--threads: 1 to 4096, and with `cores` (the usable cores of `where`) at most 4 per core:
    torch threads beyond the cores only take turns (--threads 4096 made one small epoch take
    136 s on 2 cores)."""
    if threads is None:
        return threads
    int_at_least("threads", threads, 1, 4096)
    if cores is not None and threads > THREADS_PER_CORE * cores:
        raise ConfigError(f"threads must be at most {THREADS_PER_CORE * cores} ({THREADS_PER_CORE} per core; "
                          f"{where} has {cores} usable cores), got {threads}",
                          f"e.g. --threads {cores}, or leave --threads out")
    return threads


# --checkpoint-every: seconds between two last.pt of a run (0: every epoch). Chosen by measurement
# (CHANGELOG, benchmarks/checkpoint_cost.py): under 5% of a sweep's time on the CPU.
CHECKPOINT_EVERY = 30.0


def check_checkpoint_every(seconds: float) -> float:
    if finite("checkpoint_every", seconds) < 0:
        raise ConfigError(f"checkpoint_every must be >= 0 seconds, got {seconds}",
                          "e.g. --checkpoint-every 30; 0 writes last.pt after every epoch")
    return float(seconds)



EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class ExecutorConfig:
    """Where a sweep's cells train: this process or a local process pool (--jobs), or Ray."""

    executor: str = "local"
    jobs: int = 1
    threads: int | None = None  # torch intra-op threads per cell; None: see worker_threads
    address: str | None = None  # Ray: None starts a private local instance; "auto" or "ray://host:port" joins one
    cpus_per_cell: float | None = None  # Ray only: None is 1 CPU there; given with the local executor, refused
    gpus_per_cell: float | None = None  # Ray only: None is 0 GPUs there; given with the local executor, refused
    max_retries: int = 2
    engine: str = "auto"  # the engine (fmae.engine.resolve_engine): auto, stacked or cells
    reproducible: bool = False  # the portable numerics (fmae.numerics): 1 thread per cell, on the CPU

    def __post_init__(self) -> None:
        from fmae import numerics

        object.__setattr__(self, "threads", numerics.check(self.reproducible, self.threads, "auto"))
        if self.reproducible and self.gpus_per_cell:
            raise ConfigError("--reproducible is a CPU mode, got --gpus-per-cell "
                              f"{self.gpus_per_cell:g}", "leave --gpus-per-cell out")
        choice("executor", self.executor, EXECUTORS)
        check_engine(self.engine)
        int_at_least("jobs", self.jobs, 1, 4096)
        check_threads(self.threads)
        if self.cpus_per_cell is not None and finite("cpus_per_cell", self.cpus_per_cell) <= 0:
            raise ConfigError(f"cpus_per_cell must be > 0, got {self.cpus_per_cell}")
        if self.gpus_per_cell is not None and finite("gpus_per_cell", self.gpus_per_cell) < 0:
            raise ConfigError(f"gpus_per_cell must be >= 0, got {self.gpus_per_cell}")
        int_at_least("max_retries", self.max_retries, 0, 1000)
        if self.executor == "ray" and self.jobs != 1:
            raise ConfigError("--jobs applies to the local executor", "with --executor ray, size cells with "
                              "--cpus-per-cell and --gpus-per-cell")
        if self.executor == "local":
            given = [flag for flag, value in (("--address", self.address), ("--cpus-per-cell", self.cpus_per_cell),
                                               ("--gpus-per-cell", self.gpus_per_cell)) if value is not None]
            if given:
                raise ConfigError(f"{' and '.join(given)} {'applies' if len(given) == 1 else 'apply'} to "
                                  "--executor ray only", "on this machine, size cells with --jobs and --threads")
        else:  # Ray's defaults, written once here
            object.__setattr__(self, "cpus_per_cell", 1.0 if self.cpus_per_cell is None else float(self.cpus_per_cell))
            object.__setattr__(self, "gpus_per_cell", 0.0 if self.gpus_per_cell is None else float(self.gpus_per_cell))

    def to_args(self) -> list[str]:
        """The `fmae sweep` flags of this executor that differ from their defaults (Ray's own
        defaults for --cpus-per-cell and --gpus-per-cell)."""
        d = ExecutorConfig()
        return changed_args(("--executor", self.executor, d.executor), ("--jobs", self.jobs, d.jobs),
                            ("--threads", None if self.reproducible else self.threads, d.threads),
                            ("--address", self.address, d.address),
                            ("--cpus-per-cell", self.cpus_per_cell, 1.0 if self.executor == "ray" else None),
                            ("--gpus-per-cell", self.gpus_per_cell, 0.0 if self.executor == "ray" else None),
                            ("--max-retries", self.max_retries, d.max_retries), ("--engine", self.engine, d.engine),
                            ("--reproducible", self.reproducible, d.reproducible))

    def worker_threads(self, cores: int) -> int | None:
        """Torch threads per cell: --threads, else all cores for one job (None: torch's default),
        cores // N for N jobs, --cpus-per-cell on Ray; so that workers never fight for cores."""
        if self.threads is not None:
            return self.threads
        if self.executor == "ray":
            return max(1, int(self.cpus_per_cell or 1))
        return None if self.jobs == 1 else max(1, cores // self.jobs)


@dataclass(frozen=True)
class PruneConfig:
    """Successive halving over a sweep's cells: train all to the first rung, keep the best 1/eta
    for the next rung (eta times more epochs), and so on up to the sweep's --epochs."""

    eta: int = 3
    min_epochs: int | None = None  # the first rung at least this; default epochs // eta**2 (at least 1)

    def __post_init__(self) -> None:
        int_at_least("eta", self.eta, 2)
        int_at_most("eta", self.eta, 1_000_000)
        if self.min_epochs is not None:
            int_at_least("min-epochs", self.min_epochs, 1)
            int_at_most("min_epochs", self.min_epochs, 1_000_000)

    @classmethod
    def of(cls, prune: str | None, eta: int | None, min_epochs: int | None) -> PruneConfig | None:
        """--prune, --eta and --min-epochs: None without --prune (and then neither of the others)."""
        if prune is None:
            if eta is not None or min_epochs is not None:
                raise ConfigError("--eta and --min-epochs need --prune halving", "add --prune halving")
            return None
        return cls(eta=cls.eta if eta is None else eta, min_epochs=min_epochs)

    def to_args(self) -> list[str]:
        return ["--prune", "halving", *changed_args(("--eta", self.eta, PruneConfig.eta),
                                                    ("--min-epochs", self.min_epochs, None))]

    def rungs(self, epochs: int) -> tuple[int, ...]:
        """The epochs at which cells are compared; the last is `epochs`: 9 epochs, eta 3 -> (1, 3, 9)."""
        low = self.min_epochs if self.min_epochs is not None else max(1, epochs // self.eta ** 2)
        if low > epochs:
            raise ConfigError(f"min-epochs must be at most --epochs ({epochs}), got {low}")
        out = [epochs]
        while low <= out[0] // self.eta < out[0]:
            out.insert(0, out[0] // self.eta)
        return tuple(out)


@dataclass(frozen=True)
class TrackerConfig:
    """Where a command logs its runs (fmae.trackers): a TensorBoard log directory, an MLflow
    tracking URI, or both."""

    tensorboard: Path | None = None
    mlflow: str | None = None
    artifacts: bool = False  # model.pt (and a sweep's best.pt) uploaded to MLflow

    def __post_init__(self) -> None:
        if self.artifacts and self.mlflow is None:
            raise ConfigError("--mlflow-artifacts uploads to MLflow: it needs --mlflow URI")
        if self.mlflow is not None and not self.mlflow.strip():
            raise ConfigError("--mlflow needs a tracking URI", "e.g. --mlflow sqlite:///mlflow.db or http://host:5000")

    def __bool__(self) -> bool:
        return self.tensorboard is not None or self.mlflow is not None

    def to_args(self) -> list[str]:
        """The flags that log the same way (for a resume line)."""
        return [*(["--tensorboard", str(self.tensorboard)] if self.tensorboard is not None else []),
                *(["--mlflow", self.mlflow] if self.mlflow is not None else []),
                *(["--mlflow-artifacts"] if self.artifacts else [])]
