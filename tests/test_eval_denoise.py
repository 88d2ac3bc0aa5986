"""`fmae eval` and `fmae denoise` through CliRunner on the tiny synthetic dataset."""

import json

import numpy as np
import pytest

from tests.helpers import Recorder, cli, metrics_losses, tiny


@pytest.fixture
def ckpts(fake_dataset, tmp_path):
    a, s = tmp_path / "a", tmp_path / "s"
    assert cli("train", *tiny(), "--run-dir", a).exit_code == 0
    assert cli("train", *tiny(), "--optim", "sgd", "--run-dir", s).exit_code == 0
    return a / "model.pt", s / "model.pt"


def test_eval_json_mse_equals_training_log(ckpts):
    result = cli("eval", "--ckpt", *ckpts, "--baseline", "pca", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["schema_version"] == 1 and doc["split"] == "test" and doc["images"] == 16
    assert [c["checkpoint"] for c in doc["checkpoints"]] == [str(p) for p in ckpts]
    for c in doc["checkpoints"]:
        assert abs(c["mse"] - c["recorded_test_loss"]) <= 1e-6
        assert c["psnr"] > 0 and 0 < c["ssim"] <= 1 and c["pca_mse"] >= 0
        assert set(c["per_class_mse"]) >= {"T-shirt/top", "Ankle boot"}


def test_eval_table_has_one_column_per_checkpoint(ckpts):
    result = cli("eval", "--ckpt", *ckpts, "--split", "train")
    assert result.exit_code == 0
    header = result.stdout.splitlines()[2]
    assert "a" in header and "s" in header and "PSNR (dB)" in result.stdout and "MSE Trouser" in result.stdout


def test_run_eval_and_run_denoise_print_nothing_and_report_through_progress(ckpts, tmp_path, capsys):
    """The library calls behind `fmae eval` and `fmae denoise`: a document back, lines through the one
    progress object (entered once), nothing on stdout or stderr."""
    from fmae.config import DenoiseConfig
    from fmae.denoise_run import run_denoise
    from fmae.eval_run import run_eval
    from fmae.settings import EvalSettings

    capsys.readouterr()
    progress = Recorder()
    doc = run_eval(EvalSettings(ckpts, baseline="pca"), progress)
    assert [c["checkpoint"] for c in doc["checkpoints"]] == [str(p) for p in ckpts]
    assert all(c["pca_mse"] >= 0 for c in doc["checkpoints"]) and doc["images"] == 16
    assert progress.lines[-1] == "fitting PCA on the training set" and (progress.entered, progress.left) == (1, 1)
    progress, curve = Recorder(), tmp_path / "curve.png"
    doc = run_denoise(DenoiseConfig(sigmas=(0.25, 0.5), curve=curve, ckpts=ckpts), progress)
    assert len(doc["results"]) == 4 and doc["figures"] == {"curve": str(curve)} and curve.stat().st_size > 0
    assert progress.lines[-1] == f"wrote {curve}" and (progress.entered, progress.left) == (1, 1)
    assert capsys.readouterr() == ("", "")


def test_denoise_exactly_as_written_and_json(ckpts, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "best.pt").write_bytes(ckpts[0].read_bytes())
    result = cli("denoise", "--ckpt", "best.pt", "--sigma", "0.5")
    assert result.exit_code == 0, result.stderr
    assert "noisy PSNR" in result.stdout
    result = cli("denoise", "--ckpt", *ckpts, "--sigma", "0.25", "0.5", "--noise", "gaussian", "--json")
    doc = json.loads(result.stdout)
    assert doc["schema_version"] == 1 and doc["noise"] == "gaussian" and len(doc["results"]) == 4
    r = doc["results"][0]
    assert set(r) >= {"checkpoint", "sigma", "noisy", "output", "gain"}
    assert r["gain"]["psnr"] == pytest.approx(r["output"]["psnr"] - r["noisy"]["psnr"])
    # both checkpoints saw the very same noisy images
    by_sigma = {}
    for row in doc["results"]:
        by_sigma.setdefault(row["sigma"], set()).add(json.dumps(row["noisy"]))
    assert all(len(v) == 1 for v in by_sigma.values())


def test_denoise_same_seed_same_numbers(ckpts):
    a = json.loads(cli("denoise", "--ckpt", ckpts[0], "--seed", "3", "--json").stdout)
    b = json.loads(cli("denoise", "--ckpt", ckpts[0], "--seed", "3", "--json").stdout)
    c = json.loads(cli("denoise", "--ckpt", ckpts[0], "--seed", "4", "--json").stdout)
    assert a["results"] == b["results"] and a["results"] != c["results"]


def test_denoise_figures(ckpts, tmp_path):
    out, curve = tmp_path / "fig4.png", tmp_path / "curve.svg"
    result = cli("denoise", "--ckpt", *ckpts, "--sigma", "0.25", "0.5", "--out", out, "--curve", curve,
                 "--examples", "3", "--json")
    assert result.exit_code == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    assert curve.read_text().lstrip().startswith("<?xml")
    first = out.read_bytes()
    assert cli("denoise", "--ckpt", *ckpts, "--sigma", "0.25", "0.5", "--out", out, "--examples", "3").exit_code == 0
    assert out.read_bytes() == first  # deterministic bytes
    assert cli("denoise", "--ckpt", ckpts[0], "--out", out, "--index", "0", "5", "15").exit_code == 0
    bad = cli("denoise", "--ckpt", ckpts[0], "--out", out, "--index", "99")
    assert bad.exit_code == 2 and "outside" in bad.stderr


def test_denoise_user_images(ckpts, tmp_path):
    arr = (np.random.default_rng(0).random((3, 28, 28)) * 255).astype(np.uint8)
    np.save(tmp_path / "mine.npy", arr)
    result = cli("denoise", "--ckpt", ckpts[0], "--input", tmp_path / "mine.npy", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    out = np.load(doc["output"])
    assert doc["images"] == 3 and out.shape == (3, 28, 28) and out.dtype == np.float32
    assert doc["output"].endswith("mine.denoised.npy")
    from PIL import Image

    Image.fromarray(np.concatenate(list(arr), axis=1)).save(tmp_path / "strip.png")
    result = cli("denoise", "--ckpt", ckpts[0], "--input", tmp_path / "strip.png", "--output", tmp_path / "o.png")
    assert result.exit_code == 0 and Image.open(tmp_path / "o.png").size == (84, 28)


@pytest.mark.parametrize("make,needle", [
    (lambda p: np.save(p / "x.npy", np.zeros((2, 27, 27), np.uint8)), "shape (2, 27, 27) is not 28x28"),
    (lambda p: np.save(p / "x.npy", np.full((28, 28), 3.0)), "outside [0, 1]"),
    (lambda p: np.save(p / "x.npy", np.zeros((28, 28), np.int64)), "dtype int64"),
    (lambda p: (p / "x.npy").write_bytes(b"junk"), "unreadable"),
])
def test_denoise_bad_input_files(ckpts, tmp_path, make, needle):
    make(tmp_path)
    result = cli("denoise", "--ckpt", ckpts[0], "--input", tmp_path / "x.npy")
    assert result.exit_code == 1 and needle in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize("args,code,needle", [
    (["--sigma", "-0.5"], 2, "sigma must be >= 0"),
    (["--noise", "salt-pepper", "--sigma", "2"], 2, "at most 1"),
    (["--limit", "0"], 2, "limit must be >= 1"),
    (["--out", "fig.gif"], 2, "unknown figure format"),
])
def test_denoise_bad_values(ckpts, args, code, needle):
    result = cli("denoise", "--ckpt", ckpts[0], *args)
    assert result.exit_code == code and needle in result.stderr


def test_missing_directory_and_foreign_checkpoints(fake_dataset, tmp_path):
    for cmd in ("eval", "denoise"):
        result = cli(cmd, "--ckpt", tmp_path / "nope.pt")
        assert result.exit_code == 1 and "does not exist" in result.stderr
        result = cli(cmd, "--ckpt", tmp_path)
        assert result.exit_code == 1 and "holds no model.pt or best.pt" in result.stderr
        (tmp_path / "foreign.pt").write_bytes(b"not a checkpoint")
        result = cli(cmd, "--ckpt", tmp_path / "foreign.pt")
        assert result.exit_code == 1 and "error:" in result.stderr and "Traceback" not in result.output
    assert cli("eval").exit_code == 2


def test_denoising_autoencoder_trains_and_resumes(fake_dataset, tmp_path):
    args = ["--hidden", "8", "--batch-size", "16", "--noise", "image-gaussian", "--noise-sigma", "0.5", "-q"]
    full, part = tmp_path / "full", tmp_path / "part"
    assert cli("train", *args, "--epochs", "3", "--run-dir", full).exit_code == 0
    assert cli("train", *args, "--epochs", "1", "--run-dir", part).exit_code == 0
    assert cli("train", *args, "--epochs", "3", "--run-dir", part, "--resume").exit_code == 0
    assert metrics_losses(full / "metrics.csv") == metrics_losses(part / "metrics.csv")
    cfg = json.loads((full / "config.json").read_text())["config"]
    assert cfg["noise"] == {"kind": "image-gaussian", "sigma": 0.5}


LOADED_BY = """
import json, runpy, sys
from fmae import data
data.CHECKSUMS = json.loads(sys.argv[1])
sys.argv = ["fmae", *sys.argv[2:]]
try:
    runpy.run_module("fmae", run_name="__main__")
except SystemExit as exit:
    assert not exit.code, exit.code
print(json.dumps(sorted(m for m in sys.modules if m.startswith("fmae"))))
"""


@pytest.mark.parametrize("command", [["eval", "--json"], ["denoise", "--json"], ["plot", "--kind", "recon"]])
def test_eval_denoise_and_plot_load_no_training_code(ckpts, tmp_path, command):
    """They need a device (fmae.device), checkpoints and data: no engine (fmae.training, fmae.engine). fmae.optim
    loads with fmae.config as the optimizers' vocabulary (torch-free at import); no optimizer is built."""
    import subprocess
    import sys

    from fmae import data

    args = [*command, "--ckpt", *map(str, ckpts)] if command[0] != "plot" else \
        [command[0], str(ckpts[0].parent), *command[1:], "--out", str(tmp_path)]
    out = subprocess.run([sys.executable, "-c", LOADED_BY, json.dumps(data.CHECKSUMS), *args],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout.splitlines()[-1])
    assert "fmae.device" in loaded and "fmae.checkpoints" in loaded
    assert not [m for m in loaded if m.startswith("fmae.training") or m == "fmae.engine"], loaded
