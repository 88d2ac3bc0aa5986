"""The user's own images for `fmae denoise --input`: .png or .npy in, [N, 784] floats in [0, 1] out.

Sizes are checked from the file's header before anything is decoded: a small file declaring
huge dimensions (a decompression bomb, an absurd .npy shape) is refused without allocating.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fmae.errors import DataError

if TYPE_CHECKING:
    import torch

MAX_IMAGES = 100_000  # side by side in a PNG: 2.8 million pixels wide
SIZE_HINT = "expected 28x28, or several 28x28 images side by side (width a multiple of 28)"
SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # greyscale PNGs of 16 bits per pixel
EIGHT_BIT = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr")  # each channel 0..255


def read_user_images(path: str | Path) -> torch.Tensor:
    """A user's 28x28 greyscale images as float [N, 784] in [0, 1].

    PNG: one image, or several side by side (height 28, width a multiple of 28), of any bit
    depth (16-bit greyscale is scaled by 65535, colour is converted to luminance).
    .npy: shape (28, 28), (N, 28, 28) or (N, 784); uint8 (0..255) or float in [0, 1].
    """
    import numpy as np
    import torch

    path = Path(path)
    if path.is_dir() or not path.exists():
        raise DataError(f"--input {path}: no such file", "pass a .png or .npy file")
    suffix = path.suffix.lower()
    try:
        if suffix == ".png":
            arr = _read_png(path)
        elif suffix == ".npy":
            _check_npy_header(path)
            arr = np.load(path, allow_pickle=False)
        else:
            raise DataError(f"--input {path}: unknown format {suffix or '(none)'}", "pass a .png or .npy file")
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise DataError(f"--input {path}: unreadable ({exc})", "pass a .png or .npy file") from None
    if arr.ndim == 2 and arr.shape == (28, 28):
        arr = arr[None]
    if arr.ndim == 3 and arr.shape[1:] == (28, 28):
        arr = arr.reshape(arr.shape[0], 784)
    if arr.ndim != 2 or arr.shape[1] != 784 or arr.shape[0] == 0:
        raise DataError(f"--input {path}: shape {tuple(arr.shape)} is not 28x28 images",
                        "expected (28, 28), (N, 28, 28) or (N, 784)")
    if arr.dtype == np.uint8:
        return torch.from_numpy(arr.astype(np.float32) / 255.0)
    if arr.dtype.kind != "f":
        raise DataError(f"--input {path}: dtype {arr.dtype}", "expected uint8 (0..255) or float in [0, 1]")
    values = torch.from_numpy(arr.astype(np.float32))
    if not torch.isfinite(values).all() or values.min() < 0 or values.max() > 1:
        raise DataError(f"--input {path}: float values outside [0, 1]", "scale the images to [0, 1]")
    return values


def _read_png(path: Path):  # -> np.ndarray [N, 28, 28], uint8 or float in [0, 1]
    import warnings

    import numpy as np
    from PIL import Image

    try:
        with warnings.catch_warnings():  # the size is checked below, before decoding
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)  # reads the header only
    except Image.DecompressionBombError as exc:
        raise DataError(f"--input {path}: refused: {exc}", SIZE_HINT) from None
    with img:
        if img.format != "PNG":
            raise DataError(f"--input {path}: not a PNG file ({img.format})", "pass a .png or .npy file")
        width, height = img.size
        if height != 28 or width % 28 or width > 28 * MAX_IMAGES:
            raise DataError(f"--input {path}: image is {width}x{height} pixels", SIZE_HINT)
        if img.mode in SIXTEEN_BIT:
            values = np.asarray(img).astype(np.float64)
            if values.min() < 0 or values.max() > 65535:
                raise DataError(f"--input {path}: pixel values outside 0..65535", "save it as an 8 or 16-bit PNG")
            arr = (values / 65535.0).astype(np.float32)
        elif img.mode in EIGHT_BIT:
            arr = np.asarray(img.convert("L"))
        else:
            raise DataError(f"--input {path}: unsupported PNG pixel mode {img.mode}",
                            "save it as an 8 or 16-bit greyscale or colour PNG")
    return arr.reshape(28, -1, 28).transpose(1, 0, 2)


def _check_npy_header(path: Path) -> None:
    """The shape and dtype a .npy declares must be 28x28 images that the file's size can hold."""
    import numpy as np

    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _fortran, dtype = read(fh)  # the header only: nothing is allocated
        offset = fh.tell()
    size = path.stat().st_size - offset
    count = 1
    for dim in shape:
        count *= dim
    if not (shape in ((28, 28),) or (len(shape) == 3 and shape[1:] == (28, 28))
            or (len(shape) == 2 and shape[1] == 784)):
        raise DataError(f"--input {path}: shape {tuple(shape)} is not 28x28 images",
                        "expected (28, 28), (N, 28, 28) or (N, 784)")
    if dtype.hasobject or count * dtype.itemsize > size:
        raise DataError(f"--input {path}: header declares shape {tuple(shape)} of {dtype} "
                        f"({count * dtype.itemsize} bytes) but the file holds {size}",
                        "the file is truncated or not a plain array: save it again with numpy.save")


def encode_user_images(images: torch.Tensor, suffix: str) -> bytes:
    """Images [N, 784] in [0, 1] as .npy (float32, N x 28 x 28) or .png (side by side) bytes."""
    import io

    import numpy as np

    arr = images.detach().cpu().float().clamp(0, 1).reshape(-1, 28, 28).numpy()
    buffer = io.BytesIO()
    if suffix == ".npy":
        np.save(buffer, arr.astype(np.float32))
    elif suffix == ".png":
        from PIL import Image

        strip = (arr.transpose(1, 0, 2).reshape(28, -1) * 255).round().astype(np.uint8)
        Image.fromarray(strip, mode="L").save(buffer, format="PNG")
    else:
        raise DataError(f"--output: unknown format {suffix or '(none)'}", "use a .png or .npy file name")
    return buffer.getvalue()
