"""The published study (docs/results, docs/study.md) against the files it comes from.

Generated tables (between `<!-- generated: NAME from FILES -->` and `<!-- end: NAME -->`) must equal what
examples/study_tables.py computes from FILES, digit for digit; a changed digit in a table or in a data
file is caught. That every number in the prose is tied to its source is tests/test_docs_sources.py's
(examples/docs_sources.py, proved by mutation). Every published file has a provenance record,
and the study's files come from one version of fmae, one commit for the training, one mode: portable.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
PAGES = (RESULTS / "README.md", ROOT / "docs" / "study.md")


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tables = _module("study_tables")


def blocks(page: Path) -> list[re.Match[str]]:
    return list(tables.BLOCK.finditer(page.read_text()))


def test_every_generated_table_is_on_a_page_once_and_matches_its_files():
    names = [m["name"] for page in PAGES for m in blocks(page)]
    assert sorted(names) == sorted(tables.BLOCKS), "each table once, none unknown"
    for page in PAGES:
        _, changed = tables.render(page.read_text(), RESULTS)
        assert changed == [], f"{page.name}: stale tables {changed}: run python3 examples/study_tables.py " \
                              "docs/results --write"


def test_each_table_names_files_that_exist_or_says_pending():
    for page in PAGES:
        for m in blocks(page):
            files = [f.strip() for f in m["files"].split(",") if not f.strip().endswith("?")]  # FILE?: if made
            missing = [f for f in files if not (RESULTS / f).exists()]
            assert not missing or "pending" in m["body"].lower(), (page.name, m["name"], missing)


def test_no_path_outside_the_repository():
    for page in [*PAGES, *RESULTS.rglob("*.md"), *RESULTS.rglob("*.csv"), *RESULTS.rglob("*.json")]:
        text = page.read_text()
        assert "shared/" not in text and "design.md" not in text, page
        assert not re.search(r"(?<![\w.])/(work|root|home|tmp|usr)/", text), page


def provenance() -> dict[str, dict]:
    return json.loads((RESULTS / "provenance.json").read_text())["files"]


def test_every_published_file_has_its_provenance():
    published = {str(p.relative_to(RESULTS)) for p in RESULTS.rglob("*")
                 if p.is_file() and p.suffix in (".csv", ".json", ".png") and p.name != "provenance.json"}
    records = provenance()
    assert published == set(records), ("no record", sorted(published - set(records)),
                                       "a record of no file", sorted(set(records) - published))
    for name, rec in records.items():
        assert {"command", "commit", "fmae", "cpu", "vendor", "finished"} <= set(rec), name


def test_one_version_one_training_commit_one_mode():
    records = provenance()
    assert len({r["fmae"] for r in records.values()}) == 1
    trained = [r for r in records.values() if "numerics" in r]
    assert trained, "no trained file"
    assert {r["numerics"] for r in trained} == {"portable"}
    assert {r["mkl_cbwr"] for r in trained} == {"AVX2"} and {r["threads"] for r in trained} == {1}
    assert len({r["commit"] for r in trained}) == 1, "the training of the study's files ran one commit"
    assert len({(r["cpu"], r["vendor"]) for r in trained}) == 1


def _one_digit_changed(text: str, start: int) -> str:
    """`text` with the last digit of the first decimal number at or after `start` changed."""
    m = re.compile(r"\d\.\d+").search(text, start)
    end = m.end() - 1
    return text[:end] + str((int(text[end]) + 1) % 10) + text[end + 1:]


def test_a_changed_digit_in_a_table_is_caught():
    text = (RESULTS / "README.md").read_text()
    checked = 0
    for m in blocks(RESULTS / "README.md"):
        if "| --- " not in m["body"] or "pending" in m["body"].lower():
            continue
        start = m["body"].index("\n| ", m["body"].index("| ---"))  # the first data row
        mutated = _one_digit_changed(text, m.start("body") + start)
        _, changed = tables.render(mutated, RESULTS)
        assert changed == [m["name"]], m["name"]
        checked += 1
    assert checked >= 5


def test_a_changed_digit_in_a_data_file_is_caught(tmp_path):
    docs = tmp_path / "results"
    shutil.copytree(RESULTS, docs)
    path = docs / "grid" / "cells.csv"
    lines = path.read_text().splitlines()
    head = lines[0].split(",")
    fields = lines[1].split(",")
    i = head.index("final_test_loss")
    fields[i] = fields[i][:7] + str((int(fields[i][7]) + 1) % 10) + fields[i][8:]  # its 5th decimal
    path.write_text("\n".join([lines[0], ",".join(fields), *lines[2:]]) + "\n")
    _, changed = tables.render((docs / "README.md").read_text(), docs)
    assert {"grid", "grid-tests"} <= set(changed)


def test_a_pruned_cell_s_losses_are_the_full_grid_s_digit_for_digit():
    """What docs/results says of halving in the portable mode: every cell of the halving sweeps ends with
    the test loss the same cell of the full grid had at that epoch, to the last digit."""
    curves = {(r["cell"], r["epoch"]): r["test_loss"] for r in tables.rows(RESULTS / "grid/curves.csv")}
    cells = [r for f in ("halving/sgd-cells.csv", "halving/adam-cells.csv") for r in tables.rows(RESULTS / f)]
    assert len(cells) == 24 and {r["status"] for r in cells} == {"completed", "pruned"}
    for r in cells:
        name = f"{r['optim']}-lr{r['lr']:g}-h{r['hidden']}-s{r['seed']}"
        assert r["final_test_loss"] == curves[(name, r["epochs_run"])], name
