"""Every option of every command with invalid values: exit code, one `error:` line, no traceback,
and no file created or changed. The number of cases is recorded in the README."""

import hashlib
import os
from pathlib import Path

import pytest
import torch

from tests.helpers import cli, tiny

BAD_INT = ["-1", "nan", "inf", "1.5", "abc", "", "99999999999999999999999"]
BAD_POSITIVE_INT = ["0", *BAD_INT]
BAD_FLOAT = ["nan", "inf", "-inf", "abc", ""]
BAD_POSITIVE_FLOAT = ["0", "-0.1", *BAD_FLOAT]

TRAINING = {  # option -> invalid values, shared by train and sweep
    "--hidden": BAD_POSITIVE_INT,
    "--epochs": BAD_POSITIVE_INT,
    "--batch-size": BAD_POSITIVE_INT,
    "--seed": BAD_INT,
    "--patience": BAD_INT,
    "--lr": BAD_POSITIVE_FLOAT + ["1e400"],
    "--dropout": ["1", "1.5", "-0.1", *BAD_FLOAT],
    "--momentum": ["1", "-0.5", *BAD_FLOAT],
    "--min-delta": ["-0.1", *BAD_FLOAT],
    "--noise-sigma": ["-1", *BAD_FLOAT],
    "--optim": ["rmsprop", ""],
    "--activation": ["tanh", ""],
    "--precision": ["fp16", ""],
    "--device": ["tpu", ""],
    "--noise": ["poisson", ""],
}
CASES = [("train", opt, v) for opt, vals in TRAINING.items() for v in vals]
CASES += [("sweep", opt, v) for opt, vals in TRAINING.items() for v in vals]
CASES += [("sweep", "--lr", "0.1 0.1"), ("sweep", "--hidden", "64 64"), ("sweep", "--seed", "0 0"),
          ("sweep", "--optim", "sgd sgd"), ("sweep", "--lr", "0.1,,0.01"), ("sweep", "--hidden", "8 -8"),
          ("sweep", "--prune", "median"), ("sweep", "--prune", ""), ("sweep", "--prune", "halving --eta 1"),
          ("sweep", "--prune", "halving --eta x"), ("sweep", "--prune", "halving --min-epochs 0"),
          ("sweep", "--prune", "halving --min-epochs 101"), ("sweep", "--eta", "3")]
DENOISE = {
    "--sigma": ["-1", *BAD_FLOAT, "0.5 -0.5"],
    "--limit": ["0", "-3", "abc"],
    "--examples": ["0", "-1", "x"],
    "--index": ["-1", "99999", "a"],
    "--seed": ["-1", "x"],
    "--noise": ["poisson"],
    "--out": ["fig.gif", "fig"],
    "--curve": ["curve.jpg"],
    "--device": ["tpu"],
}
CASES += [("denoise", opt, v) for opt, vals in DENOISE.items() for v in vals]
CASES += [("eval", "--split", "validation"), ("eval", "--baseline", "svd"), ("eval", "--device", "tpu")]
CASES += [("plot", "--kind", "pie"), ("plot", "--format", "gif"), ("plot", "--examples", "0"),
          ("plot", "--examples", "x")]
N_CASES = len(CASES)


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def shared_workspace(tmp_path_factory):
    """A finished run and a sweep on the tiny dataset, made once for the module."""
    from tests.helpers import write_dataset

    root = tmp_path_factory.mktemp("ws")
    sums = write_dataset(root / "tiny")
    with pytest.MonkeyPatch.context() as mp:
        from fmae import data

        mp.setattr(data, "CHECKSUMS", sums)
        mp.setenv("FMAE_DATA_DIR", str(root / "tiny"))
        mp.chdir(root)
        assert cli("train", *tiny(1, hidden=4), "--run-dir", "r").exit_code == 0
        assert cli("sweep", *tiny(1, hidden=4), "--lr", "0.01", "--run-dir", "s").exit_code == 0
    return root, sums


@pytest.fixture
def workspace(shared_workspace, monkeypatch):
    """The shared workspace as the working directory and the dataset fmae finds."""
    from fmae import data

    root, sums = shared_workspace
    monkeypatch.setattr(data, "CHECKSUMS", sums)
    monkeypatch.setenv("FMAE_DATA_DIR", str(root / "tiny"))
    monkeypatch.chdir(root)
    return root


