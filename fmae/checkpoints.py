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
from fmae.config import TrainConfig
from fmae.errors import CheckpointError, ConfigError

CHECKPOINT_FORMAT = "fmae-checkpoint"
CHECKPOINT_VERSION = 1
DAMAGED_HINT = "the file was cut short or damaged: use another copy, or train it again"
# How torch files begin: a zip archive (torch.save since 1.6), or a pickle (the legacy format).
# Anything else (a README, a .gz) is no torch file at all; a damaged checkpoint still begins so.
TORCH_MAGIC = (b"PK\x03\x04", b"\x80")
WEIGHTS = {"model": "state_dict", "resume": "model"}  # where each kind keeps the model's weights


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
    """
    import torch

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
        obj = torch.load(io.BytesIO(data) if data is not None else path, map_location="cpu", weights_only=True)
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
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: truncated or corrupted checkpoint ({type(exc).__name__}: {first})",
                              DAMAGED_HINT) from None
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
    if not isinstance(obj.get("config"), dict):
        raise CheckpointError(f"{path}: bad config inside the checkpoint (not a mapping)", DAMAGED_HINT)
    try:
        obj["config"] = TrainConfig.from_dict(obj["config"])
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise CheckpointError(f"{path}: bad config inside the checkpoint ({exc})", DAMAGED_HINT) from None
    if obj.get("kind") in WEIGHTS:
        check_weights(path, obj["config"], obj.get(WEIGHTS[obj["kind"]]))
    return obj


def _head(path: Path) -> bytes | None:
    """A file's first bytes (None where it cannot be read: torch.load then says why)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4)
    except OSError:
        return None


def to_cpu(obj: Any) -> Any:
    """A state dict (or any nest of dicts, lists and tensors) detached and on the CPU, as saved."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def check_weights(path: Path, config: TrainConfig, weights: Any) -> None:
    """The weights' names and shapes must be those of the model in the config (nothing is built)."""
    import torch

    from fmae.model import parameter_shapes

    expected = parameter_shapes(config.model)
    if not isinstance(weights, dict):
        raise CheckpointError(f"{path}: weights missing or not a mapping", DAMAGED_HINT)
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(str(k) for k in set(weights) - set(expected))
    if missing or unexpected:
        what = (f"missing {', '.join(missing)}" if missing else "") + ("; " if missing and unexpected else "") + (
            f"unexpected {', '.join(unexpected[:3])}" if unexpected else "")
        raise CheckpointError(f"{path}: weights do not fit the model in its config ({what})", DAMAGED_HINT)
    for name, shape in expected.items():
        value = weights[name]
        if not isinstance(value, torch.Tensor) or not value.is_floating_point() or tuple(value.shape) != shape:
            found = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise CheckpointError(f"{path}: weights do not fit the model in its config ({name} is {found}, "
                                  f"hidden {config.model.hidden} needs {shape})", DAMAGED_HINT)


def load_model(path: str | Path, device: Any = "cpu") -> tuple[Any, dict[str, Any]]:
    """Rebuild the model from the checkpoint alone; returns (model in eval mode, checkpoint)."""
    from fmae.model import build

    ckpt = load_checkpoint(path, "model")
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
    for path in paths:
        if str(path) not in out:
            model, ckpt = load_model(path, device)
            out[str(path)] = Loaded(str(path), model, ckpt)
    return list(out.values())
