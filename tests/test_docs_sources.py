"""Every number in the prose tied to its source (examples/docs_sources.py): the markers, the three checks and
the mutations each must catch, on a synthetic docs directory, then on the published pages once they carry
markers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"


def _load():
    spec = importlib.util.spec_from_file_location("docs_sources", ROOT / "examples" / "docs_sources.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["docs_sources"] = module  # a dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


ds = _load()

CELLS = """optim,lr,hidden,seed,final_test_loss,fraction,status
sgd,0.1,512,0,0.030254123,0.5,ok
sgd,0.1,256,0,0.036117,0.25,ok
adam,0.001,512,1,0.0041234,0.1934,ok
"""
CURVES = """cell,epoch,test_loss
adam-lr0.001-h512-s0,1,0.022009
adam-lr0.001-h512-s0,30,0.00552612
adam-lr0.001-h512-s0,100,0.0041234
"""
EVAL = '{"images": 1200, "checkpoints": [{"psnr": 22.1}, {"psnr": 25.3449, "ssim": 0.000198}]}'
BLOCK = """<!-- generated: grid-tests from grid/cells.csv -->
| comparison (a - b) | mean a - mean b | 95% CI of the difference | p |
| --- | --- | --- | --- |
| `adam`: h 512 - h 256 | **-0.001601** | [-0.002319, -0.000883] | 2.0e-04 |
| sgd: h 512 - h 256 | -0.005863 | [-0.007000, -0.004726] | 0.0012 |
<!-- end: grid-tests -->"""
PAGE = f"""# Results

With lr 0.1, SGD at h = 512 ends at 0.030254<!--@ grid/cells.csv | optim=sgd lr=0.1 hidden=512 seed=0 |
final_test_loss --> and at h = 256 at **0.0361**<!--@ grid/cells.csv | optim=sgd hidden=256 | final_test_loss -->
(`grid/cells.csv`, seed 0).

Adam after one epoch: 0.022009<!--@ grid/curves.csv | cell=adam-lr0.001-h512-s0 epoch=1 | test_loss -->; after
30<!--@ grid/curves.csv | cell=adam-lr0.001-h512-s0 epoch=30 | epoch --> epochs 0.0055<!--@ grid/curves.csv |
cell=adam-lr0.001-h512-s0 epoch=30 | test_loss --> (`grid/curves.csv`), a PSNR of 25.34<!--@ eval.json |
checkpoints.1.psnr --> dB over 1,200<!--@ eval.json | images --> images ([the evaluation](eval.json)).

{BLOCK}

