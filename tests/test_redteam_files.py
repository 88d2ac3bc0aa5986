"""Red team, files (issue 18 cases 1-5, 11, 12, 14; issue 19 items 3-4): what fmae deletes, resumes
and decides from follows fmae's own record of what it wrote, whatever a careless user, a tampered
file or a kill left behind. Each test first proves that its fault happened (the kill landed, the
file is tampered), then that fmae ends with nothing lost, the true result, or one error line.

Kills are real SIGKILLs that a child process sends itself at the exact moment a test names (a
hook around one of fmae's writes), on the tiny synthetic dataset.
"""

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from fmae import data, runs
from tests.helpers import cli, one_error_line, tiny

LRS = ["--optim", "sgd", "--lr", "0.1", "0.01"]
SWEEP = [*LRS, *tiny(1, hidden=4)]
HALVING = ["--optim", "sgd", "--lr", "0.5", "0.1", "0.01", "--hidden", "4", "--activation", "identity",
           "--batch-size", "16", "--epochs", "3", "--threads", "1", "--prune", "halving", "-q", "--json"]

CHILD = """
import json, os, signal, sys
from fmae import data
data.CHECKSUMS = json.loads(os.environ["T_SUMS"])
def die():
    os.kill(os.getpid(), signal.SIGKILL)
HOOK
from fmae.cli import app
app(sys.argv[1:], prog_name="fmae")
"""


def one_line(result, needle: str, code: int = 1) -> str:
    """The one error line of a command that exited with `code`."""
    assert result.exit_code == code, (result.exit_code, result.stderr)
    return one_error_line(result.stderr, needle, result.stdout)


def killed(tmp_path, tiny_dir, hook: str, *args) -> None:
    """Run `fmae *args` in a child that SIGKILLs itself where `hook` calls die(); asserts it did."""
    directory, sums = tiny_dir
    env = {**os.environ, "FMAE_DATA_DIR": str(directory), "T_SUMS": json.dumps(sums)}
    proc = subprocess.run([sys.executable, "-c", CHILD.replace("HOOK", hook), *map(str, args)], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr)


def tree(directory) -> dict:
    """Every file under `directory` (links not followed) and its bytes; a link as its target."""
    out = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, directory)
            if os.path.islink(path):
                out[rel] = "-> " + os.readlink(path)
            elif os.path.isfile(path):
                out[rel] = open(path, "rb").read()
    return out


def cells(doc) -> dict:
    return {f"{c['optim']}-lr{c['lr']!r}-h{c['hidden']}-s{c['seed']}": c for c in doc["cells"]}


def strip(doc) -> dict:
    return {name: {k: v for k, v in c.items() if k not in ("seconds", "model")} for name, c in cells(doc).items()}


# ---------------------------------------------------------------- 1, 2, 3: what fmae deletes, and who writes


def test_18_1_overwrite_removes_only_what_fmae_recorded_never_through_a_link(fake_dataset, tmp_path):
    s = tmp_path / "s"
    assert cli("sweep", *SWEEP, "--run-dir", s).exit_code == 0
    cell = s / "cells" / "sgd-lr0.1-h4-s0"
    mine = s / "cells" / "mine"  # a user's directory among the cells: a copy of a cell's files, fmae's record left out
    shutil.copytree(cell, mine)
    (mine / ".fmae.json").unlink(missing_ok=True)  # fmae's record (fmae.manifest.MANIFEST)
    outside = tmp_path / "outside"  # an fmae run outside the sweep, linked into cells/
    shutil.copytree(cell, outside)
    (s / "cells" / "link").symlink_to(outside)
    odd = s / "cells" / "sgd-lr0.5-h4-s0"  # named like a cell, holding a config.json fmae did not write
    odd.mkdir()
    (odd / "config.json").write_text('{"mine": true}')
    (odd / "model.pt").write_bytes(b"mine")
    for name in ("model.pt", "metrics.csv", "config.json", "notes.txt"):  # a user's files at the top
        (s / name).write_text(f"the user's {name}")
    keep = {"mine": tree(mine), "outside": tree(outside), "odd": tree(odd),
            "top": {n: (s / n).read_bytes() for n in ("model.pt", "metrics.csv", "config.json", "notes.txt")}}

    result = cli("sweep", *SWEEP, "--seed", "1", "--run-dir", s, "--overwrite")
    assert result.exit_code == 0, result.stderr
    assert tree(mine) == keep["mine"] and tree(outside) == keep["outside"] and tree(odd) == keep["odd"]
    assert (s / "cells" / "link").is_symlink() and os.readlink(s / "cells" / "link") == str(outside)
    assert {n: (s / n).read_bytes() for n in keep["top"]} == keep["top"]
    assert not cell.exists() and (s / "cells" / "sgd-lr0.1-h4-s1" / "model.pt").is_file()  # fmae's own cell went

    user = tmp_path / "u"  # a user's sweep.json of the shape fmae's has
    user.mkdir()
    (user / "sweep.json").write_text('{"grid": {}, "shared": {}}')
    (user / "results.csv").write_text("mine")
    before = tree(user)
    one_line(cli("sweep", *SWEEP, "--run-dir", user, "--overwrite"), "sweep.json: not an fmae sweep file")
    assert tree(user) == before


