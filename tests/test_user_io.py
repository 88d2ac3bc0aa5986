"""User images and stdout (issue 10): images sized from their headers, 16-bit PNGs scaled, a
closed or full stdout named, and no escape codes unless asked for."""

import os
import pty

import numpy as np
import pytest

from fmae.cli import ui
from fmae.errors import DataError, FmaeError
from fmae.images import read_user_images

# ---------------------------------------------------------------- 5: images


def test_a_16_bit_png_is_scaled_not_clipped(tmp_path):
    from PIL import Image

    ramp = np.linspace(0, 65535, 784).reshape(28, 28).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    values = read_user_images(tmp_path / "g16.png")
    assert abs(float(values.mean()) - 0.5) < 0.01 and float((values > 0.99).float().mean()) < 0.02


def png_header(width: int, height: int, depth: int, colour: int) -> bytes:
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("name,content", [
    ("bomb.png", png_header(100_000, 100_000, 8, 0)),
    ("rgba16.png", png_header(12_000, 12_000, 16, 6)),
])
def test_huge_images_are_refused_by_their_header(tmp_path, monkeypatch, name, content):
    from PIL import Image

    (tmp_path / name).write_bytes(content)
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("decoded the pixels"))
    with pytest.raises(DataError, match=name):
        read_user_images(tmp_path / name)


def test_an_npy_declaring_an_absurd_shape_is_refused_by_its_header(tmp_path, monkeypatch):
    with open(tmp_path / "x.npy", "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (10**12, 784)})
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("read the array"))
    with pytest.raises(DataError, match=r"x\.npy: header declares shape"):
        read_user_images(tmp_path / "x.npy")


# ---------------------------------------------------------------- 8, 10: stdout and colours


def test_stdout_full_or_closed_is_one_error_line(monkeypatch):
    full = os.fdopen(os.open("/dev/full", os.O_WRONLY), "w")
    monkeypatch.setattr("sys.stdout", full)
    with pytest.raises(FmaeError, match="cannot write the results to stdout: No space left"):
        ui.print_json({"a": 1})
    with pytest.raises(OSError):
        full.close()  # what was not written is still buffered: the device is full indeed
    monkeypatch.setattr("sys.stdout", None)
    with pytest.raises(FmaeError, match="stdout is closed"):
        ui.print_table("t", ["a"], [[1]])


def written(monkeypatch, stream: str, fds: tuple[int, int], action, **env: str) -> str:
    """What `action()` writes to sys.<stream> when that is the write end of `fds` (a pty or a pipe),
    under the colour settings in `env` (NO_COLOR and FORCE_COLOR unset unless named there)."""
    for name in ("NO_COLOR", "FORCE_COLOR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    read_end, write_end = fds
    with os.fdopen(write_end, "w") as out:
        monkeypatch.setattr(f"sys.{stream}", out)
        action()
    text = os.read(read_end, 65536).decode()
    os.close(read_end)
    return text


def test_no_color_on_a_terminal_writes_no_escape_codes(monkeypatch):
    out = written(monkeypatch, "stdout", pty.openpty(),
                  lambda: ui.print_table("fmae sweep", ["rank", "status"], [["*1", "completed"]], highlight_row=0),
                  NO_COLOR="1", TERM="xterm-256color")
    assert "completed" in out and "\x1b[" not in out


def test_force_color_into_a_pipe_gives_plain_lines_not_a_live_bar(monkeypatch):
    def one_epoch() -> None:
        with ui.Feedback() as feedback:
            assert feedback.mode == "plain"
            feedback.task("epochs", "epochs", 2)
            feedback.advance("epochs", 1, 2, "info", "epoch 1/2")

    assert written(monkeypatch, "stderr", os.pipe(), one_epoch, FORCE_COLOR="1") == "epoch 1/2\n"


FULL = "cannot write the results to stdout: No space left on device"


def run_into(args: list[str], where: str, cwd=None, **env: str):
    """`fmae *args` with stdout on /dev/full ("full") or closed ("closed"), stderr captured, in the
    environment a user's shell gives (no PYTHONUNBUFFERED: stdout block-buffered, flushed at exit)."""
    import subprocess

    from tests.helpers import installed_env

    full = os.open("/dev/full", os.O_WRONLY)
    try:
        return subprocess.run(["fmae", *args], env=installed_env(**env), stderr=subprocess.PIPE, text=True, cwd=cwd,
                              stdout=full if where == "full" else None,
                              preexec_fn=(lambda: os.close(1)) if where == "closed" else None, timeout=120)
    finally:
        os.close(full)


def assert_one_stdout_error(done, needle: str = FULL) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and needle in lines[0] and "(hint: " in lines[0], done.stderr
    assert "Exception ignored" not in done.stderr


@pytest.mark.parametrize("where,needle", [("full", FULL), ("closed", "stdout is closed")])
def test_the_cli_names_a_full_or_closed_stdout(where, needle):
    assert "PYTHONUNBUFFERED" not in __import__("tests.helpers").helpers.installed_env()
    assert_one_stdout_error(run_into(["--version"], where), needle)


@pytest.mark.parametrize("args", [["--help"], ["sweep", "--help"], ["train", "--help"], []])
def test_help_into_a_full_stdout_is_one_error_line(args):
    """typer prints the help itself, before any command runs: it is flushed inside the error boundary
    too (it used to fail at the interpreter's exit: "Exception ignored", exit 120)."""
    assert_one_stdout_error(run_into(args, "full"))


def test_a_full_stderr_still_gives_the_exit_code(tmp_path):
    import subprocess

    from tests.helpers import installed_env

    with open("/dev/full", "w") as full:
        done = subprocess.run(["fmae", "train", "--bogus"], env=installed_env(), stderr=full,
                              stdout=subprocess.PIPE, timeout=60)
    assert done.returncode == 2 and done.stdout == b""


@pytest.mark.dataset
def test_train_and_eval_json_into_a_full_stdout_are_one_error_line(tmp_path, real_data_dir):
    data = {"FMAE_DATA_DIR": str(real_data_dir)}
    done = run_into(["train", "--hidden", "8", "--epochs", "1", "--run-dir", "r", "--json", "-q"], "full",
                    cwd=tmp_path, **data)
    assert_one_stdout_error(done)
    assert (tmp_path / "r" / "model.pt").is_file()  # it trained, then found stdout full
    assert_one_stdout_error(run_into(["eval", "--ckpt", "r/model.pt", "--json", "-q"], "full",
                                     cwd=tmp_path, **data))
