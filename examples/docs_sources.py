"""Every number in the prose of the study's pages tied to the file and field it comes from.

    python3 examples/docs_sources.py docs/results     # check docs/results/README.md, docs/study.md, README.md

A number in the text (outside generated tables and code) is followed by an HTML comment, its marker, that
names its source; HTML comments do not render:

    0.030254<!--@ grid/cells.csv | optim=sgd lr=0.1 hidden=512 seed=0 | final_test_loss -->
    25.34<!--@ eval.json | checkpoints.1.psnr -->
    -0.001601<!--@ table seeds100-tests | adam lr 0.001: h 512 - h 256 | mean a - mean b -->

A CSV marker: a path under the docs directory, `key=value` pairs that select exactly one row (numbers
compared as numbers, other text as text; a value with spaces in quotes) and a column. A JSON marker: a path
and a dotted path (list indices as integers). A table marker: a generated block of the page or of
docs/results/README.md, the row whose first cell reads the given text and the column whose header does
(backticks and `**` ignored), and the printed number must be one of that cell's numbers as written there.
In a table row the separators are written `\\|`, as GitHub's tables require. A CSV or JSON value printed
must equal the value rounded to the printed decimals (`19%`, or any number with a trailing `| pct`, is the
value x 100; `| abs` prints the magnitude; `1,200` and `2.0e-04` are read too).
Bold or italic may close between the number and its marker: `**0.0041**<!--@ ... -->`.

The checks: `check_markers` (each marked number against its source), `unmarked` (every number in the prose
has a marker or is one of the study's settings), `check_citations` (the files the markers of a table row or
a paragraph name are the files it cites in backticks or links, and no other CSV or JSON is cited there).
Needs only Python's standard library and examples/study_tables.py.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import re
import shlex
import sys
from collections.abc import Iterable, Mapping
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _study_tables():
    spec = importlib.util.spec_from_file_location("study_tables", Path(__file__).resolve().parent / "study_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tables = _study_tables()

# a numeral: an optional minus, digits (thousands separated by commas or not), decimals, an exponent, a percent
# sign; not part of a word, an identifier (h512, x86-64, fp32), a version (2.14.1) or a list without spaces
NUM = (r"(?<![\w.,/\-§])(?:-(?=\d))?(?:\d{1,3}(?:,\d{3})+|\d+)(?!,\d{3})(?:\.\d+)?(?:[eE][-+]?\d+)?"
       r"(?!\.?\d)(?![A-Za-wyz_])%?")
NUMBER = re.compile(NUM)
MARKER = re.compile(rf"(?P<num>{NUM})(?P<emph>[*_]*)[ \t]*<!--@(?P<body>.*?)-->", re.S)
OPEN = re.compile(r"<!--@")
FENCE = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1[^\n]*$", re.S | re.M)
CODE = re.compile(r"(`+)(?!`).+?(?<!`)\1(?!`)")
COMMENT = re.compile(r"<!--.*?-->", re.S)
# what `unmarked` does not read as data: URLs, link targets, HTML, section signs and figure numbers, dates,
# times, versions, commit hashes, list and heading numbering, a table's row numbers
NOT_DATA = [re.compile(p, f) for p, f in (
    (r"<?https?://[^\s)>]+>?", 0),
    (r"\]\([^)]*\)", 0),
    (r"^\s*\[[^\]]+\]:\s*\S+", re.M),
    (r"<[A-Za-z/][^>\n]*>", 0),
    (r"§+\s*\d+(?:\.\d+)*", 0),
    (r"\b(?:Figures?|Figs?\.|Tables?)\s+\d+[a-z]?(?:\s*(?:,|and|or|-|–)\s*\d+[a-z]?)*", 0),
    (r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?Z?)?\b", 0),
    (r"\bv?\d+(?:\.\d+){2,}\b|\bv\d+(?:\.\d+)*\b", 0),
    (r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}\b", 0),
    (r"^[ \t]*\d+[.)](?=\s)", re.M),
    (r"^#+[ \t]+\d+(?:\.\d+)*\.?", re.M),
    (r"^\|[ \t]*\d+[ \t]*(?=\|)", re.M),
)]
CITED = re.compile(r"`([^`\n]+)`|\]\(([^)\s]+)\)")
PREFIXES = ("", "results/", "docs/results/")  # a file under docs/results, cited from that page, docs/ or the root
FLAGS = {"pct", "abs"}


@dataclasses.dataclass
class Marker:
    """One marked number: as printed, where (offsets of the numeral, line), and its parsed source."""
    number: str
    start: int
    end: int
    line: int
    body: str
    kind: str = ""  # "csv", "json" or "table"
    path: str = ""  # the file (csv, json) or the block's name (table)
    selector: tuple[tuple[str, str], ...] = ()  # csv: the row's key=value pairs
    row: str = ""  # table: the first cell's text
    field: str = ""  # csv: the column; json: the dotted path; table: the column's header
    flags: frozenset[str] = dataclasses.field(default_factory=frozenset)
    error: str | None = None

    def where(self) -> str:
        return f"line {self.line}: {self.number}<!--@ {self.body} -->"


def _blank(text: str, spans: Iterable[tuple[int, int]]) -> str:
    """`text` with every span replaced by spaces, newlines kept (offsets and paragraphs stay where they were)."""
    chars = list(text)
    for a, b in spans:
        for i in range(a, b):
            if chars[i] != "\n":
                chars[i] = " "
    return "".join(chars)


def _without(text: str, *patterns: re.Pattern[str]) -> str:
    for p in patterns:
        text = _blank(text, (m.span() for m in p.finditer(text)))
    return text


def _prose(text: str) -> str:
    """The text with its fenced code and generated blocks blanked out."""
    return _without(text, FENCE, tables.BLOCK)


def _parse(m: re.Match[str], text: str) -> Marker:
    body = " ".join(m["body"].split())
    marker = Marker(m["num"], m.start("num"), m.end("num"), text.count("\n", 0, m.start()) + 1, body)
    line = text[text.rfind("\n", 0, m.start()) + 1:m.start()]
    if line.lstrip().startswith("|") and re.search(r"(?<!\\)\|", body):
        marker.error = r"in a table row, write the marker's separators as \| (a bare | splits the row's cells)"
        return marker
    parts = [p.strip() for p in body.replace("\\|", "|").split("|")]
    while len(parts) > 1 and parts[-1] in FLAGS:
        marker.flags |= {parts.pop()}
    head = parts[0]
    if head.startswith("table "):
        if len(parts) != 3:
            marker.error = "a table marker is `table NAME | first cell of the row | column header`"
            return marker
        marker.kind, marker.path, marker.row, marker.field = "table", head[6:].strip(), parts[1], parts[2]
        return marker
    marker.path = head
    if head.endswith(".csv"):
        if len(parts) != 3:
            marker.error = "a CSV marker is `PATH | key=value ... | column`"
            return marker
        marker.kind, marker.field = "csv", parts[2]
        try:
            pairs = [t.split("=", 1) for t in shlex.split(parts[1])]
        except ValueError as e:
            marker.error = f"row selector: {e}"
            return marker
        if not pairs or any(len(p) != 2 or not p[0] for p in pairs):
            marker.error = f"row selector {parts[1]!r}: expected key=value pairs"
            return marker
        marker.selector = tuple((k, v) for k, v in pairs)
    elif head.endswith(".json"):
        if len(parts) != 2:
            marker.error = "a JSON marker is `PATH | dotted.path`"
            return marker
        marker.kind, marker.field = "json", parts[1]
    else:
        marker.error = f"the source {head!r} is neither a .csv, a .json nor `table NAME`"
    return marker


def markers(text: str) -> list[Marker]:
    """Every marker of the text's prose (not in code, code spans or generated blocks), in order; a malformed
    one carries its `error`."""
    scan = _without(_prose(text), CODE)
    return [_parse(m, text) for m in MARKER.finditer(scan)]


def tables_of(*texts: str) -> dict[str, str]:
    """The generated blocks of the given pages, name -> the block's text (the first page that has one wins)."""
    out: dict[str, str] = {}
    for text in texts:
        for m in tables.BLOCK.finditer(text):
            out.setdefault(m["name"], m["body"])
    return out


