"""--json prints one JSON document whatever happens (docs/json.md): the results; on an error the
exit code, the message and the hint; on an interrupt also the signal, the command that resumes it
and the results so far. Every command that has --json."""

from __future__ import annotations

import json
import shlex

import pytest

from tests.helpers import cli, ctrl_c_at_save, one_error_line, tiny


def one_document(stdout: str) -> dict:
    """stdout is exactly one JSON document (json.loads refuses a second one after the first)."""
    return json.loads(stdout)


def assert_error_document(result, code: int, needle: str) -> dict:
    assert result.exit_code == code, result.stderr
    line = one_error_line(result.stderr, needle, result.stdout)
    doc = one_document(result.stdout)
    assert doc["schema_version"] == 1 and doc["error"]["exit_code"] == code
    assert needle in doc["error"]["message"] and line.startswith(f"error: {doc['error']['message']}")
    if doc["error"]["hint"] is not None:
        assert line.endswith(f"(hint: {doc['error']['hint']})")
    return doc


@pytest.fixture
def model_pt(fake_dataset, tmp_path):
    assert cli("train", *tiny(), "--run-dir", tmp_path / "r").exit_code == 0
    return tmp_path / "r" / "model.pt"


ERRORS = {  # command -> (arguments that fail, exit code, a piece of the message)
    "train": (["train", "--epochs", "0"], 2, "epochs must be"),
    "sweep": (["sweep", "--optim", "nadam"], 2, "invalid value for --optim"),
    "eval": (["eval", "--ckpt", "missing.pt"], 1, "does not exist"),
    "denoise": (["denoise", "--ckpt", "missing.pt"], 1, "does not exist"),
    "plot": (["plot", "missing-run"], 1, "missing-run"),
    "export": (["export", "tensorboard", "missing-run", "--to", "tb"], 1, "missing-run"),
}


@pytest.mark.parametrize("command", sorted(ERRORS))
def test_an_error_is_one_document(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args, code, needle = ERRORS[command]
    doc = assert_error_document(cli(*args, "--json"), code, needle)
    assert "interrupt" not in doc and "partial" not in doc


def test_a_usage_error_of_a_config_is_one_document_with_its_hint(fake_dataset, tmp_path):
    doc = assert_error_document(cli("train", "--resume", "--overwrite", "--run-dir", tmp_path / "r", "--json"), 2,
                                "exclude each other")
    assert doc["error"]["hint"] == "see `fmae train --help`"


def test_a_runtime_error_after_the_data_is_one_document(fake_dataset, tmp_path):
    (tmp_path / "afile").write_text("x")
    assert_error_document(cli("sweep", "--lr", "0.1", *tiny(), "--run-dir", tmp_path / "afile", "--json"), 1,
                          "afile")


def test_without_json_stdout_stays_empty_on_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("eval", "--ckpt", "missing.pt")
    assert result.exit_code == 1 and result.stdout == ""


def test_fail_on_prints_the_results_only_once(fake_dataset, tmp_path):
    """Exit 3 comes after the results: they are the one document, the error line goes to stderr."""
    result = cli("train", "--optim", "sgd", "--lr", "1e6", "--activation", "identity", *tiny(hidden=4),
                 "--run-dir", tmp_path / "r", "--fail-on", "diverged", "--json")
    assert result.exit_code == 3, result.stderr
    doc = one_document(result.stdout)
    assert doc["status"] == "diverged" and "error" not in doc


def test_an_interrupted_train_is_one_document_with_the_partial_summary_and_the_resume_line(fake_dataset, tmp_path):
    with ctrl_c_at_save(2, saved=False):
        cut = cli("train", *tiny(4), "--run-dir", tmp_path / "r", "--json")
    doc = assert_error_document(cut, 130, "training interrupted by SIGINT")
    assert doc["interrupt"]["signal"] == "SIGINT" and doc["interrupt"]["saved"] == "finished epochs are saved"
    assert doc["partial"]["status"] == "interrupted" and doc["partial"]["epochs_run"] == 1
    argv = shlex.split(doc["interrupt"]["resume"])
    assert argv[:2] == ["fmae", "train"] and argv[-1] == "--resume"
    assert cli(*argv[1:], "-q").exit_code == 0


def test_an_interrupted_sweep_is_one_document_with_the_results_so_far(fake_dataset, tmp_path):
    with ctrl_c_at_save(3, saved=False):
        cut = cli("sweep", "--lr", "0.1", "0.01", *tiny(2), "--run-dir", tmp_path / "s", "--json")
    doc = assert_error_document(cut, 130, "sweep interrupted by SIGINT")
    assert sum(c["epochs_run"] for c in doc["partial"]["cells"]) == 2  # two cell-epochs saved, the third cut
    assert doc["partial"]["sweep_dir"] == str(tmp_path / "s")
    argv = shlex.split(doc["interrupt"]["resume"])
    assert argv[:2] == ["fmae", "sweep"] and str(tmp_path / "s") in argv
    resumed = cli(*argv[1:], "--json")
    assert resumed.exit_code == 0, resumed.stderr
    assert [c["epochs_run"] for c in one_document(resumed.stdout)["cells"]] == [2, 2]


RUNNERS = {"eval": ("fmae.eval_run", "run_eval"), "denoise": ("fmae.denoise_run", "run_denoise"),
           "plot": ("fmae.figures.run", "run_plot"), "export": ("fmae.trackers.export", "run_export")}


@pytest.mark.parametrize("command", sorted(RUNNERS))
def test_an_interrupted_command_is_one_document_naming_the_command_to_run_again(command, model_pt, monkeypatch):
    import importlib

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    module, name = RUNNERS[command]
    monkeypatch.setattr(importlib.import_module(module), name, ctrl_c)
    args = {"eval": ["eval", "--ckpt", model_pt], "denoise": ["denoise", "--ckpt", model_pt],
            "plot": ["plot", model_pt.parent], "export": ["export", "tensorboard", model_pt.parent, "--to", "tb"]}
    result = cli(*args[command], "--json")
    doc = assert_error_document(result, 130, f"fmae {command} interrupted by SIGINT")
    assert doc["partial"] is None
    assert doc["interrupt"]["resume"] == shlex.join(["fmae", *map(str, args[command]), "--json"])
