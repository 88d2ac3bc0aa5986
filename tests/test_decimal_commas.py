"""A decimal comma is never read as two values (docs/options.md#numbers-and-commas): `--lr 1,5` is
refused with both spellings in its hint; `--lr 0.1,0.01` and integer lists stay lists."""

from __future__ import annotations

import pytest

from fmae.cli.parsing import refuse_decimal_commas
from fmae.errors import ConfigError
from tests.helpers import cli, one_error_line, tiny

REFUSED = [
    (["sweep", "--lr", "1,5"], "--lr 1,5: a comma is not a decimal point",
     "write --lr 1.5 for one number, or --lr 1 5 for 2 values"),
    (["sweep", "--lr", "0,1"], "--lr 0,1", "write --lr 0.1 for one number, or --lr 0 1 for 2 values"),
    (["sweep", "--lr=1,5"], "--lr 1,5", "--lr 1.5"),
    (["sweep", "--lr", "0.1", "1,5"], "--lr 1,5", "--lr 1.5"),
    (["sweep", "--lr", "0.1,1"], "--lr 0.1,1", "write --lr 0.1 1 for 2 values"),
    (["sweep", "--lr", "1,000.5"], "--lr 1,000.5", "--lr 1 000.5"),  # a thousands separator is no list either
    (["train", "--lr", "1,5"], "--lr 1,5: a comma is not a decimal point", "write --lr 1.5 for one number)"),
    (["train", "--momentum", "0,9"], "--momentum 0,9", "write --momentum 0.9"),
    (["sweep", "--momentum", "0,9"], "--momentum 0,9", "write --momentum 0.9"),
    (["denoise", "--ckpt", "m.pt", "--sigma", "0,5"], "--sigma 0,5", "--sigma 0.5 for one number, or --sigma 0 5"),
]


@pytest.mark.parametrize("args, message, hint", REFUSED)
def test_a_decimal_comma_is_refused_with_both_spellings(args, message, hint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli(*args, "--json")
    assert result.exit_code == 2, result.stderr
    line = one_error_line(result.stderr, message, result.stdout)
    assert hint in line
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_lists_written_with_points_or_exponents_and_integer_lists_stay_lists(fake_dataset, tmp_path):
    result = cli("sweep", "--lr", "0.1,1e-2", "--hidden", "4,8", *tiny(1, hidden=None), "--run-dir", tmp_path / "s",
                 "--json")
    assert result.exit_code == 0, result.stderr
    import json

    assert sorted((c["lr"], c["hidden"]) for c in json.loads(result.stdout)["cells"]) == [
        (0.01, 4), (0.01, 8), (0.1, 4), (0.1, 8)]


def test_the_rule_reads_only_the_decimal_options_values():
    lists = ("--lr", "--hidden")
    for args in (["--lr", "0.1,0.01", "1e-3,2E-4"], ["--hidden", "1,5"], ["--run-dir", "1,5"],
                 ["--lr", "0.1", "--run-dir", "a,b"], ["--", "--lr", "1,5"]):
        refuse_decimal_commas(args, {"--lr", "--momentum"}, lists)
    for args in (["--lr", "0.1", "1,5"], ["--momentum", "0,9"], ["--lr=2,5"], ["--hidden", "4", "--lr", "0,5"]):
        with pytest.raises(ConfigError):
            refuse_decimal_commas(args, {"--lr", "--momentum"}, lists)
