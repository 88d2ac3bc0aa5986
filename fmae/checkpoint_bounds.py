"""What a checkpoint may hold, checked before and after it is unpickled (fmae.checkpoints loads
through these): the zip's records against the sizes its config allows (`check_records`), the
weights against the model (`check_weights`), every tensor against what fmae keeps there
(`check_tensors`). A hostile or damaged file is refused with a CheckpointError before it costs
memory or time.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from fmae.config import TrainConfig
from fmae.errors import CheckpointError

DAMAGED_HINT = "the file was cut short or damaged: use another copy, or train it again"
WEIGHTS = {"model": "state_dict", "resume": "model"}  # where each kind keeps the model's weights
RNG_BYTES = 1 << 16  # a generator's state: 5056 bytes on a CPU, 16 on CUDA
ELEMENT_BYTES = 8  # the widest element a weight may have (float64)
PICKLE_CAP = 256 << 20  # the pickle of a run of 1,000,000 epochs is ~40 MB


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


def _parameter_bounds(config: TrainConfig) -> list[tuple[str, tuple[int, ...]]]:
    from fmae.model import parameter_shapes

    return list(parameter_shapes(config.model).items())  # the optimizer's order: model.parameters()


def check_tensors(path: Path, obj: dict[str, Any]) -> None:
    """Every tensor of the checkpoint is one the config accounts for, with a storage no larger
    than itself: the weights (see check_weights), the optimizer's state per weight (its shape,
    or a scalar) and the three generators' states (bytes). Anywhere else, a tensor is refused."""
    import torch

    params = _parameter_bounds(obj["config"])
    allowed: dict[int, str] = {}
    for name, _ in params:
        allowed[id(obj[WEIGHTS[obj["kind"]]][name])] = name
    if obj["kind"] == "resume":
        optimizer, rng = obj.get("optimizer"), obj.get("rng")
        if not isinstance(optimizer, dict) or set(optimizer) - {"state", "param_groups"} \
                or not isinstance(optimizer.get("state", {}), dict):
            raise CheckpointError(f"{path}: optimizer state is not an optimizer's", DAMAGED_HINT)
        for index, state in optimizer.get("state", {}).items():
            if not (isinstance(index, int) and 0 <= index < len(params) and isinstance(state, dict)):
                raise CheckpointError(f"{path}: optimizer state for a weight the model lacks ({index!r})",
                                      DAMAGED_HINT)
            name, shape = params[index]
            for key, value in state.items():
                if value is None:
                    continue
                if not (isinstance(value, torch.Tensor) and (value.numel() <= 1 or tuple(value.shape) == shape)):
                    found = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                    raise CheckpointError(f"{path}: optimizer state {key} of {name} is {found}, the model needs "
                                          f"{shape}", DAMAGED_HINT)
                allowed[id(value)] = f"optimizer {key} of {name}"
        if not isinstance(rng, dict) or set(rng) - {"data", "dropout", "noise"}:
            raise CheckpointError(f"{path}: random generator states missing or unknown", DAMAGED_HINT)
        for key, value in rng.items():
            if not (isinstance(value, torch.Tensor) and value.dtype == torch.uint8 and value.dim() == 1
                    and value.numel() <= RNG_BYTES):
                raise CheckpointError(f"{path}: random generator state {key} is not a generator's", DAMAGED_HINT)
            allowed[id(value)] = f"generator {key}"
    for where, tensor in _tensors(obj, ""):
        if id(tensor) not in allowed:
            raise CheckpointError(f"{path}: refused: a tensor where fmae keeps none ({where.lstrip('.')})",
                                  "only load checkpoints written by fmae")
        own = tensor.numel() * tensor.element_size()
        if tensor.element_size() > ELEMENT_BYTES or tensor.untyped_storage().nbytes() > own + 64:
            raise CheckpointError(f"{path}: refused: {allowed[id(tensor)]} declares "
                                  f"{tensor.untyped_storage().nbytes()} bytes for a tensor of {own}",
                                  "only load checkpoints written by fmae")


def _tensors(obj: Any, where: str) -> Any:
    import torch

    if isinstance(obj, torch.Tensor):
        yield where, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from _tensors(value, f"{where}.{key}")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _tensors(value, f"{where}[{i}]")


def zip_records(path: Path, source: Any) -> list[zipfile.ZipInfo] | None:
    """The zip directory of a torch file (read without inflating anything): every record must be
    stored, as torch.save writes them; a compressed one could inflate to any size. None: not a
    zip (torch.load then says what it is)."""
    source.seek(0)
    try:
        with zipfile.ZipFile(source) as archive:
            records = archive.infolist()
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError):
        return None
    for record in records:
        if record.compress_type != zipfile.ZIP_STORED or record.file_size != record.compress_size:
            raise CheckpointError(f"{path}: refused: record {record.filename} is compressed; fmae writes every "
                                  "record stored, and a compressed one could inflate to any size",
                                  "only load checkpoints written by fmae")
        if record.filename.endswith("/data.pkl") and record.file_size > PICKLE_CAP:
            raise CheckpointError(f"{path}: refused: its pickle is {record.file_size} bytes", DAMAGED_HINT)
    return records


def check_records(path: Path, skeleton: dict[str, Any], records: list[zipfile.ZipInfo] | None) -> None:
    """Each record no larger than the config lets it be: a tensor's at most its largest weight's
    (or a generator state's), all tensors together at most the weights, two optimizer buffers
    each and three generator states; the pickle a little per epoch."""
    if records is None:
        return
    config = skeleton["config"]
    sizes = [ELEMENT_BYTES * _numel(shape) for _, shape in _parameter_bounds(config)]
    copies = 1 if skeleton["kind"] == "model" else 3
    largest, total = max([*sizes, RNG_BYTES]), copies * sum(sizes) + 3 * RNG_BYTES + 4096
    pickle_bytes = (1 << 20) + 256 * config.epochs
    stored = 0
    for record in records:
        name = record.filename.split("/", 1)[-1]
        bound = largest if name.startswith("data/") else pickle_bytes if name == "data.pkl" else 4096
        stored += record.file_size if name.startswith("data/") else 0
        if record.file_size > bound or stored > total:
            raise CheckpointError(f"{path}: refused: record {record.filename} holds {record.file_size} bytes, "
                                  f"more than hidden {config.model.hidden} can need",
                                  "only load checkpoints written by fmae")


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for dim in shape:
        n *= dim
    return n
