"""The README and docs/ point only at what the repository holds, and docs/options.md names every option.

A reader of a clone has nothing but the clone: every relative link (markdown links and images)
must name a file or folder in it (and a heading of the page, when it names an anchor), and no page may send
the reader to a path outside it (`shared/...`, `../shared`, a `design.md` the repository lacks).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest
import typer.main

from fmae.cli import app

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
IDS = [str(p.relative_to(ROOT)) for p in PAGES]

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
CODE_SPAN = re.compile(r"`+[^`\n]*`+")
INLINE_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s*\[[^\]\n]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
OUTSIDE = re.compile(r"(^|[^.])\bshared/|\.\./shared")
DESIGN = re.compile(r"\bdesign\.md\b")


def links(text: str) -> list[tuple[str, str]]:
    """Relative link targets of a markdown page, outside code blocks: (path, anchor) pairs."""
    prose = FENCE.sub("", text)
    prose = CODE_SPAN.sub(lambda m: "x" * len(m.group()), prose)  # [`name`](target) stays a link
    targets = INLINE_LINK.findall(prose) + REFERENCE_LINK.findall(prose)
    out = []
    for target in targets:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
            continue  # http:, https:, mailto: ...
        path, _, anchor = target.partition("#")
        out.append((unquote(path.split("?", 1)[0]), anchor))
    return out


def anchors(text: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lowercase, punctuation dropped, spaces to hyphens."""
    slugs: set[str] = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", FENCE.sub("", text), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        n = 0
        while (f"{slug}-{n}" if n else slug) in slugs:
            n += 1
        slugs.add(f"{slug}-{n}" if n else slug)
    return slugs


def test_the_link_finder_sees_links_and_images_and_skips_code():
    page = ("See [a](docs/a.md#part), ![img](fig/x.png \"title\"), [web](https://x.org/y), [here](#top).\n"
            "`[not](a-link.md)` and\n```sh\necho '[no](code.md)'\n```\n[ref]: <docs/ref.md>\n")
    assert links(page) == [("docs/a.md", "part"), ("fig/x.png", ""), ("", "top"), ("docs/ref.md", "")]
    headings = "# fmae\n## `fmae sweep --json`\n## Parallel cells: `--jobs`\n```\n# not\n```\n## Seeds\n## Seeds\n"
    assert anchors(headings) == {"fmae", "fmae-sweep---json", "parallel-cells---jobs", "seeds", "seeds-1"}


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_every_relative_link_resolves_inside_the_repository(page: Path):
    missing = []
    for target, anchor in links(page.read_text(encoding="utf-8")):
        if not target:
            path = page  # #anchor within the page
        else:
            path = (ROOT / target.lstrip("/")) if target.startswith("/") else (page.parent / target)
        path = path.resolve()
        if not path.is_relative_to(ROOT) or not path.exists():
            missing.append(target)
        elif anchor and path.suffix == ".md" and anchor not in anchors(path.read_text(encoding="utf-8")):
            missing.append(f"{target}#{anchor}")
    assert not missing, f"{page.relative_to(ROOT)} links to what the repository lacks: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=IDS)
def test_no_page_points_outside_the_repository(page: Path):
    text = page.read_text(encoding="utf-8")
    has_design = (ROOT / "design.md").exists() or (ROOT / "docs" / "design.md").exists()
    bad = [f"{n}: {line.strip()}" for n, line in enumerate(text.splitlines(), 1)
           if OUTSIDE.search(line) or (DESIGN.search(line) and not has_design)]
    assert not bad, f"{page.relative_to(ROOT)} names paths outside the repository:\n" + "\n".join(bad)


def test_the_outside_pattern_catches_what_it_must():
    assert OUTSIDE.search("the study in `shared/seed`") and OUTSIDE.search("see ../shared/design.md")
    assert not OUTSIDE.search("one copy in shared memory") and not OUTSIDE.search("fmae_shared/x")


def sections(text: str) -> dict[str, str]:
    """The `## ` sections of a page by heading."""
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def documented(section: str, option: str) -> bool:
    return re.search(rf"`{re.escape(option)}[ `]", section) is not None


def test_options_md_names_every_option_of_every_command():
    """Each command's section of docs/options.md (or "Every command"; for sweep, also train's
    training options) names each of its options, as its --help lists them, so a new option
    cannot go undocumented."""
    by_heading = sections((ROOT / "docs" / "options.md").read_text(encoding="utf-8"))
    common = by_heading["Every command"]
    root = typer.main.get_command(app)

    def options(command) -> list[str]:  # what --help lists: get_params, less the hidden
        ctx = command.context_class(command, info_name=command.name)
        return [o for p in command.get_params(ctx) if p.param_type_name == "option" and not p.hidden
                for o in p.opts if o.startswith("--")]

    missing = [f"fmae {o}" for o in options(root) if not documented(common, o)]
    for name, command in root.commands.items():
        own = by_heading.get(f"`fmae {name}`")
        assert own is not None, f"docs/options.md has no section `fmae {name}`"
        allowed = [common, own] + ([by_heading["`fmae train`"]] if name == "sweep" else [])
        missing += [f"fmae {name} {o}" for o in options(command) if not any(documented(s, o) for s in allowed)]
    assert not missing, f"docs/options.md lacks: {missing}"


REPO_PATH = re.compile(r"`((?:fmae|tests|docs|completions|benchmarks|scripts)/[\w./-]*|pyproject\.toml)`")


def test_architecture_md_names_only_paths_that_exist():
    """docs/architecture.md names the code by path: each one is in the repository (a moved module
    fails here until the page follows), and README.md and docs/README.md link the page."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    named = set(REPO_PATH.findall(text))
    assert len(named) > 40, sorted(named)  # the page names the wings' modules, not a handful
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"docs/architecture.md names paths the repository lacks: {missing}"
    assert "(docs/architecture.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert "(architecture.md)" in (ROOT / "docs" / "README.md").read_text(encoding="utf-8")


def test_architecture_md_says_how_to_add_each_kind_of_thing_by_path():
    """Issue 32: a recipe each for a command, an optimizer, an executor, a tracker, a plot kind and an
    engine, each naming the files it takes (checked to exist above); the optimizer's is one spec and its tests."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    recipes = dict(re.findall(r"^- \*\*(A[n]? [\w ]+)\*\*: (.*?)(?=^- \*\*|\Z)", text.split("## How to add")[1],
                              re.S | re.M))
    assert set(recipes) == {"A command", "An optimizer", "An executor", "A tracker", "A plot kind", "An engine"}
    for name, recipe in recipes.items():
        assert len(REPO_PATH.findall(recipe)) >= 3, name
    optimizer = set(REPO_PATH.findall(recipes["An optimizer"]))
    assert {"fmae/optim.py", "tests/test_optim.py", "tests/test_stacked.py"} <= optimizer
    assert not any(p.startswith("fmae/training/") for p in optimizer)  # no engine changes
