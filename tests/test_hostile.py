"""What a hostile or careless user tried (issue 10): nothing lost, nothing misleading.

Directories fmae did not make, damaged and crafted checkpoints, sweep cells that fail alone.
The lock is in test_lock.py, the signals in test_signals.py, images and stdout in test_user_io.py.
"""

import json
import os

import pytest
import torch

from fmae import atomic, checkpoints, runs
from fmae import model as fmae_model
from fmae.config import ModelConfig, TrainConfig
from fmae.errors import CheckpointError
from tests.helpers import cli, ctrl_c_at_save, one_error_line, tiny

SWEEP = ["--lr", "0.01", *tiny(hidden=4)]


def hinted_error(result, needle: str) -> str:
    """The one error line, with a hint."""
    line = one_error_line(result.stderr, needle, result.stdout)
    assert "(hint: " in line, line
    return line


def own_files(directory):
    """A user's own directory: files named like fmae's, and a temporary of their own."""
    directory.mkdir()
    files = {"model.pt": b"mine", "metrics.csv": b"x", ".draft.tmp": b"d", "results.csv": b"r", "best.pt": b"b",
             ".model.pt.abcd1234.tmp": b"named like fmae's temporary, but fmae wrote no model.pt here"}
    for name, content in files.items():
        (directory / name).write_bytes(content)
    return files


# ---------------------------------------------------------------- 1, 4, 7: directories


