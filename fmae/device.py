"""The machine a command runs on: the device and the threads torch uses (what every command that
touches a tensor needs: train, sweep, eval, denoise, plot, so `fmae eval`, `denoise` and `plot`
load no training code to pick one), and the `environment` a run records in its config.json."""

from __future__ import annotations

import platform
from typing import Any

import torch

from fmae import __version__
from fmae.config import check_device
from fmae.errors import DeviceError


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device a command runs on: `name` checked (ConfigError), then found (DeviceError)."""
    check_device(name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("--device cuda: no CUDA device is available here", "use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError("--device mps: no Apple MPS device is available here", "use --device cpu or auto")
    return torch.device(name)


def set_threads(threads: int | None) -> None:
    """torch's intra-op threads for this process (None: leave torch's default, all cores)."""
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def environment(device: str, data_source: str = "", data_sha256: dict[str, str] | None = None,
                threads: int | None = None, engine: str = "cells", numerics: str = "default") -> dict[str, Any]:
    """What a run was made with; `threads`: torch's intra-op threads of the process that trains
    (a sweep's workers may use fewer than the driver), since they change float summation order;
    `engine`: the engine (stacked or cells), kept out of the training config so that a run may
    resume with the other; `machine`: the CPU and how it computes (fmae.numerics.machine), with the
    numerics asked for (--reproducible: portable)."""
    from fmae.numerics import machine

    return {
        "fmae": __version__,
        "torch": str(torch.__version__),  # TorchVersion would not load with weights_only=True
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device,
        "threads": threads if threads is not None else torch.get_num_threads(),
        "engine": engine,
        "machine": machine(numerics),
        "data_source": data_source,
        "data_sha256": dict(data_sha256 or {}),
    }
