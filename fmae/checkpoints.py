"""Checkpoints: their format, their safe loading, and models rebuilt from them.

Checkpoints hold only tensors and plain containers and are loaded with weights_only=True: a file
cannot run code. Their weights are checked against the config they carry (names and shapes)
before any model is built, so a small file cannot make fmae allocate a huge model.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmae import __version__
from fmae.checkpoint_bounds import DAMAGED_HINT, WEIGHTS, check_records, check_tensors, check_weights, zip_records
from fmae.config import TrainConfig
from fmae.errors import CheckpointError, ConfigError, first_line

CHECKPOINT_FORMAT = "fmae-checkpoint"
CHECKPOINT_VERSION = 1
# How torch files begin: a zip archive (torch.save since 1.6), or a pickle (the legacy format).
# Anything else (a README, a .gz) is no torch file at all; a damaged checkpoint still begins so.
TORCH_MAGIC = (b"PK\x03\x04", b"\x80")
HEADER = frozenset({"format", "version", "kind", "fmae_version", "config"})
# the resume state's fields and its generators (fmae.training.contract says what each means)
RESUME_KEYS = ("epoch", "model", "optimizer", "rng", "history", "status")
RNG_STREAMS = ("data", "dropout", "noise")  # "noise" may be missing from files older than denoising training
KEYS = {"model": HEADER | {"state_dict", "status", "metrics", "environment"},  # all a checkpoint may hold
        "resume": HEADER | set(RESUME_KEYS)}


def checkpoint(kind: str, config: TrainConfig, payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "kind": kind,
        "fmae_version": __version__,
        "config": config.to_dict(),
        **payload,
    }


def load_checkpoint(path: str | Path, kind: str | None = None, *, data: bytes | None = None) -> dict[str, Any]:
    """Load and check an fmae checkpoint safely (weights_only=True); CheckpointError otherwise.

    `data`: the file's bytes, already read (what is checked is then exactly what gets copied).
    Nothing is inflated or allocated before it is known to fit the config the file carries: the
    zip directory is read first (every record stored, none compressed), then the pickle alone
    with every tensor on the meta device (names, shapes, sizes and keys checked, see
    check_contents), and only then the tensors' bytes.
    """
    path = Path(path)
    if data is None and path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint", "pass a model.pt or best.pt file")
    if data is None and not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist", "pass the model.pt of a run or a sweep's best.pt")
    head = data[:4] if data is not None else _head(path)
    if head and not any(head.startswith(m) or m.startswith(head) for m in TORCH_MAGIC):  # empty: cut short
        raise CheckpointError(f"{path}: not a torch checkpoint (neither a zip nor a pickle file), so not an fmae one",
                              "pass the model.pt of a run or a sweep's best.pt")
    try:
        source = io.BytesIO(data) if data is not None else open(path, "rb")  # one file for every pass
    except OSError as exc:
        raise CheckpointError(f"{path}: unreadable ({exc.strerror or exc})", "check its permissions") from None
    with source:
        records = zip_records(path, source)
        skeleton = check_contents(path, kind, _torch_load(path, source, "meta"))
        check_records(path, skeleton, records)
        return check_contents(path, kind, _torch_load(path, source, "cpu"))


def _torch_load(path: Path, source: Any, location: str) -> Any:
    import torch

    source.seek(0)
    try:
        return torch.load(source, map_location=location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "unsupported operand" not in str(exc).lower():  # anything but plain garbage: refuse
            raise CheckpointError(
                f"{path}: refused: it is not a plain fmae checkpoint (it holds objects that could run code)",
                "only load checkpoints written by fmae",
            ) from None
        raise CheckpointError(f"{path}: truncated or corrupted checkpoint (not a torch file)", DAMAGED_HINT) from None
    except MemoryError:
        raise CheckpointError(f"{path}: too large to load into memory", "check that it is an fmae checkpoint") \
            from None
    except Exception as exc:  # noqa: BLE001 - torch.load on arbitrary bytes raises almost anything
        first = first_line(exc)
        raise CheckpointError(f"{path}: truncated or corrupted checkpoint ({type(exc).__name__}: {first})",
                              DAMAGED_HINT) from None


def check_contents(path: Path, kind: str | None, obj: Any) -> dict[str, Any]:
    """The checkpoint's header, config, keys and every tensor against the config it carries
    (works on meta tensors: nothing of their data is needed)."""
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not an fmae checkpoint", "pass the model.pt of a run or a sweep's best.pt")
    version = obj.get("version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version!r} is newer than this fmae understands ({CHECKPOINT_VERSION})",
            "upgrade fmae",
        )
    if kind is not None and obj.get("kind") != kind:
        raise CheckpointError(f"{path}: a {obj.get('kind')!r} checkpoint, expected {kind!r}",
                              "model.pt and best.pt hold models; last.pt is what --resume reads")
    if obj.get("kind") not in KEYS:
        raise CheckpointError(f"{path}: unknown checkpoint kind {obj.get('kind')!r}", DAMAGED_HINT)
    unknown = sorted(str(k) for k in obj if k not in KEYS[obj["kind"]])
    if unknown:
        raise CheckpointError(f"{path}: refused: unknown keys in the checkpoint ({', '.join(unknown[:3])})",
                              "only load checkpoints written by fmae")
    if not isinstance(obj.get("config"), dict):
        raise CheckpointError(f"{path}: bad config inside the checkpoint (not a mapping)", DAMAGED_HINT)
    try:
        obj["config"] = TrainConfig.from_dict(obj["config"])
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise CheckpointError(f"{path}: bad config inside the checkpoint ({exc})", DAMAGED_HINT) from None
    check_weights(path, obj["config"], obj.get(WEIGHTS[obj["kind"]]))
    check_tensors(path, obj)
    if obj["kind"] == "resume":
        check_resume_state(path, obj)
    return obj


def cloned(obj: Any) -> Any:
    """A nest of dicts, lists and tensors with every tensor copied: a snapshot that training in place
    cannot change."""
    return _map_tensors(obj, lambda t: t.detach().clone())


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_resume_state(path: Path, state: dict[str, Any]) -> None:
    """A resume state's fields have the types and shapes training reads (its weights are checked
    apart): epoch, one history row per epoch, the optimizer's state for this model, the generators."""
    import torch

    from fmae.model import parameter_shapes

    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{path}: not a resume state fmae wrote ({what})", DAMAGED_HINT)

    epoch = state.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise bad(f"epoch is {epoch!r}")
    history = state.get("history")
    if not (isinstance(history, (list, tuple)) and len(history) == epoch
            and all(isinstance(row, (list, tuple)) and len(row) == 4 and all(_number(v) for v in row)
                    and row[0] == i for i, row in enumerate(history, 1))):
        raise bad(f"history is not {epoch} rows of epoch, train loss, test loss, seconds")
    if not isinstance(state.get("status"), str):
        raise bad(f"status is {type(state.get('status')).__name__}")
    rng = state.get("rng")
    if not (isinstance(rng, dict) and all(
            isinstance(rng.get(k), torch.Tensor) and rng[k].dtype == torch.uint8 and rng[k].dim() == 1
            for k in RNG_STREAMS if k in rng or k != "noise")
            and rng["data"].numel() == torch.Generator().get_state().numel()):
        raise bad("rng is not the generators' states")
    shapes = list(parameter_shapes(state["config"].model).values())
    optimizer = state.get("optimizer")
    groups = optimizer.get("param_groups") if isinstance(optimizer, dict) else None
    if not (isinstance(groups, list) and len(groups) == 1 and isinstance(groups[0], dict)
            and groups[0].get("params") == list(range(len(shapes))) and isinstance(optimizer.get("state"), dict)):
        raise bad("optimizer is not one param group of this model's parameters")
    for i, slots in optimizer["state"].items():
        if not (isinstance(i, int) and 0 <= i < len(shapes) and isinstance(slots, dict)):
            raise bad(f"optimizer state of parameter {i!r}")
        for name, value in slots.items():
            if name == "momentum_buffer" and value is None:  # torch.optim.SGD's before a first step
                continue
            if not isinstance(value, torch.Tensor):
                raise bad(f"optimizer state {name} of parameter {i}")
            if name == "step":
                fits = value.numel() == 1
            else:
                fits = value.is_floating_point() and tuple(value.shape) == shapes[i]
            if not fits:
                raise bad(f"optimizer state {name} of parameter {i}")