Adam's h 512 - h 256 is -0.001601<!--@ table grid-tests | adam: h 512 - h 256 | mean a - mean b -->, interval
[-0.002319<!--@ table grid-tests | adam: h 512 - h 256 | 95% CI of the difference -->,
-0.000883<!--@ table grid-tests | adam: h 512 - h 256 | 95% CI of the difference -->], p =
2.0e-04<!--@ table grid-tests | adam: h 512 - h 256 | p -->; the share is 19%<!--@ grid/cells.csv |
optim=adam seed=1 | fraction --> (`grid/cells.csv`), seven of them as in §2.1 of the report (2026-12-06,
torch 2.14.1, commit 5771d54, [figure 3](figures/fig3.png), https://example.org/a/0.77, `0.99`).

| cell | final test loss | file |
| --- | --- | --- |
| sgd h 512 | 0.03025<!--@ grid/cells.csv \\| optim=sgd hidden=512 \\| final_test_loss --> | `grid/cells.csv` |
| 1 | 19.3<!--@ grid/cells.csv \\| optim=adam \\| fraction \\| pct --> | `grid/cells.csv` |

```
fmae train --lr 0.37 --epochs 12
```
"""
ALLOWED = {"0.1", "512", "256", "0", "3", "100"}


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    d = tmp_path / "docs" / "results"
    (d / "grid").mkdir(parents=True)
    (d / "grid" / "cells.csv").write_text(CELLS)
    (d / "grid" / "curves.csv").write_text(CURVES)
    (d / "eval.json").write_text(EVAL)
    (d / "README.md").write_text(PAGE)
    return d


def errors(text: str, d: Path) -> list[str]:
    return ds.check_markers(text, d, ds.tables_of(text))


def test_the_markers_are_read():
    found = ds.markers(PAGE)
    assert [m.number for m in found] == ["0.030254", "0.0361", "0.022009", "30", "0.0055", "25.34", "1,200",
                                         "-0.001601", "-0.002319", "-0.000883", "2.0e-04", "19%", "0.03025", "19.3"]
    first, table, pct = found[0], found[7], found[-1]
    assert (first.kind, first.path, first.field) == ("csv", "grid/cells.csv", "final_test_loss")
    assert first.selector == (("optim", "sgd"), ("lr", "0.1"), ("hidden", "512"), ("seed", "0"))
    assert (table.kind, table.path, table.row, table.field) == ("table", "grid-tests", "adam: h 512 - h 256",
                                                                  "mean a - mean b")
    assert (found[5].kind, found[5].field) == ("json", "checkpoints.1.psnr")
    assert pct.flags == {"pct"} and pct.error is None
    assert PAGE[first.start:first.end] == "0.030254" and first.line == 3


def test_a_correct_page_passes_every_check(docs):
    assert errors(PAGE, docs) == []
    assert ds.check_citations(PAGE) == []
    assert ds.unmarked(PAGE, ALLOWED) == []


def test_the_cli_checks_the_three_pages(docs, capsys):
    (docs.parent / "study.md").write_text("Over 100 epochs: 0.0041<!--@ grid/cells.csv | optim=adam | "
                                          "final_test_loss --> (`grid/cells.csv`).\n")
    (docs.parent.parent / "README.md").write_text("Adam: see [the results](docs/results/README.md).\n")
    assert ds.main([str(docs)]) == 0
    (docs.parent / "study.md").write_text("Over 100 epochs: 0.0042<!--@ grid/cells.csv | optim=adam | "
                                          "final_test_loss --> (`grid/cells.csv`), 0.3 more.\n")
    assert ds.main([str(docs)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all("study.md: line 1" in line for line in out)
    assert "0.0041234" in out[0] and "0.3: a number with no marker" in out[1]


def _marked(text: str, number: str):
    return next(m for m in ds.markers(text) if m.number == number)


def _changed_digit(text: str, number: str) -> str:
    m = _marked(text, number)
    i = max(i for i in range(m.start, m.end) if text[i].isdigit())
    return text[:i] + str((int(text[i]) + 1) % 10) + text[i + 1:]


@pytest.mark.parametrize("number", ["0.030254", "0.0361", "30", "0.0055", "25.34", "1,200", "-0.001601", "2.0e-04",
                                    "19%", "19.3"])
def test_a_changed_digit_is_caught(docs, number):
    mutated = _changed_digit(PAGE, number)
    assert mutated != PAGE
    bad = errors(mutated, docs)
    assert len(bad) == 1, bad


def _swapped(text: str, a: str, b: str) -> str:
    i, j = _marked(text, a).start, _marked(text, b).start
    assert i < j
    return text[:i] + b + text[i + len(a):j] + a + text[j + len(b):]


@pytest.mark.parametrize("a, b", [("0.030254", "0.0361"), ("0.022009", "0.0055"), ("-0.001601", "-0.002319")])
def test_two_swapped_numbers_are_caught(docs, a, b):
    assert len(errors(_swapped(PAGE, a, b), docs)) == 2


def test_a_number_moved_to_another_row_or_field_is_caught(docs):
    wrong_row = PAGE.replace("optim=sgd hidden=256 | final_test_loss", "optim=adam hidden=512 | final_test_loss")
    assert len(errors(wrong_row, docs)) == 1
    wrong_column = PAGE.replace("checkpoints.1.psnr", "checkpoints.0.psnr")
    assert len(errors(wrong_column, docs)) == 1
    wrong_table_column = PAGE.replace("adam: h 512 - h 256 | p -->", "sgd: h 512 - h 256 | p -->")
    assert "the cell holds 0.0012" in errors(wrong_table_column, docs)[0]


def test_a_wrong_file_citation_is_caught():
    wrong = PAGE.replace("(`grid/curves.csv`)", "(`grid/cells.csv`)")
    bad = ds.check_citations(wrong)
    assert any("names grid/curves.csv, which this paragraph does not cite" in e for e in bad)
    assert any("`grid/cells.csv` is cited, but no marker here takes a number from it" in e for e in bad)
    row = PAGE.replace("| `grid/cells.csv` |\n| 1 |", "| `grid/curves.csv` |\n| 1 |")
    assert len(ds.check_citations(row)) == 2
    link = PAGE.replace("](eval.json)", "](denoise.json)")
    assert len(ds.check_citations(link)) == 2
    uncited = PAGE.replace("\n(`grid/cells.csv`, seed 0).", "\nseed 0.")
    assert uncited != PAGE
    assert ds.check_citations(uncited) == [
        "line 3: a marker names grid/cells.csv, which this paragraph does not cite"]


def test_a_file_is_cited_relative_to_docs_results_or_by_a_link_from_elsewhere():
    for cited in ("`grid/cells.csv`", "[cells](results/grid/cells.csv)", "`docs/results/grid/cells.csv`",
                  "[cells](./grid/cells.csv#L2)"):
        assert ds.check_citations(f"0.5<!--@ grid/cells.csv | seed=0 | fraction --> ({cited}).\n") == []
    assert ds.check_citations("0.5<!--@ grid/cells.csv | seed=0 | fraction --> (`edge/grid/cells.csv`).\n") != []


def test_a_table_marker_needs_no_file_and_a_glob_is_not_a_citation():
    text = "-0.001601<!--@ table grid-tests | adam: h 512 - h 256 | mean a - mean b --> (`grid/*.csv`)\n"
    assert ds.check_citations(text) == []


def test_beside_a_table_marker_the_files_of_its_block_may_be_cited():
    text = "-0.001601<!--@ table grid-tests | adam: h 512 - h 256 | mean a - mean b --> (`grid/cells.csv`)\n"
    assert ds.check_citations(text) != []
    assert ds.files_of(BLOCK) == {"grid-tests": ["grid/cells.csv"]}
    assert ds.check_citations(text, ds.files_of(BLOCK)) == []
    assert ds.check_citations(BLOCK + "\n\n" + text) == []
    assert ds.check_citations(text.replace("cells.csv`", "curves.csv`"), ds.files_of(BLOCK)) != []


@pytest.mark.parametrize("added", ["the loss was 0.0412 there", "7 cells diverged", "a 12% gain", "-3.5 dB",
                                   "about 1,300 seconds", "p = 3.1e-05", "**0.0041** at the end",
                                   "| 0.0412 | row |", "0.0412<!-- not a marker -->"])
def test_an_unmarked_data_number_is_caught(added):
    text = PAGE + "\n" + added + "\n"
    bad = ds.unmarked(text, ALLOWED)
    assert len(bad) == 1 and bad[0].startswith(f"line {text.count(chr(10)) }: "), bad


@pytest.mark.parametrize("added", ["seven cells", "§2.1 and §§3", "on 2026-12-06", "torch 2.14.1 and v1.2",
                                   "commit 5771d54ab", "`fmae --lr 0.3`", "``a `0.3` b``", "[x](runs/0.3/a.png)",
                                   "https://example.org/0.3?a=4", "<img width=\"600\">", "Figure 2a and 3b",
                                   "1. a list item", "## 2.1 A heading", "h512 and x86-64 and fp32 and lr0.3",
                                   "| 7 | a numbered row |", "lr 0.1 at h = 512, 3 seeds", "<!-- 0.4 -->"])
def test_what_is_not_a_data_number(added):
    assert ds.unmarked(PAGE + "\n" + added + "\n", ALLOWED) == []


def test_generated_blocks_and_code_are_not_prose():
    assert ds.unmarked(BLOCK + "\n```\n0.3 0.4\n```\n", set()) == []
    assert ds.markers("`0.3<!--@ eval.json | images -->`\n") == []


@pytest.mark.parametrize("selector, matched", [("optim=rmsprop", 0), ("optim=sgd", 2), ("lr=0.10 hidden=512", 1),
                                                ("lr=1e-1 hidden=512.0", 1)])
def test_a_row_selector_must_match_exactly_one_row(docs, selector, matched):
    text = f"0.030254<!--@ grid/cells.csv | {selector} | final_test_loss -->\n"
    bad = errors(text, docs)
    if matched == 1:
        assert bad == []
    else:
        assert len(bad) == 1 and f"{matched} rows match {selector}" in bad[0]


@pytest.mark.parametrize("printed, value, ok", [
    ("0.0055", 0.00552612, True), ("0.0056", 0.00552612, False), ("0.00553", 0.00552612, True),
    ("19%", 0.1934, True), ("19.3%", 0.1934, True), ("19.34%", 0.1934, True), ("20%", 0.1934, False),
    ("88", 88, True), ("88", 88.4, True), ("89", 88.4, False), ("88.0", 88, True), ("1,200", 1200, True),
    ("-0.0016", -0.001601, True), ("0.0016", -0.001601, False), ("2.0e-04", 0.000198, True),
    ("2.1e-04", 0.000198, False), ("0.125", 0.125, True), ("0.13", 0.125, True), ("0.12", 0.125, True),
    ("0.000", -0.0001, True), ("25.34", 25.3449, True), ("25.35", 25.3449, False),
])
def test_the_rounding_and_percent_rules(printed, value, ok):
    assert ds.matches(printed, value) is ok


def test_the_pct_and_abs_flags():
    assert ds.matches("19", 0.1934, pct=True) and not ds.matches("19", 0.1934)
    assert ds.matches("0.0016", -0.001601, absolute=True)


def test_malformed_and_orphan_markers_are_errors(docs):
    for text, message in [
        ("0.5<!--@ grid/cells.csv | final_test_loss -->", "a CSV marker is"),
        ("0.5<!--@ grid/cells.csv | seed | fraction -->", "expected key=value pairs"),
        ("0.5<!--@ eval.json -->", "a JSON marker is"),
        ("0.5<!--@ grid/cells.txt | a=1 | b -->", "neither a .csv"),
        ("0.5<!--@ table grid-tests | x -->", "a table marker is"),
        ("0.5<!--@ grid/none.csv | seed=0 | fraction -->", "no such file"),
        ("0.5<!--@ ../cells.csv | seed=0 | fraction -->", "not a path under"),
        ("0.5<!--@ grid/cells.csv | seed=0 | loss -->", "no column loss"),
        ("0.5<!--@ grid/cells.csv | optim=sgd lr=0.1 hidden=512 | status -->", "not a number"),
        ("0.5<!--@ eval.json | checkpoints.2.psnr -->", "stops at '2'"),
        ("0.5<!--@ table nothing | a | b -->", "no generated table 'nothing'"),
        ("0.5<!--@ table grid-tests | adam | p -->", "0 rows whose first cell"),
        ("0.5<!--@ table grid-tests | sgd: h 512 - h 256 | q -->", "0 columns headed"),
        ("| a | 0.5<!--@ grid/cells.csv | seed=0 | fraction --> |", r"write the marker's separators as \|"),
        ("the end.<!--@ grid/cells.csv | seed=0 | fraction -->", "follows no number"),
    ]:
        bad = ds.check_markers(text + "\n", docs, ds.tables_of(PAGE))
        assert len(bad) == 1 and message in bad[0], (text, bad)


def test_the_study_settings_come_from_its_command():
    script = """#!/bin/sh
# grid: lr 0.7 in a comment is not a setting
EPOCHS=${EPOCHS:-100}
SEEDS=${SEEDS:-0 1 2}
GRID="--lr 0.1 0.01 --hidden 64 512"
fmae sweep $GRID --seed 3 4 --epochs $EPOCHS --sigma 0.25 1 \\
  --jobs 2
fmae sweep --lr 1.0 0.0003 --hidden 512
"""
    assert ds.study_settings(script) == {"100", "0", "1", "2", "0.1", "0.01", "64", "512", "3", "4", "0.25", "1.0",
                                         "0.0003"}
    assert {"784", "28", "60,000", "10,000", "95%"} <= set(ds.CONSTANTS)


# ---- the published pages -------------------------------------------------------------------------------------

PAGES = ds.pages(RESULTS)
ALLOWED_REAL = ds.study_settings((ROOT / "examples" / "study.sh").read_text()) | set(ds.CONSTANTS)


def test_the_published_pages_carry_markers_and_pass():
    assert any("<!--@" in p.read_text() for p in PAGES)
    assert ds.check_pages(RESULTS, PAGES, ALLOWED_REAL) == []


def _study() -> tuple[str, list]:
    text = (ROOT / "docs" / "study.md").read_text()
    return text, [m for m in ds.markers(text) if not m.error]


def _real_errors(text: str) -> list[str]:
    return ds.check_markers(text, RESULTS, ds.tables_of(text, (RESULTS / "README.md").read_text()))


def test_a_changed_digit_on_the_published_pages_is_caught():
    text, found = _study()
    m = next(m for m in found if m.kind in ("csv", "json"))
    i = max(i for i in range(m.start, m.end) if text[i].isdigit())
    mutated = text[:i] + str((int(text[i]) + 1) % 10) + text[i + 1:]
    assert len(_real_errors(mutated)) > len(_real_errors(text))


def test_two_swapped_numbers_on_the_published_pages_are_caught():
    text, found = _study()
    a = found[0]
    b = next(m for m in found[1:] if m.number != a.number)
    mutated = text[:a.start] + b.number + text[a.end:b.start] + a.number + text[b.end:]
    assert len(_real_errors(mutated)) > len(_real_errors(text))


def test_a_wrong_citation_on_the_published_pages_is_caught():
    text, found = _study()
    files = ds.files_of(text, (RESULTS / "README.md").read_text())
    scan = ds._without(ds._prose(text), ds.COMMENT)
    csvs = sorted(str(p.relative_to(RESULTS)) for p in RESULTS.rglob("*.csv"))
    for a, b in ds._units(scan):
        here = [m for m in found if a <= m.start < b]
        cited = [c for c in ds.CITED.finditer(scan, a, b) if c.group(1) and c.group(1).endswith(".csv")]
        if not here or not cited:
            continue
        # the first citation a marker names (its replacement then leaves that marker uncited), else the first
        c = next((c for c in cited if any(ds._names(ds._cited(c.group(1)), m.path) for m in here)), cited[0])
        named = ({m.path for m in here} | {f for m in here for f in files.get(m.path, ())}
                 | {ds._cited(c.group(1)) for c in ds.CITED.finditer(scan, a, b) if c.group(1)})
        other = next(p for p in csvs if not any(ds._names(n, p) or ds._names(p, n) for n in named))
        mutated = text[:c.start(1)] + other + text[c.end(1):]
        assert len(ds.check_citations(mutated, files)) > len(ds.check_citations(text, files))
        return
    pytest.fail("no paragraph or row of docs/study.md cites a CSV beside its markers")