@pytest.mark.parametrize("command", ["train", "sweep"])
@pytest.mark.parametrize("rerun", [["--overwrite"], []], ids=["overwrite", "plain"])
def test_18_2_an_overwrite_killed_midway_is_taken_up_again(fake_dataset, tiny_dir, tmp_path, command, rerun):
    d = tmp_path / "d"
    args = tiny(1) if command == "train" else SWEEP
    assert cli(command, *args, "--run-dir", d).exit_code == 0
    marker = "config.json" if command == "train" else "sweep.json"
    hook = f"""
real_unlink = os.unlink
def unlink(path, *a, **k):
    real_unlink(path, *a, **k)
    if os.path.basename(path) == "{marker}":
        die()
os.unlink = unlink
"""
    killed(tmp_path, tiny_dir, hook, command, *args, "--seed", "1", "--run-dir", d, "--overwrite")
    left = "last.pt" if command == "train" else "cells/sgd-lr0.1-h4-s0/last.pt"
    assert not (d / marker).exists() and (d / left).is_file()  # killed between the marker and the rest

    result = cli(command, *args, "--seed", "1", "--run-dir", d, *rerun)
    assert result.exit_code == 0, result.stderr
    if command == "train":
        assert runs.RunDir(d).saved_config().seed == 1 and runs.RunDir(d).load_last()["config"].seed == 1
    else:
        assert sorted(p.name for p in (d / "cells").iterdir()) == ["sgd-lr0.01-h4-s1", "sgd-lr0.1-h4-s1"]
        assert json.loads((d / "sweep.json").read_text())["grid"]["seed"] == [1]


def test_18_3_a_starting_sweep_holds_its_cells_before_it_writes_anything(fake_dataset, tmp_path, monkeypatch):
    s = tmp_path / "s"
    cell = s / "cells" / "sgd-lr0.1-h4-s0"
    load = data.find_and_load
    trains = []

    def loading(*args, **kwargs):  # the sweep holds its lock and loads the data: nothing of it is on disk yet
        if not trains:  # the sweep's load (the train's own, when it is let through, loads as usual)
            assert not (s / "sweep.json").exists() and not (s / "cells").exists()
            trains.append(None)
            trains[0] = cli("train", "--optim", "sgd", "--lr", "0.1", "--hidden", "4", "--batch-size", "16",
                            "--epochs", "1", "--run-dir", cell, "-q")
        return load(*args, **kwargs)

    monkeypatch.setattr(data, "find_and_load", loading)
    result = cli("sweep", *SWEEP, "--run-dir", s)
    assert result.exit_code == 0, result.stderr
    one_line(trains[0], f"{cell} is a cell of sweep {s}, which is in use by fmae process")
    assert json.loads((cell / "config.json").read_text())["environment"]["threads"] == \
        json.loads((s / "cells" / "sgd-lr0.01-h4-s0" / "config.json").read_text())["environment"]["threads"]


