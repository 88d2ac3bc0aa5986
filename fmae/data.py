"""Find, verify and load Fashion-MNIST as uint8 tensors on a device.

No per-sample Python work: the IDX files are parsed whole, checked, and kept as one uint8
tensor per split; the engine turns minibatches into floats on the fly.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import sys
import tempfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fmae.errors import DataError

if TYPE_CHECKING:
    import torch

# SHA-256 of the decompressed IDX files (Debian's gzip files differ byte-wise from upstream's).
CHECKSUMS: Mapping[str, str] = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
ENV_VAR = "FMAE_DATA_DIR"
INSTALL_HINT = (
    "install it with `sudo apt-get install dataset-fashion-mnist`, "
    "or let fmae download it (drop --no-download; needs internet)"
)
_IMAGE_MAGIC, _LABEL_MAGIC = 0x00000803, 0x00000801

Fetch = Callable[[str, str, str], None]


@dataclass(frozen=True)
class FashionMNIST:
    """The four arrays of the dataset: images as uint8 [N, 784], labels as int64 [N].

    A split that was not loaded (`load(splits=("test",))`) is None, so using it fails loudly.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    source: str
    sha256: Mapping[str, str]

    def to(self, device: torch.device | str) -> FashionMNIST:
        arrays = (self.train_images, self.train_labels, self.test_images, self.test_labels)
        return FashionMNIST(*(None if a is None else a.to(device) for a in arrays), self.source, self.sha256)

    def subset(self, n_train: int, n_test: int) -> FashionMNIST:
        """The first images of each split: small real data for quick runs and tests."""
        arrays = ((self.train_images, n_train), (self.train_labels, n_train), (self.test_images, n_test),
                  (self.test_labels, n_test))
        return FashionMNIST(*(None if a is None else a[:n] for a, n in arrays), self.source, self.sha256)


def user_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("XDG_CACHE_HOME"):
        base = Path(env["XDG_CACHE_HOME"])
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path.home() / ".cache"
    return base / "fmae" / "fashion-mnist"


def candidates(
    data_dir: str | Path | None, environ: Mapping[str, str] | None = None, system_dir: Path | None = None
) -> list[tuple[str, Path | None]]:
    """The places fmae looks, in order, each with a label for messages."""
    env = os.environ if environ is None else environ
    return [
        ("--data-dir", Path(data_dir) if data_dir else None),
        (f"${ENV_VAR}", Path(env[ENV_VAR]) if env.get(ENV_VAR) else None),
        ("cache", user_cache_dir(env)),
        ("system", system_dir or SYSTEM_DIR),
    ]


