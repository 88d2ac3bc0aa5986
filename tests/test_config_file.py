"""`--config FILE` (TOML) and `--print-config` of train and sweep (docs/options.md#config-files): a
sweep from a file equals the same sweep from flags, files and numbers; flags override the file;
an unknown key or a wrong type is one error naming the file and the key; the resolved settings
are saved as config.toml in the run directory, and --print-config's output runs as a config."""

from __future__ import annotations

import json

import pytest

from tests.helpers import assert_same_sweep, cli, one_error_line

FLAGS = ["--optim", "sgd", "--lr", "0.1", "0.01", "--hidden", "4", "8", "--batch-size", "16", "--epochs", "2",
         "--threads", "1", "-q"]
TOML = """\
# the same sweep as FLAGS, keys spelled both ways
optim = ["sgd"]
lr = [0.1, 0.01]
hidden = [4, 8]
batch_size = 16
epochs = 2
threads = 1
quiet = true
"""


def test_a_sweep_from_a_file_equals_the_same_sweep_from_flags(fake_dataset, tmp_path):
    (tmp_path / "s.toml").write_text(TOML)
    flags = cli("sweep", *FLAGS, "--run-dir", tmp_path / "a", "--json")
    from_file = cli("sweep", "--config", tmp_path / "s.toml", "--run-dir", tmp_path / "b", "--json")
    assert flags.exit_code == from_file.exit_code == 0, flags.stderr + from_file.stderr
    assert_same_sweep(tmp_path / "a", tmp_path / "b")
    strip = lambda doc: [{k: v for k, v in r.items() if k not in ("seconds", "model")} for r in doc["cells"]]  # noqa: E731
    assert strip(json.loads(flags.stdout)) == strip(json.loads(from_file.stdout))
    # the resolved settings, saved in each sweep directory, differ only in where the sweep is
    a, b = ((tmp_path / d / "config.toml").read_text().splitlines() for d in "ab")
    assert [x for x in a if not x.startswith("run-dir")] == [x for x in b if not x.startswith("run-dir")]
    assert 'lr = [0.1, 0.01]' in a and "overwrite = false" not in a


def test_flags_override_the_file_and_print_config_runs_as_a_config(fake_dataset, tmp_path):
    (tmp_path / "s.toml").write_text(TOML)
    printed = cli("sweep", "--config", tmp_path / "s.toml", "--epochs", "1", "--hidden", "4",
                  "--run-dir", tmp_path / "p", "--print-config")
    assert printed.exit_code == 0, printed.stderr
    assert not (tmp_path / "p").exists()  # printed, nothing run
    assert "epochs = 1\n" in printed.stdout and "hidden = [4]\n" in printed.stdout and "lr = [0.1, 0.01]\n" in \
        printed.stdout
    (tmp_path / "resolved.toml").write_text(printed.stdout)
    again = cli("sweep", "--config", tmp_path / "resolved.toml", "--print-config")
    assert again.stdout == printed.stdout  # a fixed point: the printed settings read back as they are
    ran = cli("sweep", "--config", tmp_path / "resolved.toml", "--json")
    assert ran.exit_code == 0, ran.stderr
    doc = json.loads(ran.stdout)
    assert doc["sweep_dir"] == str(tmp_path / "p") and len(doc["cells"]) == 2
    assert {c["epochs_run"] for c in doc["cells"]} == {1}


def test_train_reads_a_config_and_saves_its_resolved_settings(fake_dataset, tmp_path):
    (tmp_path / "t.toml").write_text('optim = "sgd"\nlr = 0.05\nhidden = 4\nbatch-size = 16\nepochs = 2\n')
    result = cli("train", "--config", tmp_path / "t.toml", "--seed", "3", "--run-dir", tmp_path / "r", "--json")
    assert result.exit_code == 0, result.stderr
    config = json.loads(result.stdout)["config"]
    assert (config["optim"], config["lr"], config["model"]["hidden"], config["seed"]) == ("sgd", 0.05, 4, 3)
    saved = (tmp_path / "r" / "config.toml").read_text()
    assert 'optim = "sgd"\n' in saved and "seed = 3\n" in saved and "resume" not in saved
    assert "config.toml" in json.loads((tmp_path / "r" / ".fmae.json").read_text())["files"]
    again = cli("train", "--config", tmp_path / "r" / "config.toml", "--overwrite", "--json")  # runs as a config
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["final_test_loss"] == json.loads(result.stdout)["final_test_loss"]


@pytest.mark.parametrize("command, text, needle", [
    ("sweep", "optim = ['sgd']\nlearning_rate = [0.1]\n", "unknown key 'learning_rate'"),
    ("sweep", "epochs = '3'\n", "key 'epochs': expected a whole number, got '3'"),
    ("sweep", "lr = [0.1, 'x']\n", "key 'lr': expected a number, got 'x'"),
    ("sweep", "optim = ['nadam']\n", "key 'optim': expected one of adam, sgd, got 'nadam'"),
    ("sweep", "overwrite = 1\n", "key 'overwrite': expected true or false, got 1"),
    ("train", "hidden = [4, 8]\n", "key 'hidden': expected one value, got a list"),
    ("train", "config = 'other.toml'\n", "unknown key 'config'"),
    ("train", "lr = 0.1\nlr =", "not a TOML file"),
    ("train", "batch-size = 16\nbatch_size = 32\n", "key 'batch_size' is given twice"),
])
def test_a_bad_key_or_type_is_one_error_naming_the_file_and_the_key(command, text, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text(text)
    result = cli(command, "--config", "c.toml", "--json")
    assert result.exit_code == 2, result.stderr
    line = one_error_line(result.stderr, needle, result.stdout)
    assert line.startswith("error: c.toml") or "--config c.toml" in line
    assert json.loads(result.stdout)["error"]["exit_code"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]  # nothing written


def test_a_missing_config_file_is_one_error(tmp_path):
    result = cli("train", "--config", tmp_path / "none.toml")
    assert result.exit_code == 2
    one_error_line(result.stderr, "cannot read --config")