# ---------------------------------------------------------------- 4, 5: results that lie


def test_18_4_a_resume_state_of_another_run_is_refused(fake_dataset, tmp_path):
    base = ["--optim", "sgd", "--momentum", "0.9", "--hidden", "8", "--batch-size", "16", "--epochs", "1", "-q"]
    r, other = tmp_path / "r", tmp_path / "o"
    assert cli("train", *base, "--lr", "0.1", "--run-dir", r).exit_code == 0
    assert cli("train", *base, "--lr", "0.01", "--run-dir", other).exit_code == 0
    own = torch.load(r / "last.pt", weights_only=True)
    shutil.copy(other / "last.pt", r / "last.pt")  # another run's state, in this run
    resume = ["train", *base[:-3], "--lr", "0.1", "--epochs", "2", "--run-dir", r, "--resume"]  # every flag, as before
    line = one_line(cli(*resume), f"{r / 'last.pt'} is not this run's")
    assert "lr 0.01 -> 0.1" in line and "optimizer lr 0.01 -> 0.1" in line

    own["optimizer"]["param_groups"][0].update(lr=0.01, momentum=0.5)  # this run's config, another optimizer
    torch.save(own, r / "last.pt")
    line = one_line(cli(*resume), "is not this run's")
    assert "optimizer lr 0.01 -> 0.1" in line and "optimizer momentum 0.5 -> 0.9" in line
    assert len(runs.RunDir(r).read_metrics()) == 1  # nothing trained

    s = tmp_path / "s"
    assert cli("sweep", *SWEEP, "--run-dir", s).exit_code == 0
    shutil.copy(s / "cells" / "sgd-lr0.01-h4-s0" / "last.pt", s / "cells" / "sgd-lr0.1-h4-s0" / "last.pt")
    result = cli("sweep", *LRS, *tiny(hidden=4, quiet=False), "--run-dir", s, "--json")
    assert result.exit_code == 1 and "unexpected" not in result.stderr
    got = cells(json.loads(result.stdout))
    bad = got["sgd-lr0.1-h4-s0"]
    assert bad["status"] == "failed" and f"{s / 'cells' / 'sgd-lr0.1-h4-s0' / 'last.pt'} is not this run's" in \
        bad["error"] and "lr 0.01 -> 0.1" in bad["error"]
    assert got["sgd-lr0.01-h4-s0"]["status"] == "completed" and got["sgd-lr0.01-h4-s0"]["epochs_run"] == 2


def test_18_5_a_kill_between_last_pt_and_metrics_csv_changes_no_halving_decision(fake_dataset, tiny_dir, tmp_path):
    every = ("--checkpoint-every", "0")  # last.pt before metrics.csv after every epoch: the kill lands between
    whole = cli("sweep", *HALVING, *every, "--run-dir", tmp_path / "a")
    assert whole.exit_code == 0, whole.stderr
    doc = json.loads(whole.stdout)
    winner = next(name for name, c in cells(doc).items() if c["epochs_run"] == 3)
    hook = f"""
from fmae import runs
real = runs.RunDir.write_metrics
def write_metrics(self, history):
    history = list(history)
    if self.path.name == "{winner}" and len(history) == 1:
        die()
    real(self, history)
runs.RunDir.write_metrics = write_metrics
"""
    b = tmp_path / "b"
    killed(tmp_path, tiny_dir, hook, "sweep", *HALVING, *every, "--run-dir", b)
    cell = runs.RunDir(b / "cells" / winner)
    assert cell.load_last()["epoch"] == 1 and cell.read_metrics() == []  # killed between last.pt and metrics.csv

    again = cli("sweep", *HALVING, *every, "--run-dir", b)
    assert again.exit_code == 0, again.stderr
    redone = json.loads(again.stdout)
    assert strip(redone) == strip(doc) and redone["best"]["final_test_loss"] == doc["best"]["final_test_loss"]
    assert [m["test_loss"] for m in cell.read_metrics()] == [h[2] for h in cell.load_last()["history"]]


