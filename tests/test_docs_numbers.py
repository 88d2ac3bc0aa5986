"""The numbers in docs/results/README.md and docs/study.md against the files they come from.

Generated tables (between `<!-- generated: NAME from FILES -->` and `<!-- end: NAME -->`) must equal what
examples/study_tables.py computes from FILES, digit for digit. A decimal number in the text outside them
must be one of the values of the data files, of the generated tables, or of the study's command
(examples/study.sh), at the precision it is printed with. The last tests change one digit and check
that each check catches it.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest

from fmae import stats

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
PAGES = (RESULTS / "README.md", ROOT / "docs" / "study.md")
NUMBER = re.compile(r"(?<![\w.§])-?\d[\d,]*\.\d+(?![\w.]*\d)")  # 0.0041, -5.09, 1,200.5; not 2.14.1, v1.2 nor §2.1
# numbers the pages state that are neither data nor measured: the Student t quantiles the rule quotes and the
# sign test's floor with 3 seeds, computed, not typed
CONSTANTS = (stats.t_quantile(2), stats.t_quantile(4), stats.sign_test_min_p(3))


def _tables():
    spec = importlib.util.spec_from_file_location("study_tables", ROOT / "examples" / "study_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tables = _tables()


def _json_numbers(doc, out):
    if isinstance(doc, dict):
        for v in doc.values():
            _json_numbers(v, out)
    elif isinstance(doc, list):
        for v in doc:
            _json_numbers(v, out)
    elif isinstance(doc, (int, float)) and not isinstance(doc, bool):
        out.append(float(doc))


def data_values(results: Path) -> list[float]:
    out: list[float] = []
    for path in results.rglob("*.csv"):
        with open(path, newline="") as f:
            for row in csv.reader(f):
                for cell in row:
                    try:
                        out.append(float(cell))
                    except ValueError:
                        pass
    for path in results.rglob("*.json"):
        _json_numbers(json.loads(path.read_text()), out)
    return out


def text_values(text: str) -> list[float]:
    return [float(m.replace(",", "")) for m in NUMBER.findall(text)]


def prose(text: str) -> str:
    """The text without its generated blocks and code blocks (commands)."""
    text = tables.BLOCK.sub("", text)
    return re.sub(r"```.*?```", "", text, flags=re.S)


def unmatched(text: str, candidates: list[float]) -> list[str]:
    """The decimal numbers of `text` that no candidate gives at their printed precision."""
    bad = []
    for m in NUMBER.finditer(text):
        printed = m.group().replace(",", "")
        decimals = len(printed.split(".")[1])
        if not any(f"{abs(c):.{decimals}f}" == printed.lstrip("-") for c in candidates):
            bad.append(printed)
    return bad


def candidates(results: Path) -> list[float]:
    generated = "".join(m.group() for page in PAGES if page.exists() for m in tables.BLOCK.finditer(page.read_text()))
    generated += "".join(m.group() for m in tables.BLOCK.finditer((results / "README.md").read_text()))
    command = (ROOT / "examples" / "study.sh").read_text()
    return [*data_values(results), *text_values(generated), *text_values(command), *CONSTANTS]


def test_every_generated_table_matches_its_files():
    text = (RESULTS / "README.md").read_text()
    names = [m["name"] for m in tables.BLOCK.finditer(text)]
    assert sorted(names) == sorted(tables.BLOCKS), "each table once, none unknown"
    _, changed = tables.render(text, RESULTS)
    assert changed == [], f"stale tables {changed}: run python3 examples/study_tables.py docs/results --write"


def test_each_table_names_files_that_exist_or_says_pending():
    for m in tables.BLOCK.finditer((RESULTS / "README.md").read_text()):
        files = [f.strip() for f in m["files"].split(",")]
        missing = [f for f in files if not (RESULTS / f).exists()]
        assert not missing or "**Pending**" in m["body"] or "pending:" in m["body"], (m["name"], missing)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_number_in_the_text_comes_from_a_file(page):
    assert page.exists()
    bad = unmatched(prose(page.read_text()), candidates(RESULTS))
    assert bad == [], f"{page.name}: numbers found in no data file, table or command: {bad}"


def test_no_path_outside_the_repository():
    for page in [*PAGES, *RESULTS.rglob("*.md"), *RESULTS.rglob("*.csv"), *RESULTS.rglob("*.json")]:
        text = page.read_text()
        assert "shared/" not in text and "design.md" not in text, page
        assert not re.search(r"(?<![\w.])/(work|root|home|tmp|usr)/", text), page


def _one_digit_changed(text: str, start: int) -> str:
    """`text` with the last digit of the first decimal number at or after `start` changed."""
    m = NUMBER.search(text, start)
    end = m.end() - 1
    digit = text[end]
    return text[:end] + str((int(digit) + 1) % 10) + text[end + 1:]


def test_a_changed_digit_in_a_table_is_caught(tmp_path):
    docs = tmp_path / "results"
    shutil.copytree(RESULTS, docs)
    text = (docs / "README.md").read_text()
    for name in ("seeds30", "seeds30-tests", "halving", "denoise"):
        start = text.index(f"<!-- generated: {name} ")
        start = text.index("\n| ", text.index("| ---", start))  # the first data row
        mutated = _one_digit_changed(text, start)
        assert mutated != text
        _, changed = tables.render(mutated, docs)
        assert changed == [name]


def test_a_changed_digit_in_a_data_file_is_caught(tmp_path):
    docs = tmp_path / "results"
    shutil.copytree(RESULTS, docs)
    path = docs / "seeds" / "sgd-cells.csv"
    rows = path.read_text().splitlines()
    fields = rows[1].split(",")
    fields[8] = fields[8][:7] + str((int(fields[8][7]) + 1) % 10) + fields[8][8:]  # final_test_loss, 6th decimal
    path.write_text("\n".join([rows[0], ",".join(fields), *rows[2:]]) + "\n")
    _, changed = tables.render((docs / "README.md").read_text(), docs)
    assert {"seeds30-tests"} <= set(changed)


def test_a_changed_digit_in_the_text_is_caught():
    text = prose((RESULTS / "README.md").read_text())
    cands = candidates(RESULTS)
    assert unmatched(text, cands) == []
    for quoted in ("0.20614884406887754", "0.004206", "0.006846"):
        assert quoted in text
        start = text.index(quoted)
        assert unmatched(_one_digit_changed(text, start), cands) != [], quoted