def _file_in(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def has_dataset(directory: Path, names: Mapping[str, str | None]) -> bool:
    return directory.is_dir() and all(_file_in(directory, stem) for stem in names)


def locate(
    data_dir: str | Path | None = None,
    *,
    download: bool = True,
    environ: Mapping[str, str] | None = None,
    fetch: Fetch | None = None,
    checksums: Mapping[str, str | None] | None = None,
    system_dir: Path | None = None,
) -> Path:
    """The first place that holds all four files; else a download into the cache."""
    checksums = CHECKSUMS if checksums is None else checksums
    if data_dir is not None:  # a path the user typed is used or refused, never passed over
        return _explicit_dir(Path(data_dir), checksums)
    places = candidates(data_dir, environ, system_dir)
    for _, path in places:
        if path is not None and has_dataset(path, checksums):
            return path
    looked = ", ".join(f"{label} {path}" if path else f"{label} (not set)" for label, path in places)
    if not download:
        raise DataError(f"Fashion-MNIST not found; looked in: {looked}; download disabled", INSTALL_HINT)
    cache = places[2][1]
    assert cache is not None
    return fetch_dataset(cache, fetch=fetch, checksums=checksums, looked=looked)


def _explicit_dir(path: Path, names: Mapping[str, str | None]) -> Path:
    hint = "point --data-dir at the directory holding the four files, or leave it out to use the usual places"
    if not path.exists():
        raise DataError(f"--data-dir {path}: no such directory", hint)
    if not path.is_dir():
        raise DataError(f"--data-dir {path}: not a directory", hint)
    missing = [f"{stem}[.gz]" for stem in names if _file_in(path, stem) is None]
    if missing:
        raise DataError(f"--data-dir {path}: missing {', '.join(missing)}", hint)
    return path


def fetch_dataset(
    dest: Path,
    *,
    fetch: Fetch | None = None,
    mirrors: tuple[str, ...] | None = None,
    checksums: Mapping[str, str | None] | None = None,
    looked: str = "",
) -> Path:
    """Download the four files through torchvision's downloader, verify them, move them in place."""
    checksums = CHECKSUMS if checksums is None else checksums
    if fetch is None or mirrors is None:
        from torchvision.datasets import FashionMNIST as TV
        from torchvision.datasets.utils import download_url

        fetch = fetch or (lambda url, root, filename: download_url(url, root, filename))
        mirrors = mirrors or tuple(TV.mirrors)
    try:
        dest.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=dest))
    except OSError as exc:
        raise DataError(f"cannot create the dataset cache {dest}: {exc.strerror}", INSTALL_HINT) from None
    try:
        for stem in checksums:
            name = stem + ".gz"
            errors = []
            for mirror in mirrors:
                try:
                    fetch(mirror.rstrip("/") + "/" + name, str(tmp), name)
                    break
                except Exception as exc:  # noqa: BLE001 - any failure of one mirror means: try the next
                    errors.append(f"{mirror}: {exc}")
            else:
                where = f" (looked in: {looked})" if looked else ""
                raise DataError(
                    f"Fashion-MNIST not found{where} and the download of {name} failed: {'; '.join(errors)}",
                    INSTALL_HINT,
                )
            _verify(tmp / name, stem, _read_bytes(tmp / name), checksums)
        for stem in checksums:
            os.replace(tmp / (stem + ".gz"), dest / (stem + ".gz"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            return gzip.decompress(path.read_bytes())  # one zlib call: faster than reading a GzipFile
        return path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"{path}: corrupted or truncated gzip file ({exc})", "delete it and fetch it again") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _verify(path: Path, stem: str, raw: bytes, checksums: Mapping[str, str | None]) -> str:
    digest = hashlib.sha256(raw).hexdigest()
    expected = checksums.get(stem)
    if expected is not None and digest != expected:
        raise DataError(
            f"{path}: checksum mismatch (sha256 {digest[:16]}..., expected {expected[:16]}...)",
            "the file is corrupted or not Fashion-MNIST; delete it and fetch it again",
        )
    return digest


def parse_idx(raw: bytes, path: Path | str, *, images: bool) -> tuple[int, bytes]:
    """Check an IDX header and size; returns the item count and the payload."""
    magic, ndim = (_IMAGE_MAGIC, 3) if images else (_LABEL_MAGIC, 1)
    header = 4 + 4 * ndim
    found = int.from_bytes(raw[:4], "big")
    if len(raw) >= 4 and found != magic:
        kind = "images" if images else "labels"
        raise DataError(f"{path}: wrong magic number 0x{found:08x} for {kind}, expected 0x{magic:08x}")
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX file ({len(raw)} bytes, header needs {header})")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if images and dims[1:] != [28, 28]:
        raise DataError(f"{path}: images are {dims[1]}x{dims[2]}, expected 28x28")
    item = 784 if images else 1
    expected = header + dims[0] * item
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "has trailing bytes"
        raise DataError(f"{path}: {what}: {len(raw)} bytes, header says {dims[0]} items ({expected} bytes)")
    return dims[0], raw[header:]


def load(
    directory: str | Path,
    device: torch.device | str = "cpu",
    *,
    checksums: Mapping[str, str | None] | None = None,
    splits: tuple[str, ...] = ("train", "test"),
) -> FashionMNIST:
    """Read and check the files of `directory` for `splits`; raise DataError naming any bad file.

    The training split is 85% of the bytes to decompress: commands that only read the test
    split (eval, denoise, plot) skip it.
    """
    import torch

    checksums = CHECKSUMS if checksums is None else checksums
    directory = Path(directory)
    arrays: dict[str, torch.Tensor | None] = dict.fromkeys(checksums)
    digests: dict[str, str] = {}
    for stem in checksums:
        if ("train" if stem.startswith("train") else "test") not in splits:
            continue
        path = _file_in(directory, stem)
        if path is None:
            raise DataError(f"{directory}: {stem}[.gz] is missing", INSTALL_HINT)
        raw = _read_bytes(path)
        digests[stem] = _verify(path, stem, raw, checksums)
        images = "images" in stem
        count, payload = parse_idx(raw, path, images=images)
        tensor = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
        arrays[stem] = tensor.view(count, 784) if images else tensor.long()
    train_x, train_y, test_x, test_y = (arrays[s] for s in checksums)
    for x, y, split in ((train_x, train_y, "train"), (test_x, test_y, "test")):
        if x is None or y is None:
            continue
        if x.shape[0] != y.shape[0]:
            raise DataError(f"{directory}: {split} split has {x.shape[0]} images but {y.shape[0]} labels")
        if y.numel() and int(y.max()) > 9:
            raise DataError(f"{directory}: {split} labels out of range 0..9")
    return FashionMNIST(train_x, train_y, test_x, test_y, str(directory), digests).to(device)


def find_and_load(data_dir: str | Path | None, *, download: bool, device: torch.device | str,
                  splits: tuple[str, ...] = ("train", "test"), on_found: Callable[[str], None]) -> FashionMNIST:
    """What every command does: find the dataset (downloading it if allowed), load and check
    `splits`, then say where it came from through `on_found`."""
    directory = locate(data_dir, download=download)
    dataset = load(directory, device, splits=splits)
    on_found(f"data: {directory} (checksums ok)")
    return dataset