def files_of(*texts: str) -> dict[str, list[str]]:
    """The files each generated block of the given pages is computed from, name -> paths (first page wins)."""
    out: dict[str, list[str]] = {}
    for text in texts:
        for m in tables.BLOCK.finditer(text):
            out.setdefault(m["name"], [f.strip().rstrip("?") for f in m["files"].split(",")])
    return out


def _norm(cell: str) -> str:
    return " ".join(cell.replace("`", "").replace("**", "").split())


def _table_rows(body: str) -> list[tuple[list[str], list[str]]]:
    """(header, row) for every data row of every markdown table of a block."""
    out, header = [], None
    for line in body.splitlines():
        s = line.strip()
        if not s.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in s.strip("|").split("|")]
        if header is None:
            header = [_norm(c) for c in cells]
        elif not all(re.fullmatch(r":?-+:?", c) for c in cells):
            out.append((header, cells))
    return out


def _table_value(m: Marker, tables_text: Mapping[str, str]) -> tuple[list[str] | None, str | None]:
    if m.path not in tables_text:
        return None, f"no generated table {m.path!r} on this page or in docs/results/README.md"
    rows = [(h, r) for h, r in _table_rows(tables_text[m.path]) if r and _norm(r[0]) == _norm(m.row)]
    if len(rows) != 1:
        return None, f"table {m.path}: {len(rows)} rows whose first cell is {m.row!r} (need exactly 1)"
    header, row = rows[0]
    cols = [i for i, h in enumerate(header) if h == _norm(m.field)]
    if len(cols) != 1 or cols[0] >= len(row):
        return None, f"table {m.path}: {len(cols)} columns headed {m.field!r} (need exactly 1)"
    return NUMBER.findall(_norm(row[cols[0]])), None