@pytest.mark.parametrize("command", ["train", "sweep"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_a_directory_of_ones_own_files_keeps_every_one(fake_dataset, tmp_path, command, overwrite):
    files = own_files(tmp_path / "proj")
    args = tiny() if command == "train" else SWEEP
    result = cli(command, *args, "--run-dir", tmp_path / "proj", *(["--overwrite"] if overwrite else []))
    assert result.exit_code == 1
    hinted_error(result, "holds files but no fmae run")
    assert {p.name: p.read_bytes() for p in (tmp_path / "proj").iterdir()} == files


def test_overwrite_replaces_only_what_fmae_wrote(fake_dataset, tmp_path):
    r = tmp_path / "r"
    assert cli("train", *tiny(), "--run-dir", r).exit_code == 0
    (r / "notes.txt").write_text("mine")
    (r / ".notes.txt.abcd1234.tmp").write_text("mine too")
    (r / ".model.pt.zz99zz99.tmp").write_text("fmae's, left by a kill")
    assert cli("train", *tiny(), "--seed", "3", "--run-dir", r, "--overwrite").exit_code == 0
    assert (r / "notes.txt").read_text() == "mine" and (r / ".notes.txt.abcd1234.tmp").exists()
    assert not (r / ".model.pt.zz99zz99.tmp").exists()
    assert runs.RunDir(r).saved_config().seed == 3


def test_a_config_json_fmae_did_not_write_is_never_replaced(fake_dataset, tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "config.json").write_text('{"mine": true}')
    for extra in ([], ["--overwrite"]):
        result = cli("train", *tiny(), "--run-dir", tmp_path / "p", *extra)
        assert result.exit_code == 1
        hinted_error(result, "not an fmae run config")
        assert (tmp_path / "p" / "config.json").read_text() == '{"mine": true}'


def test_sweep_overwrite_on_a_training_run_leaves_a_clean_sweep(fake_dataset, tmp_path):
    r = tmp_path / "r"
    assert cli("train", *tiny(), "--run-dir", r).exit_code == 0
    (r / "notes.txt").write_text("mine")
    assert cli("sweep", *SWEEP, "--run-dir", r, "--overwrite").exit_code == 0
    assert not any((r / name).exists() for name in runs.RUN_FILES)
    assert cli("sweep", *SWEEP, "--run-dir", r).exit_code == 0  # a sweep directory now, nothing hybrid
    assert (r / "notes.txt").read_text() == "mine"


def test_sweep_overwrite_keeps_foreign_files_among_cells(fake_dataset, tmp_path):
    s = tmp_path / "s"
    assert cli("sweep", *SWEEP, "--run-dir", s).exit_code == 0
    cell = next((s / "cells").iterdir())
    (cell / "notes.txt").write_text("mine")
    assert cli("sweep", *SWEEP, "--seed", "1", "--run-dir", s, "--overwrite").exit_code == 0
    assert (cell / "notes.txt").read_text() == "mine" and not (cell / "config.json").exists()


def test_stale_sweep_temporaries_are_removed_on_rerun(fake_dataset, tmp_path):
    s = tmp_path / "s"
    assert cli("sweep", *SWEEP, "--run-dir", s).exit_code == 0
    stale = [s / ".best.pt.k1ll3d00.tmp", s / ".results.csv.k1ll3d00.tmp", s / ".results.json.k1ll3d00.tmp"]
    for path in stale:
        path.write_bytes(b"half")
    (s / ".draft.tmp").write_text("mine")
    assert cli("sweep", *SWEEP, "--run-dir", s).exit_code == 0
    assert not any(p.exists() for p in stale) and (s / ".draft.tmp").exists()


@pytest.mark.parametrize("content", ["[]", "null", '"grid"', '{"grid": [], "shared": {}}'])
def test_a_sweep_json_of_the_wrong_shape_is_named(fake_dataset, tmp_path, content):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "sweep.json").write_text(content)
    result = cli("sweep", *SWEEP, "--run-dir", tmp_path / "s")
    assert result.exit_code == 1
    hinted_error(result, "sweep.json: not an fmae sweep file")


def test_a_long_file_name_fits_with_its_temporary(tmp_path):
    target = tmp_path / ("n" * 245 + ".png")  # 249 characters: a valid name
    atomic.write_bytes(target, b"ok")
    assert target.read_bytes() == b"ok" and os.listdir(tmp_path) == [target.name]


# ---------------------------------------------------------------- 3, 8, 9: checkpoints and cells


def crafted(path, config, weights):
    torch.save({"format": "fmae-checkpoint", "version": 1, "kind": "model", "config": config,
                "state_dict": weights}, path)
    return path


def test_a_small_checkpoint_claiming_a_huge_model_is_refused_before_building(tmp_path, monkeypatch):
    huge = TrainConfig(model=ModelConfig(hidden=1_000_000)).to_dict()
    path = crafted(tmp_path / "model.pt", huge, {})
    assert path.stat().st_size < 4096
    built = []
    monkeypatch.setattr(fmae_model, "build", lambda *a, **k: built.append(a) or pytest.fail("built the model"))
    with pytest.raises(CheckpointError, match="weights do not fit the model in its config"):
        checkpoints.load_model(path)
    small = {k: torch.zeros(s[:1] + (8,) if len(s) == 2 else s) for k, s in
             fmae_model.parameter_shapes(ModelConfig(hidden=1_000_000)).items() if k.endswith("bias")}
    with pytest.raises(CheckpointError, match="missing"):
        checkpoints.load_model(crafted(tmp_path / "m2.pt", huge, small))
    assert not built


@pytest.mark.parametrize("make,needle", [
    (lambda p: p.write_text("epoch,train_loss\n1,0.5\n"), "not a torch checkpoint"),
    (lambda p: crafted(p, "a string", {}), "bad config inside the checkpoint"),
    (lambda p: crafted(p, {"model": "x"}, {}), "bad config inside the checkpoint"),
])
def test_text_and_odd_configs_as_checkpoints_are_named(tmp_path, make, needle):
    path = tmp_path / "model.pt"
    make(path)
    result = cli("eval", "--ckpt", path)
    assert result.exit_code == 1
    assert str(path) in hinted_error(result, needle)


def test_one_damaged_cell_fails_alone_and_says_how_to_redo_it(fake_dataset, tmp_path):
    s = tmp_path / "s"
    grid = ["--lr", "0.01", "--hidden", "4", "8", "--batch-size", "16", "-q", "--json", "--run-dir", s]
    assert cli("sweep", *grid, "--epochs", "1").exit_code == 0
    cells = sorted((s / "cells").iterdir())
    last = cells[0] / "last.pt"
    last.write_bytes(last.read_bytes()[:100])  # truncated
    (cells[0] / "summary.json").unlink()  # unfinished, so it must be resumed from last.pt
    result = cli("sweep", *grid, "--epochs", "1")
    assert result.exit_code == 1
    rows = {c["hidden"]: c for c in json.loads(result.stdout)["cells"]}
    assert rows[8]["status"] == "completed" and rows[4]["status"] == "failed"
    assert f"remove {cells[0]}" in rows[4]["error"] and "truncated or corrupted" in rows[4]["error"]


def test_a_mismatched_cell_names_itself_and_the_narrow_fix(fake_dataset, tmp_path):
    s = tmp_path / "s"
    assert cli("sweep", *SWEEP, "--run-dir", s).exit_code == 0
    cell = next((s / "cells").iterdir())
    doc = json.loads((cell / "config.json").read_text())
    doc["config"]["model"]["dropout"] = 0.5
    (cell / "config.json").write_text(json.dumps(doc))
    result = cli("sweep", *SWEEP, "--run-dir", s, "--json")
    row = json.loads(result.stdout)["cells"][0]
    assert result.exit_code == 1 and row["status"] == "failed"
    assert "other settings" in row["error"] and f"remove {cell}" in row["error"] and "--overwrite" not in row["error"]


def test_best_pt_is_checked_before_it_is_copied(fake_dataset, tmp_path):
    s = tmp_path / "s"
    grid = ["--optim", "sgd", "--lr", "0.1", "0.05", "--hidden", "4", "--batch-size", "16", "--epochs", "2", "-q",
            "--json"]
    doc = json.loads(cli("sweep", *grid, "--run-dir", s).stdout)
    best = doc["best"]["model"]
    torch.save({"format": "fmae-checkpoint", "version": 1, "kind": "model", "config": "x"}, best)
    (s / "best.pt").unlink()
    result = cli("sweep", *grid, "--run-dir", s)
    doc2 = json.loads(result.stdout)
    assert result.exit_code == 1 and doc2["best"]["model"] != best
    assert checkpoints.load_model(s / "best.pt")[1]["config"].lr == doc2["best"]["lr"]


def test_an_interrupted_cell_shows_its_saved_epochs(fake_dataset, tmp_path):
    with ctrl_c_at_save(2):
        result = cli("sweep", "--lr", "0.01", "--hidden", "4", "--batch-size", "16", "--epochs", "5",
                     "--run-dir", tmp_path / "s")
    assert result.exit_code == 130
    row = json.loads((tmp_path / "s" / "results.json").read_text())["cells"][0]
    assert row["epochs_run"] == 2


def test_out_of_memory_names_the_setting_and_leaves_no_half_run(fake_dataset, tmp_path, monkeypatch):
    from fmae import engine

    def no_memory(*a, **k):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(engine, "train_many", no_memory)
    result = cli("train", *tiny(), "--run-dir", tmp_path / "r")
    assert result.exit_code == 1
    hinted_error(result, "not enough memory to train --hidden 8")
    assert not (tmp_path / "r").exists()


@pytest.mark.dataset
def test_a_real_out_of_memory_is_one_error_and_leaves_nothing(tmp_path, real_data_dir):
    """The allocation really fails: the address space is capped 2 GiB above what torch needs."""
    import re
    import resource
    import subprocess

    from tests.helpers import installed_env

    in_use = int(re.search(r"VmSize:\s+(\d+)", open("/proc/self/status").read())[1]) * 1024
    cap = in_use + (2 << 30)  # the model's first weight alone is 3.1 GB

    def capped() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    done = subprocess.run(["fmae", "train", "--hidden", "1000000", "--epochs", "1", "--run-dir", "r", "-q"],
                          cwd=tmp_path, env=installed_env(FMAE_DATA_DIR=str(real_data_dir)), preexec_fn=capped,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    hinted_error(done, "not enough memory to train --hidden 1000000 with --batch-size 1000")
    assert not (tmp_path / "r").exists()  # no directory holding only config.json that "already holds a run"
