"""The installed `fmae` run as a CI script would: set -e pipelines, no terminal, NO_COLOR."""

import json
import subprocess

import pytest

from tests.helpers import installed_env


def sh(script: str, cwd, data_dir=None, **env) -> subprocess.CompletedProcess:
    full_env = installed_env(NO_COLOR="1", **env)
    full_env.pop("FMAE_DEBUG", None)
    if data_dir is not None:
        full_env["FMAE_DATA_DIR"] = str(data_dir)
    return subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], cwd=cwd, capture_output=True, text=True,
                          env=full_env, stdin=subprocess.DEVNULL, timeout=600)


@pytest.mark.dataset
def test_a_ci_script(tmp_path, real_data_dir):
    script = """
fmae --version
fmae train --epochs 1 --hidden 16 --run-dir runs/a --json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["status"]=="completed"'
fmae sweep --optim sgd --lr 0.1 0.01 --hidden 16 --epochs 1 --run-dir runs/s --json > sweep.json
fmae eval --ckpt runs/a/model.pt runs/s/best.pt --json | python3 -c 'import json,sys; json.load(sys.stdin)'
fmae denoise --ckpt runs/s/best.pt --sigma 0.5 --limit 200 --json > denoise.json
fmae plot runs/s --kind heatmap curves --out figs --json > plot.json
"""  # noqa: E501 - shell lines as a user types them
    result = sh(script, tmp_path, real_data_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "fmae 0.1.0"  # every other result went to files
    assert "\x1b[" not in result.stderr  # no colour codes or bar frames without a terminal
    epoch_lines = [line for line in result.stderr.splitlines() if " epoch 1/1 train_loss=" in line]
    assert len(epoch_lines) == 3  # one plain line per epoch: the train run and two sweep cells
    assert json.loads((tmp_path / "sweep.json").read_text())["schema_version"] == 1
    assert len(json.loads((tmp_path / "denoise.json").read_text())["results"]) == 1
    assert set(json.loads((tmp_path / "plot.json").read_text())["figures"]) == {"heatmap", "curves"}


@pytest.mark.parametrize("script,code,needle", [
    ("fmae train --hidden 0 --run-dir r", 2, "error: hidden must be"),
    ("fmae train --bogus", 2, "error: No such option"),
    ("fmae sweep --lr 0.1 0.1 --run-dir s", 2, "error: --lr lists 0.1 more than once"),
    ("fmae eval --ckpt missing.pt", 1, "error: checkpoint missing.pt does not exist"),
    ("fmae denoise --ckpt . --sigma 0.5", 1, "error: . holds no model.pt or best.pt"),
])
def test_exit_codes_and_one_line_errors(tmp_path, script, code, needle):
    result = sh(script, tmp_path)
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.dataset
def test_sigterm_saves_and_exits_143(tmp_path, real_data_dir):
    env = installed_env(FMAE_DATA_DIR=str(real_data_dir))
    # last.pt after every epoch, and more epochs than any machine trains in the wait: the TERM lands mid-run
    # (with the default --checkpoint-every 30, a fast machine finished all 50 epochs before the first last.pt)
    proc = subprocess.Popen(["fmae", "train", "--epochs", "1000", "--hidden", "64", "--checkpoint-every", "0",
                             "--run-dir", "r"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    import time

    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "r" / "last.pt").exists():
        time.sleep(0.2)
    assert proc.poll() is None  # still training: the signal below is the one under test
    proc.terminate()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "interrupted" in err and "--resume" in err
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["status"] == "interrupted"
