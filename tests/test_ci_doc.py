"""docs/ci.md's script runs green, as written there, with its config file: the installed `fmae`
(on a tiny dataset: a shim on PATH gives fmae the tiny files' checksums), and its gate exits 3
when a cell diverges or collapses; the workflow calls the script and caches the dataset."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.helpers import installed_env, write_dataset

DOC = Path(__file__).resolve().parent.parent / "docs" / "ci.md"


def blocks() -> dict[str, str]:
    """docs/ci.md's code blocks by the file each names on its first line (`# ci/run.sh`)."""
    out = {}
    for body in re.findall(r"```\w+\n(.*?)```", DOC.read_text(), re.S):
        first = body.splitlines()[1 if body.startswith("#!") else 0]
        out[first.lstrip("# ").split(":")[0].strip()] = body
    return out


def run_script(tmp_path: Path, config: str) -> subprocess.CompletedProcess:
    files = blocks()
    (tmp_path / "ci").mkdir()
    (tmp_path / "ci" / "run.sh").write_text(files["ci/run.sh"])
    (tmp_path / "ci" / "sweep.toml").write_text(config)
    sums = write_dataset(tmp_path / "data")
    (tmp_path / "bin").mkdir()
    shim = tmp_path / "bin" / "fmae"  # the installed fmae, told the tiny dataset's checksums
    shim.write_text(f"#!{sys.executable}\nfrom fmae import data\ndata.CHECKSUMS = {sums!r}\n"
                    "from fmae.cli import main\nmain()\n")
    shim.chmod(0o755)
    env = installed_env(FMAE_DATA_DIR=str(tmp_path / "data"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    env["PATH"] = f"{tmp_path / 'bin'}:{env['PATH']}"
    return subprocess.run(["sh", "ci/run.sh", "ci/sweep.toml"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600, stdin=subprocess.DEVNULL)


def test_the_ci_script_runs_green(tmp_path):
    done = run_script(tmp_path, blocks()["ci/sweep.toml"])
    assert done.returncode == 0, done.stdout + done.stderr
    plan = json.loads((tmp_path / "ci-out" / "plan.json").read_text())
    results = json.loads((tmp_path / "ci-out" / "results.json").read_text())
    assert plan["dry_run"] and plan["cells"]["new"] == len(results["cells"]) == 4
    assert "plan: 4 cells, 4 new, about" in done.stdout and "best model: ci-out/sweep/best.pt" in done.stdout
    assert (tmp_path / "ci-out" / "sweep" / "config.toml").is_file()
    assert (tmp_path / "cache" / "fmae" / "calibration.json").is_file()


def test_the_gate_exits_3_with_the_results_document(tmp_path):
    config = blocks()["ci/sweep.toml"].replace('optim = ["sgd", "adam"]', 'optim = ["sgd"]').replace(
        "lr = [0.1, 0.001]", "lr = [0.1, 1e6]\nactivation = \"identity\"")
    done = run_script(tmp_path, config)
    assert done.returncode == 3, done.stdout + done.stderr
    results = json.loads((tmp_path / "ci-out" / "results.json").read_text())
    gated = [c for c in results["cells"] if c["status"] in ("diverged", "collapsed")]  # fail-on names both
    assert gated and f"{gated[0]['status']} sgd 1000000.0" in done.stdout


def test_the_workflow_calls_the_script_and_caches_the_dataset():
    workflow = blocks()[".github/workflows/fmae.yml"]
    assert "sh ci/run.sh ci/sweep.toml" in workflow and "actions/cache@" in workflow
    assert "path: ~/.cache/fmae" in workflow
    script = blocks()["ci/run.sh"]
    for flag in ("--config", "--dry-run", "--json"):
        assert flag in script, flag
    assert "fail-on" in blocks()["ci/sweep.toml"]
