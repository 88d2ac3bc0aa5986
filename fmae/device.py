"""The device a command runs on and the threads torch uses: what every command that touches a
tensor needs (train, sweep, eval, denoise, plot), so `fmae eval`, `denoise` and `plot` load no
training code to pick one."""

from __future__ import annotations

import torch

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
