"""A newcomer's smaller frictions (issue 31): eval and denoise take a sweep's or a run's directory
(its best.pt, its model.pt); `--run-dir afile` says what is wrong; one cell is "1 cell"; the
busy-machine note only when there is training to slow down; tables on a pipe end without spaces."""

from __future__ import annotations

import json

from tests.helpers import cli, one_error_line, tiny


def test_eval_and_denoise_take_a_sweep_directory_or_a_run_directory(fake_dataset, tmp_path):
    assert cli("sweep", "--optim", "sgd", "--lr", "0.1", *tiny(2), "--run-dir", tmp_path / "s").exit_code == 0
    assert cli("train", *tiny(2), "--run-dir", tmp_path / "r").exit_code == 0
    evaluated = cli("eval", "--ckpt", tmp_path / "s", tmp_path / "r", "--json")
    assert evaluated.exit_code == 0, evaluated.stderr
    assert [c["checkpoint"] for c in json.loads(evaluated.stdout)["checkpoints"]] == [
        str(tmp_path / "s" / "best.pt"), str(tmp_path / "r" / "model.pt")]
    denoised = cli("denoise", "--ckpt", tmp_path / "s", "--json", "-q")
    assert denoised.exit_code == 0, denoised.stderr
    assert json.loads(denoised.stdout)["results"][0]["checkpoint"] == str(tmp_path / "s" / "best.pt")
    (tmp_path / "empty").mkdir()
    refused = cli("eval", "--ckpt", tmp_path / "empty")
    assert refused.exit_code == 1
    one_error_line(refused.stderr, "holds no model.pt or best.pt")


def test_a_run_dir_that_is_a_file_is_named_so(fake_dataset, tmp_path):
    (tmp_path / "afile").write_text("mine")
    for command in ("train", "sweep"):
        result = cli(command, *tiny(1), "--run-dir", tmp_path / "afile")
        assert result.exit_code == 1, result.stderr
        line = one_error_line(result.stderr, f"{tmp_path / 'afile'} exists and is not a directory")
        assert "choose another --run-dir" in line and "File exists" not in line
    assert (tmp_path / "afile").read_text() == "mine"


def test_one_cell_and_the_busy_note_only_with_work_to_do(fake_dataset, tmp_path, monkeypatch):
    from fmae import faults

    monkeypatch.setenv(faults.LOAD, "99")
    args = ("sweep", "--lr", "0.01", *tiny(1, quiet=False), "--run-dir", tmp_path / "s")
    first = cli(*args)
    assert first.exit_code == 0 and f"sweep {tmp_path / 's'}: 1 cell, 0 already finished" in first.stderr
    assert "machine is busy" in first.stderr
    again = cli(*args)
    assert again.exit_code == 0 and "1 cell, 1 already finished" in again.stderr
    assert "machine is busy" not in again.stderr, again.stderr


def test_tables_on_a_pipe_end_without_spaces(fake_dataset, tmp_path):
    result = cli("train", *tiny(1), "--run-dir", tmp_path / "r")
    assert result.exit_code == 0 and result.stdout.strip()
    assert all(line == line.rstrip() for line in result.stdout.splitlines()), result.stdout