# ---------------------------------------------------------------- 11, 12, 14: paths, malformed files, temporaries


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_18_11_a_run_dir_that_is_not_utf8_is_refused_up_front(fake_dataset, tmp_path, command):
    d = tmp_path / os.fsdecode(b"runs-\xff")
    line = one_line(cli(command, *(tiny(1) if command == "train" else SWEEP), "--run-dir", d), "not UTF-8", code=2)
    assert "runs-\\xff" in line and not d.exists()


def test_18_12_malformed_files_fail_their_cell_or_command_naming_the_file(fake_dataset, tmp_path):
    s = tmp_path / "s"
    grid = ["--optim", "sgd", "--lr", "0.1", "0.01", "--hidden", "4", "8", "--batch-size", "16"]
    assert cli("sweep", *grid, "--epochs", "1", "--run-dir", s, "-q").exit_code == 0
    c = lambda name: s / "cells" / name  # noqa: E731
    (c("sgd-lr0.1-h4-s0") / "metrics.csv").write_text("step,loss\n1,0.5\n")
    (c("sgd-lr0.1-h8-s0") / "summary.json").write_text(json.dumps({
        **json.loads((c("sgd-lr0.1-h8-s0") / "summary.json").read_text()), "epochs_run": "1"}))
    state = torch.load(c("sgd-lr0.01-h4-s0") / "last.pt", weights_only=True)
    torch.save({**state, "epoch": "one"}, c("sgd-lr0.01-h4-s0") / "last.pt")
    result = cli("sweep", *grid, "--epochs", "3", "--prune", "halving", "--run-dir", s, "--json", "-q")
    assert result.exit_code == 1 and "unexpected" not in result.stderr + result.stdout, result.stderr
    got = cells(json.loads(result.stdout))
    assert len(got) == 4 and len(json.loads(result.stdout)["cells"]) == 4
    for name, file in (("sgd-lr0.1-h4-s0", "metrics.csv"), ("sgd-lr0.1-h8-s0", "summary.json"),
                       ("sgd-lr0.01-h4-s0", "last.pt")):
        assert got[name]["status"] == "failed" and str(c(name) / file) in got[name]["error"], got[name]
    assert got["sgd-lr0.01-h8-s0"]["status"] == "completed" and got["sgd-lr0.01-h8-s0"]["epochs_run"] == 3

    r = tmp_path / "r"
    assert cli("train", *tiny(1), "--run-dir", r).exit_code == 0
    state = torch.load(r / "last.pt", weights_only=True)
    for field, value in (("history", "x"), ("epoch", 1.0), ("rng", {"data": 1}), ("optimizer", {"state": []})):
        torch.save({**state, field: value}, r / "last.pt")
        line = one_line(cli("train", "--run-dir", r, "--epochs", "2", "--resume"), f"{r / 'last.pt'}: ")
        assert "not a resume state" in line or "is not a" in line, line  # named, and why

    good = tmp_path / "good"
    assert cli("sweep", *SWEEP, "--run-dir", good).exit_code == 0
    doc = json.loads((good / "sweep.json").read_text())
    for edit in ({"shared": {**doc["shared"], "epochs": "1"}}, {"shared": {**doc["shared"], "min_delta": -1}},
                 {"grid": {**doc["grid"], "lr": ["x"]}}, {"grid": {**doc["grid"], "hidden": [4, 4]}},
                 {"grid": {**doc["grid"], "seed": [-1]}}, {"grid": {**doc["grid"], "hidden": [4.0]}}):
        (good / "sweep.json").write_text(json.dumps({**doc, **edit}))
        line = one_line(cli("sweep", *SWEEP, "--run-dir", good), f"{good / 'sweep.json'}: not an fmae sweep file")
        assert " --" not in line.split("(hint")[0], line  # no flag the user never typed is blamed


