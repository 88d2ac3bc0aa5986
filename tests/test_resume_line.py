"""The printed "resume with:" command is complete (every setting that differs from its default:
--fail-on, --engine and --checkpoint-every too) and short (nothing at its default); run as
printed, it resumes the same sweep and exits with the code of the sweep never interrupted."""

from __future__ import annotations

import json
import shlex

from fmae.config import SharedSettings, SweepConfig, TrainConfig
from fmae.execution import ExecutorConfig, PruneConfig
from fmae.settings import SweepSettings, TrainSettings
from tests.helpers import cli, ctrl_c_at_save, metrics_losses

# one cell diverges (SGD at lr 1e6 with an identity output), so --fail-on diverged makes the sweep exit 3
GATED = ["--optim", "sgd", "--lr", "0.05", "1e6", "--hidden", "4", "--activation", "identity", "--batch-size", "16",
         "--epochs", "3", "--engine", "cells", "--checkpoint-every", "0", "--fail-on", "diverged", "-q"]


def printed(stderr: str) -> list[str]:
    line = stderr.strip().splitlines()[-1]
    assert "(hint: resume with: " in line, stderr
    return shlex.split(line.split("(hint: resume with: ", 1)[1][:-1])


def test_the_printed_line_resumes_the_same_sweep_with_the_same_exit_code(fake_dataset, tmp_path):
    ref = cli("sweep", *GATED, "--run-dir", tmp_path / "ref")
    assert ref.exit_code == 3, ref.stderr
    with ctrl_c_at_save(2, saved=False):
        cut = cli("sweep", *GATED, "--run-dir", tmp_path / "s")
    assert cut.exit_code == 130, cut.stderr
    argv = printed(cut.stderr)
    assert argv == ["fmae", "sweep", "--run-dir", str(tmp_path / "s"), "--optim", "sgd", "--lr", "0.05", "1000000.0",
                    "--hidden", "4", "--epochs", "3", "--batch-size", "16", "--activation", "identity",
                    "--engine", "cells", "--checkpoint-every", "0.0", "--fail-on", "diverged"]
    resumed = cli(*argv[1:], "-q")
    assert resumed.exit_code == ref.exit_code == 3, resumed.stderr
    for cell in (tmp_path / "ref" / "cells").iterdir():
        assert metrics_losses(tmp_path / "s" / "cells" / cell.name / "metrics.csv") == \
            metrics_losses(cell / "metrics.csv")
    strip = lambda p: [{k: v for k, v in r.items() if k not in ("seconds", "model")}  # noqa: E731
                       for r in json.loads((p / "results.json").read_text())["cells"]]
    assert strip(tmp_path / "s") == strip(tmp_path / "ref")


def test_a_default_sweep_and_run_resume_with_their_directory_alone(fake_dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with ctrl_c_at_save(1, saved=False):
        cut = cli("sweep", "-q")
    assert cut.exit_code == 130 and printed(cut.stderr) == ["fmae", "sweep", "--run-dir", "runs/sweep-adam"]
    with ctrl_c_at_save(1, saved=False):
        cut = cli("train", "-q", "--run-dir", "r")
    assert cut.exit_code == 130 and printed(cut.stderr) == ["fmae", "train", "--run-dir", "r", "--resume"]


def test_every_setting_off_its_default_is_in_the_line_and_none_at_it():
    full = SweepSettings(
        SweepConfig(optims=("sgd", "adam"), lrs=(0.5,), hiddens=(8,), seeds=(0, 1),
                    base=SharedSettings(dropout=0.2, momentum=0.9, epochs=7, patience=2, min_delta=0.01)),
        executor=ExecutorConfig(jobs=2, threads=1, max_retries=0, engine="stacked"), pruning=PruneConfig(eta=2),
        run_dir="s", device="cpu", download=False, fail_fast=True, checkpoint_every=5.0, fail_on=("collapsed",))
    argv = full.to_args()
    for flag in ("--optim", "--lr", "--hidden", "--seed", "--dropout", "--momentum", "--epochs", "--patience",
                 "--min-delta", "--jobs", "--threads", "--max-retries", "--engine", "--prune", "--eta", "--device",
                 "--no-download", "--fail-fast", "--checkpoint-every", "--fail-on"):
        assert flag in argv, flag
    for flag in ("--batch-size", "--activation", "--precision", "--executor", "--noise", "--min-epochs"):
        assert flag not in argv, flag
    assert argv[argv.index("--seed") + 1:argv.index("--seed") + 3] == ["0", "1"]  # a list differs as a whole
    train = TrainSettings(TrainConfig(optim="sgd"), engine="cells", checkpoint_every=0.0, fail_on=("diverged",))
    assert train.to_args(TrainConfig(optim="sgd"), "r") == [
        "fmae", "train", "--run-dir", "r", "--optim", "sgd", "--engine", "cells", "--checkpoint-every", "0.0",
        "--fail-on", "diverged", "--resume"]