def _float(text: str) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def _same(a: str, b: str) -> bool:
    fa, fb = _float(a), _float(b)
    return fa == fb if fa is not None and fb is not None else a == b


def _source_value(m: Marker, docs: Path, cache: dict[Path, Any]) -> tuple[float | None, str | None]:
    path = (docs / m.path).resolve()
    if Path(m.path).is_absolute() or ".." in Path(m.path).parts:
        return None, f"{m.path}: not a path under the docs directory"
    if not path.is_file():
        return None, f"{m.path}: no such file under {docs}"
    if path not in cache:
        if m.kind == "csv":
            with open(path, newline="") as f:
                cache[path] = list(csv.DictReader(f))
        else:
            cache[path] = json.loads(path.read_text())
    doc = cache[path]
    if m.kind == "csv":
        keys = set(doc[0]) if doc else set()
        unknown = [k for k, _ in m.selector if k not in keys]
        if unknown or m.field not in keys:
            return None, f"{m.path}: no column {', '.join(unknown or [m.field])}"
        rows = [r for r in doc if all(_same(r[k], v) for k, v in m.selector)]
        if len(rows) != 1:
            return None, f"{m.path}: {len(rows)} rows match {' '.join(f'{k}={v}' for k, v in m.selector)} (need 1)"
        raw: Any = rows[0][m.field]
    else:
        raw = doc
        for key in m.field.split("."):
            if isinstance(raw, list) and re.fullmatch(r"-?\d+", key) and -len(raw) <= int(key) < len(raw):
                raw = raw[int(key)]
            elif isinstance(raw, dict) and key in raw:
                raw = raw[key]
            else:
                return None, f"{m.path}: no {m.field!r} (stops at {key!r})"
    value = None if isinstance(raw, bool) else _float(raw)
    if value is None:
        return None, f"{m.path}: {m.field} is {raw!r}, not a number"
    return value, None


def _rounded(v: float, decimals: int) -> set[str]:
    """`v` at `decimals` decimals, the binary value rounded and its shortest decimal form rounded half up."""
    out = {f"{v:.{decimals}f}"}
    try:
        out.add(str(Decimal(repr(v)).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)))
    except InvalidOperation:
        pass
    return {s[1:] if s.startswith("-") and float(s) == 0 else s for s in out}


