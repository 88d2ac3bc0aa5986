"""Shared fixtures: tiny synthetic IDX datasets for unit tests, the real dataset for the rest."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import pytest

from fmae import data

STEMS = list(data.CHECKSUMS)


def idx_bytes(images: bool, count: int, seed: int = 0) -> bytes:
    import random

    rng = random.Random(seed)
    if images:
        header = (0x803).to_bytes(4, "big") + count.to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
        # smooth blobs rather than white noise, so an autoencoder has something to learn
        body = bytearray()
        for _ in range(count):
            cx, cy, r = rng.randint(6, 21), rng.randint(6, 21), rng.randint(3, 9)
            body += bytes(255 if (x - cx) ** 2 + (y - cy) ** 2 < r * r else 0 for y in range(28) for x in range(28))
        return header + bytes(body)
    header = (0x801).to_bytes(4, "big") + count.to_bytes(4, "big")
    return header + bytes(rng.randrange(10) for _ in range(count))


def write_dataset(directory: Path, *, n_train: int = 64, n_test: int = 16, gz: bool = True) -> dict[str, str]:
    """Write a tiny Fashion-MNIST look-alike; returns the sha256 of each decompressed file."""
    directory.mkdir(parents=True, exist_ok=True)
    sums = {}
    for i, stem in enumerate(STEMS):
        count = n_train if stem.startswith("train") else n_test
        raw = idx_bytes("images" in stem, count, seed=i)
        sums[stem] = hashlib.sha256(raw).hexdigest()
        if gz:
            (directory / (stem + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (directory / stem).write_bytes(raw)
    return sums


@pytest.fixture
def tiny_dir(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    directory = tmp_path / "tiny"
    return directory, write_dataset(directory)


@pytest.fixture
def tiny_data(tiny_dir):
    directory, sums = tiny_dir
    return data.load(directory, checksums=sums)


@pytest.fixture
def fake_dataset(tiny_dir, monkeypatch):
    """Make the tiny dataset what fmae finds first, with its own checksums, for CLI tests."""
    directory, sums = tiny_dir
    monkeypatch.setattr(data, "CHECKSUMS", sums)
    monkeypatch.setenv("FMAE_DATA_DIR", str(directory))
    return directory


def real_data_dir() -> Path:
    """The real dataset, or a failure that says how to get it (never a skip: CI must run these)."""
    for _, path in data.candidates(None):
        if path is not None and data.has_dataset(path, data.CHECKSUMS):
            return path
    pytest.fail(
        "these tests need the real Fashion-MNIST: `sudo apt-get install dataset-fashion-mnist` "
        "(or set FMAE_DATA_DIR); deselect them with -m 'not dataset'"
        + (" [CI=true]" if os.environ.get("CI") == "true" else "")
    )


@pytest.fixture(scope="session")
def real_data():
    return data.load(real_data_dir())


@pytest.fixture(scope="session")
def small_real(real_data):
    """A small real subset: 2000 training and 500 test images."""
    return real_data.subset(2000, 500)


def installed_env(**extra: str) -> dict[str, str]:
    """The environment for running the installed `fmae`: its bin directory first on PATH
    (pyenv shims may not know a console script installed a moment ago)."""
    import shutil
    import sys

    # a virtual environment's bin first (its python is a link to one outside it), then the interpreter's own
    bin_dirs = dict.fromkeys([str(Path(sys.executable).parent), str(Path(sys.executable).resolve().parent)])
    env = {**os.environ, "PATH": os.pathsep.join([*bin_dirs, os.environ.get("PATH", "")]), **extra}
    assert shutil.which("fmae", path=env["PATH"]), "fmae is not installed: pip install -e '.[test]'"
    return env
