"""The commands of the CLI, one module per family; cli.py registers them on the app."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional


def load_data(data_dir: Optional[Path], no_download: bool, device: Any, feedback: Any,
              splits: tuple[str, ...] = ("train", "test")) -> Any:
    from fmae import data

    directory = data.locate(data_dir, download=not no_download)
    dataset = data.load(directory, device, splits=splits)
    feedback.message(f"data: {directory} (checksums ok)")
    return dataset