def check_belongs(path: Path, state: dict[str, Any], config: TrainConfig, ignore: tuple[str, ...] = ()) -> None:
    """A resume state continues `config`'s run only: the config it was saved with (but the settings
    in `ignore`) and its optimizer's hyperparameters must be this run's; the difference is named."""
    from fmae.optim import spec

    diff = state["config"].differences(config, ignore=ignore)
    group = state["optimizer"]["param_groups"][0]
    plain = lambda v: tuple(v) if isinstance(v, (list, tuple)) else v  # noqa: E731
    diff += [f"optimizer {k} {group.get(k)!r} -> {v!r}"
             for k, v in spec(config.optim).settings(config.lr, config.momentum).items()
             if k not in group or plain(group[k]) != plain(v)]
    if diff:
        raise CheckpointError(f"{path} is not this run's: saved with other settings "
                              f"(saved -> this run: {', '.join(diff)})",
                              "remove it (with metrics.csv) to train this run from its start, or use --overwrite")


def _head(path: Path) -> bytes | None:
    """A file's first bytes (None where it cannot be read: torch.load then says why)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4)
    except OSError:
        return None


def to_cpu(obj: Any) -> Any:
    """A state dict (or any nest of dicts, lists and tensors) detached and on the CPU, as saved."""
    return _map_tensors(obj, lambda t: t.detach().cpu())


def _map_tensors(obj: Any, leaf: Any) -> Any:
    """`obj` with `leaf(tensor)` in place of each tensor of its nest of dicts, lists and tuples."""
    import torch

    if isinstance(obj, torch.Tensor):
        return leaf(obj)
    if isinstance(obj, dict):
        return {k: _map_tensors(v, leaf) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map_tensors(v, leaf) for v in obj)
    return obj


def model_file(path: str | Path) -> Path:
    """The checkpoint a path names: a file itself, a sweep directory's best.pt, a run directory's
    model.pt (a directory with neither is named)."""
    path = Path(path)
    if not path.is_dir():
        return path
    for name in ("best.pt", "model.pt"):
        if (path / name).is_file():
            return path / name
    raise CheckpointError(f"{path} holds no model.pt or best.pt",
                          "pass a run directory with a model, a sweep directory with a best.pt, or a .pt file")


def load_model(path: str | Path, device: Any = "cpu") -> tuple[Any, dict[str, Any]]:
    """Rebuild the model from the checkpoint alone (a run's or a sweep's directory: its model.pt or
    best.pt, model_file); returns (model in eval mode, checkpoint)."""
    from fmae.model import build

    ckpt = load_checkpoint(model_file(path), "model")
    model = build(ckpt["config"].model)
    model.load_state_dict(ckpt["state_dict"])  # names and shapes were checked: this cannot fail
    return model.to(device).eval(), ckpt


@dataclass(frozen=True)
class Loaded:
    """A model rebuilt from its checkpoint, with where it came from."""

    path: str
    model: Any
    checkpoint: dict[str, Any]

    @property
    def precision(self) -> str:
        return self.checkpoint["config"].precision

    @property
    def recorded_test_loss(self) -> float | None:
        losses = self.checkpoint.get("metrics", {}).get("test_loss") or []
        return float(losses[-1]) if losses else None


def load_models(paths: Sequence[str | Path], device: Any = "cpu") -> list[Loaded]:
    """Each checkpoint rebuilt once (a path given twice is loaded once), in the order given."""
    out: dict[str, Loaded] = {}
    for path in map(model_file, paths):
        if str(path) not in out:
            model, ckpt = load_model(path, device)
            out[str(path)] = Loaded(str(path), model, ckpt)
    return list(out.values())