def test_18_14_a_kill_while_pruning_a_cell_leaves_no_temporary_behind(fake_dataset, tiny_dir, tmp_path):
    s = tmp_path / "s"
    hook = """
real_replace = os.replace
def replace(src, dst, *a, **k):
    if str(dst).endswith("summary.json") and json.load(open(src))["status"] == "pruned":
        die()
    return real_replace(src, dst, *a, **k)
os.replace = replace
"""
    killed(tmp_path, tiny_dir, hook, "sweep", *HALVING, "--run-dir", s)
    assert len(list(s.glob("cells/*/.summary.json.*.tmp"))) == 1  # the kill left a pruned cell's temporary
    again = cli("sweep", *HALVING, "--run-dir", s)
    assert again.exit_code == 0, again.stderr
    assert sorted(c["status"] for c in json.loads(again.stdout)["cells"]) == ["completed", "pruned", "pruned"]
    assert [p for p in s.rglob("*") if p.name.endswith(".tmp")] == []


# ---------------------------------------------------------------- issue 19, items 3 and 4: --resume


def test_19_3_resume_takes_the_runs_own_settings_and_names_the_flags_that_differ(fake_dataset, tmp_path):
    r = tmp_path / "R"
    assert cli("train", "--optim", "sgd", "--lr", "0.1", "--hidden", "64", "--epochs", "1", "--run-dir", r,
               "-q").exit_code == 0
    resumed = cli("train", "--run-dir", r, "--epochs", "2", "--resume", "--json")
    assert resumed.exit_code == 0, resumed.stderr
    doc = json.loads(resumed.stdout)
    assert doc["epochs_run"] == 2 and "resuming after epoch 1" in resumed.stderr
    assert (doc["config"]["optim"], doc["config"]["lr"], doc["config"]["model"]["hidden"]) == ("sgd", 0.1, 64)
    line = one_line(cli("train", "--run-dir", r, "--optim", "adam", "--hidden", "64", "--epochs", "3", "--resume"),
                    "holds a run with other settings (optim sgd -> adam)")
    assert "hidden" not in line
    assert json.loads((r / "summary.json").read_text())["epochs_run"] == 2


def test_19_4_resume_with_fewer_epochs_or_without_a_run_is_refused(fake_dataset, tmp_path):
    r = tmp_path / "r"
    assert cli("train", *tiny(), "--run-dir", r).exit_code == 0
    before = tree(r)
    one_line(cli("train", "--run-dir", r, "--epochs", "1", "--resume"), "--epochs 1 is fewer than the 2 epochs")
    assert tree(r) == before
    typo = tmp_path / "typo"
    one_line(cli("train", "--run-dir", typo, "--resume"), f"{typo} holds no run to resume")
    assert not typo.exists()


def test_18_1_runs_and_sweeps_made_before_the_record_stay_readable_resumable_and_replaceable(fake_dataset, tmp_path):
    r, s = tmp_path / "r", tmp_path / "s"
    assert cli("train", *tiny(1), "--run-dir", r).exit_code == 0
    assert cli("sweep", *SWEEP, "--run-dir", s).exit_code == 0
    for record in [r / ".fmae.json", s / ".fmae.json", *s.glob("cells/*/.fmae.json")]:
        record.unlink()  # as d1b459e left them: no record of fmae's
    resumed = cli("train", "--run-dir", r, "--epochs", "2", "--resume", "--json")
    assert resumed.exit_code == 0 and json.loads(resumed.stdout)["epochs_run"] == 2, resumed.stderr
    grown = cli("sweep", *LRS, *tiny(hidden=4, quiet=False), "--run-dir", s, "--json")
    assert grown.exit_code == 0 and {c["epochs_run"] for c in json.loads(grown.stdout)["cells"]} == {2}
    assert (r / ".fmae.json").is_file() and (s / ".fmae.json").is_file()  # recorded from now on
    (s / "cells" / "sgd-lr0.01-h4-s0" / ".fmae.json").unlink()  # a cell still without one: known by its config
    assert cli("sweep", *SWEEP, "--seed", "1", "--run-dir", s, "--overwrite").exit_code == 0
    assert sorted(p.name for p in (s / "cells").iterdir()) == ["sgd-lr0.01-h4-s1", "sgd-lr0.1-h4-s1"]