def matches(printed: str, value: float, pct: bool = False, absolute: bool = False) -> bool:
    """Whether the numeral `printed` is `value` at the printed precision (x 100 for a percent)."""
    text = printed.replace(",", "")
    if text.endswith("%"):
        text, pct = text[:-1], True
    v = value * 100 if pct else value
    if absolute:
        v = abs(v)
    if "e" in text.lower():
        mantissa, exponent = text.lower().split("e")
        decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
        got_m, got_e = f"{v:.{decimals}e}".split("e")
        return got_m == mantissa and int(got_e) == int(exponent)
    decimals = len(text.split(".")[1]) if "." in text else 0
    return text in _rounded(v, decimals)


def check_markers(page_text: str, docs_dir: Path, tables_text_by_name: Mapping[str, str]) -> list[str]:
    """An error for each marked number that does not match its source, each malformed marker and each marker
    that follows no number."""
    errors, cache = [], {}
    found = markers(page_text)
    scan = _without(_prose(page_text), CODE)
    attached = {page_text.index("<!--@", m.end) for m in found}
    for o in OPEN.finditer(scan):
        if o.start() not in attached:
            errors.append(f"line {page_text.count(chr(10), 0, o.start()) + 1}: a marker that follows no number")
    for m in found:
        if m.error:
            errors.append(f"{m.where()}: {m.error}")
            continue
        if m.kind == "table":
            if m.flags & {"pct"}:
                errors.append(f"{m.where()}: `pct` is for CSV and JSON values; a table's number is copied as written")
                continue
            numbers, error = _table_value(m, tables_text_by_name)
            if error:
                errors.append(f"{m.where()}: {error}")
                continue
            printed = m.number.lstrip("-") if "abs" in m.flags else m.number
            cell = [n.lstrip("-") for n in numbers] if "abs" in m.flags else numbers
            if printed not in cell:
                errors.append(f"{m.where()}: the cell holds {', '.join(numbers) or 'no number'}")
            continue
        value, error = _source_value(m, Path(docs_dir), cache)
        if error:
            errors.append(f"{m.where()}: {error}")
        elif not matches(m.number, value, "pct" in m.flags, "abs" in m.flags):
            errors.append(f"{m.where()}: the source holds {value!r}")
    return errors


def unmarked(page_text: str, allowed: Iterable[str]) -> list[str]:
    """Every number of the prose with no marker that is not one of `allowed` (compared as printed, thousands
    separators ignored): 'line N: NUMBER'."""
    allowed = {a.replace(",", "") for a in allowed}
    marked = {m.start for m in markers(page_text)}
    scan = _without(_prose(page_text), CODE)
    scan = _blank(scan, [(m.start("num"), m.end("num")) for m in MARKER.finditer(scan) if m.start("num") in marked])
    scan = _without(scan, COMMENT, *NOT_DATA)
    return [f"line {page_text.count(chr(10), 0, n.start()) + 1}: {n.group()}"
            for n in NUMBER.finditer(scan) if n.group().replace(",", "") not in allowed]


def _units(text: str) -> list[tuple[int, int]]:
    """The (start, end) of each table row and each paragraph (lines between blank lines and tables)."""
    out, start, pos = [], None, 0
    for line in text.splitlines(keepends=True):
        end = pos + len(line)
        if line.lstrip().startswith("|"):
            if start is not None:
                out.append((start, pos))
                start = None
            out.append((pos, end))
        elif not line.strip():
            if start is not None:
                out.append((start, pos))
                start = None
        elif start is None:
            start = pos
        pos = end
    if start is not None:
        out.append((start, pos))
    return out


def _cited(citation: str) -> str:
    c = citation.strip().split("#")[0].split("?")[0]
    return c[2:] if c.startswith("./") else c


def _names(citation: str, path: str) -> bool:
    return any(citation == prefix + path for prefix in PREFIXES)


