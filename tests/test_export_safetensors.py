"""`fmae export safetensors RUN|CKPT... --to DIR` (docs/options.md#fmae-export): model.safetensors holds the
checkpoint's weights (safetensors.torch.load_file gives them back equal), config.json the
architecture and training config, README.md a model card whose loading code runs in plain PyTorch."""

from __future__ import annotations

import json
import re
import sys

import pytest
import safetensors.torch as safetensors_torch  # the [test] extra installs it: without it these tests fail, never skip
import torch

from fmae.checkpoints import load_model
from tests.helpers import cli, one_error_line, state_dict, tiny


@pytest.fixture
def sweep(fake_dataset, tmp_path):
    done = cli("sweep", "--optim", "sgd", "--lr", "0.1", "0.05", "--hidden", "4", "8", *tiny(2, hidden=None),
               "--run-dir", tmp_path / "s")
    assert done.exit_code == 0, done.stderr
    assert (tmp_path / "s" / "best.pt").is_file()
    return tmp_path / "s"


def test_a_sweeps_best_model_as_safetensors_with_its_card(sweep, tmp_path, monkeypatch):
    result = cli("export", "safetensors", sweep, "--to", tmp_path / "hub", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["tracker"] == "safetensors" and doc["exported"][0]["path"] == str(sweep / "best.pt")
    out = tmp_path / "hub"
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    weights, best = safetensors_torch.load_file(out / "model.safetensors"), state_dict(sweep / "best.pt")
    assert weights.keys() == best.keys() and all(torch.equal(weights[k], best[k]) for k in best)
    config = json.loads((out / "config.json").read_text())
    best_row = json.loads((sweep / "results.json").read_text())["best"]
    assert config["architecture"]["hidden"] == best_row["hidden"] and config["training"]["lr"] == best_row["lr"]
    assert config["metrics"]["final_test_mse"] == pytest.approx(best_row["final_test_loss"])
    assert len(config["provenance"]["checkpoint_sha256"]) == 64 and config["provenance"]["data_sha256"]
    card = (out / "README.md").read_text()
    for section in ("## Data", "## Training settings", "## Test metrics", "## Provenance",
                    "## Loading it in plain PyTorch (without fmae)"):
        assert section in card, section
    assert f"{best_row['final_test_loss']:.6f}" in card
    # the card's code, run as it is in the export directory, gives fmae's own outputs
    code = re.search(r"```python\n(.*?)```", card, re.S)[1]
    assert "fmae" not in code
    monkeypatch.chdir(out)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the card's snippet, the test's point
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    model, _ = load_model(sweep / "best.pt")
    with torch.no_grad():
        ours = model(images.float().div(255).reshape(-1, 784))
        theirs = scope["model"](images.float().div(255).reshape(-1, 784))
    assert torch.equal(ours, theirs)


def test_several_models_each_in_a_directory_and_again_unchanged(sweep, tmp_path, monkeypatch):
    cell = next((sweep / "cells").iterdir())
    args = ("export", "safetensors", sweep, cell / "model.pt", "--to", tmp_path / "hub", "--json")
    first = json.loads(cli(*args).stdout)
    assert [r["to"] for r in first["exported"]] == [str(tmp_path / "hub" / "s"), str(tmp_path / "hub" / cell.name)]
    assert not any(r["unchanged"] for r in first["exported"])
    weights = safetensors_torch.load_file(tmp_path / "hub" / cell.name / "model.safetensors")
    assert all(torch.equal(weights[k], v) for k, v in state_dict(cell / "model.pt").items())
    again = json.loads(cli(*args).stdout)
    assert all(r["unchanged"] for r in again["exported"])  # a repeated export says it sent nothing new
    monkeypatch.setenv("COLUMNS", "250")  # the table whole, however long the temporary paths
    table = cli(*args[:-1])
    assert table.exit_code == 0 and "unchanged" in table.stdout


def test_without_the_package_one_error_names_the_extra(sweep, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    result = cli("export", "safetensors", sweep, "--to", tmp_path / "hub")
    assert result.exit_code == 1
    one_error_line(result.stderr, "needs the safetensors package (hint: pip install 'fmae-cli[safetensors]')")
    assert not (tmp_path / "hub").exists()


def test_a_directory_without_a_model_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    result = cli("export", "safetensors", tmp_path / "empty", "--to", tmp_path / "hub")
    assert result.exit_code == 1
    one_error_line(result.stderr, "holds no model.pt or best.pt")