@pytest.fixture
def own_workspace(shared_workspace, tmp_path, monkeypatch):
    """A private copy, for tests that write."""
    import shutil

    from fmae import data

    root, sums = shared_workspace
    shutil.copytree(root, tmp_path / "ws")
    monkeypatch.setattr(data, "CHECKSUMS", sums)
    monkeypatch.setenv("FMAE_DATA_DIR", str(tmp_path / "ws" / "tiny"))
    monkeypatch.chdir(tmp_path / "ws")
    return tmp_path / "ws"


@pytest.mark.parametrize("command,option,value", CASES, ids=[f"{c} {o} {v!r}" for c, o, v in CASES])
def test_invalid_value(workspace, command, option, value):
    before = snapshot(workspace)  # the shared workspace: a test that wrote anything would fail here
    values = value.split(" ") if command in ("sweep", "denoise") and " " in value else [value]
    if command == "train":
        args = ["train", "--run-dir", "r", option, *values]
    elif command == "sweep":
        args = ["sweep", "--run-dir", "s", option, *values]
    elif command in ("eval", "denoise"):
        args = [command, "--ckpt", "r/model.pt", option, *values]
    else:
        args = ["plot", "s", "--out", "figs", option, *values]
    result = cli(*args)
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "(hint: " in lines[0], result.stderr  # every value error says what to do
    assert "Traceback" not in result.output and result.stdout == ""
    assert snapshot(workspace) == before


@pytest.mark.parametrize("args,needle", [
    (["eval", "--ckpt", "missing.pt"], "does not exist"),
    (["eval", "--ckpt", "tiny"], "holds no model.pt or best.pt"),  # a run or sweep directory is taken (issue 31)
    (["denoise", "--ckpt", "r/config.json"], "not a torch checkpoint"),
    (["denoise", "--ckpt", "r/last.pt"], "expected 'model'"),
    (["denoise", "--ckpt", "r/model.pt", "--input", "nope.png"], "no such file"),
    (["plot", "nowhere"], "neither a training run nor a sweep"),
    (["train", "--run-dir", "s"], "is a sweep directory"),
    (["train", "--run-dir", "r"], "already holds a run"),
    (["train", "--run-dir", "r/config.json/x"], "cannot write"),
    (["sweep", "--run-dir", "r"], "holds a training run"),
    (["sweep", "--run-dir", "s", "--epochs", "1", "--lr", "0.01", "--hidden", "4", "--batch-size", "8"],
     "other shared settings"),
])
def test_runtime_failures_exit_1(workspace, args, needle):
    before = snapshot(workspace)
    result = cli(*args)
    assert result.exit_code == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.output
    assert "(hint: " in lines[0], result.stderr
    assert snapshot(workspace) == before


def test_hostile_checkpoint_refused_by_every_loader(own_workspace):
    workspace = own_workspace
    marker = workspace / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"format": "fmae-checkpoint", "version": 1, "kind": "model", "x": Payload()}, workspace / "evil.pt")
    for args in (["eval", "--ckpt", "evil.pt"], ["denoise", "--ckpt", "evil.pt"],
                 ["denoise", "--ckpt", "evil.pt", "--input", "x.npy"]):
        result = cli(*args)
        assert result.exit_code == 1 and "refused" in result.stderr, result.stderr
    # as the resume state of a run
    (workspace / "r" / "last.pt").write_bytes((workspace / "evil.pt").read_bytes())
    result = cli("train", *tiny(hidden=4, quiet=False), "--run-dir", "r", "--resume")
    assert result.exit_code == 1 and "refused" in result.stderr
    assert not marker.exists()


def test_paths_with_spaces_and_unicode(own_workspace):
    target = "runs/my run ñ/ü ß"
    result = cli("train", *tiny(1, hidden=4), "--run-dir", target)
    assert result.exit_code == 0, result.stderr
    assert cli("eval", "--ckpt", f"{target}/model.pt", "--json").exit_code == 0


def test_full_disk_keeps_every_earlier_file(own_workspace, monkeypatch):
    workspace = own_workspace
    before = snapshot(workspace)

    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    result = cli("train", *tiny(hidden=4), "--run-dir", "r", "--resume")
    assert result.exit_code == 1 and "No space left on device" in result.stderr
    after = snapshot(workspace)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing written before was lost
    assert not [k for k in after if k.endswith(".tmp")]


def test_unwritable_directory(own_workspace, monkeypatch):
    import tempfile

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    result = cli("train", *tiny(1, hidden=4), "--run-dir", "new")
    assert result.exit_code == 1 and "Permission denied" in result.stderr and "hint:" in result.stderr


def test_case_count_is_in_the_docs():
    reliability = (Path(__file__).resolve().parent.parent / "docs" / "reliability.md").read_text()
    assert f"{N_CASES} invalid-value cases" in reliability