def check_citations(page_text: str, block_files: Mapping[str, Iterable[str]] | None = None) -> list[str]:
    """An error where a table row or paragraph with markers does not cite (in backticks or a link) a file
    one of its markers names, or cites a CSV or JSON file that none of its markers names. A table marker
    needs no citation; the files its block is computed from (`block_files`, name -> paths; by default
    those of the page's own blocks) may be cited beside it."""
    errors = []
    block_files = files_of(page_text) if block_files is None else block_files
    found = [m for m in markers(page_text) if not m.error]
    scan = _without(_prose(page_text), COMMENT)
    for a, b in _units(scan):
        here = [m for m in found if a <= m.start < b]
        if not here:
            continue
        line = page_text.count("\n", 0, a) + 1
        cited = [_cited(c.group(1) or c.group(2)) for c in CITED.finditer(scan, a, b)]
        files = {m.path for m in here if m.kind in ("csv", "json")}
        behind = files | {f for m in here if m.kind == "table" for f in block_files.get(m.path, ())}
        for path in sorted(files):
            if not any(_names(c, path) for c in cited):
                errors.append(f"line {line}: a marker names {path}, which this "
                              f"{'row' if scan[a:b].lstrip().startswith('|') else 'paragraph'} does not cite")
        for c in cited:
            if c.endswith((".csv", ".json")) and "*" not in c and not any(_names(c, p) for p in behind):
                errors.append(f"line {line}: `{c}` is cited, but no marker here takes a number from it")
    return errors


# numbers the pages may state without a marker beyond the study's settings: facts of the data set and of the
# method, not measurements. Keep it short; anything measured gets a marker.
CONSTANTS = {
    "28": "Fashion-MNIST's images are 28 x 28 pixels",
    "784": "28 x 28, the input and output size of every model",
    f"{tables.TRAIN_SAMPLES:,}": "the training set's size",
    f"{tables.TEST_SAMPLES:,}": "the test set's size",
    "1000": "the minibatch size, the report's and fmae's default",
    "95%": "the confidence level of every interval (the one comparison rule)",
    "5%": "the band of the curve table's 'within 5% of the final loss' (fmae.stats.within)",
    "30": "the report's own epoch: 'from epoch 30 on' (§2.2, §3), quoted",
    "2009": "the year of a work the report cites (Bengio, 2009)",
}
OPTION = re.compile(r"--(?:lr|hidden|seed|epochs|sigma)((?:[ \t]+(?:\\\n[ \t]*)?[\d.]+(?![\w.]))+)")
DEFAULT = re.compile(r"^(?:EPOCHS|SEEDS)=\$\{\w+:-([^}]*)\}", re.M)


def study_settings(script: str) -> set[str]:
    """The values of --lr, --hidden, --seed, --epochs and --sigma in the study's command (examples/study.sh),
    and the defaults of EPOCHS and SEEDS, as printed there and in their shortest form (1.0 and 1)."""
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("#"))
    values = [v for m in OPTION.finditer(code) for v in m[1].replace("\\", " ").split()]
    values += [v for m in DEFAULT.finditer(code) for v in m[1].split()]
    return {s for v in values if _float(v) is not None for s in (v, f"{float(v):g}")}


def pages(docs: Path) -> list[Path]:
    """The pages checked: docs/results/README.md, docs/study.md and the repository's README.md."""
    return [docs / "README.md", docs.parent / "study.md", docs.parent.parent / "README.md"]


STUDY = re.compile(r"<!-- study -->(.*?)<!-- /study -->", re.S)


def study_part(page: Path, docs: Path) -> str:
    """The text checked: the whole of the study's pages; of the repository's README, its study summary
    (between `<!-- study -->` and `<!-- /study -->`; the rest, install sizes or exit codes, is no study)."""
    text = page.read_text()
    if page.resolve() != (docs.parent.parent / "README.md").resolve():
        return text
    return "\n\n".join(STUDY.findall(text))


def check_pages(docs: Path, paths: Iterable[Path], allowed: Iterable[str]) -> list[str]:
    """Every error of the three checks on every page, each prefixed with the page."""
    allowed = set(allowed)
    results = (docs / "README.md").read_text() if (docs / "README.md").is_file() else ""
    errors = []
    for page in paths:
        text = study_part(page, docs)
        found = tables_of(text, results)
        for error in [*check_markers(text, docs, found), *check_citations(text, files_of(text, results)),
                      *(f"{e}: a number with no marker" for e in unmarked(text, allowed))]:
            errors.append(f"{page}: {error}")
    return errors


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    docs = Path(argv[0])
    allowed = study_settings((ROOT / "examples" / "study.sh").read_text()) | set(CONSTANTS)
    errors = check_pages(docs, pages(docs), allowed)
    for error in errors:
        print(error)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
