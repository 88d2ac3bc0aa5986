"""A non-editable install works: the wheel holds every subpackage and its `fmae` starts.

Editable installs (what the tests usually run against) read the source tree, so a package left
out of the wheel would go unnoticed: `packages = ["fmae"]` once shipped without its subpackages.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the sources (no build/ or egg-info left in the checkout)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "fmae", src / "fmae", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                    "-q", "-w", str(out), str(src)], check=True, cwd=src)
    (built,) = out.glob("fmae_cli-*.whl")  # the distribution fmae-cli; the package stays fmae
    return built


def subpackages() -> list[str]:
    return sorted(".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "fmae").rglob("__init__.py")
                  if "__pycache__" not in p.parts)


def test_the_wheel_holds_every_subpackage_and_module(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = subpackages()
    assert {"fmae.cli", "fmae.sweeps", "fmae.figures", "fmae.training", "fmae.executors"} <= set(packages)
    for package in packages:
        assert package.replace(".", "/") + "/__init__.py" in names, f"{package} is missing from {wheel.name}"
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "fmae").rglob("*.py") if "__pycache__" not in p.parts}
    assert modules <= names, sorted(modules - names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "fmae = fmae.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    assert "\nName: fmae-cli\n" in zipfile.ZipFile(wheel).read(metadata).decode()


def test_every_install_hint_names_our_distribution():
    """`fmae` on PyPI is another project ("Fuzzy Model-Agnostic Explanation"): a hint must name
    fmae-cli, or the path form of a checkout (`pip install -e '.[ray]'`)."""
    import re

    hints = [(p.name, m.group(0)) for p in sorted((ROOT / "fmae").rglob("*.py"))
             for m in re.finditer(r"pip install[^\"\n)]*", p.read_text(encoding="utf-8"))]
    assert hints, "no install hint found: the pattern is wrong"
    wrong = [(name, h) for name, h in hints if not re.search(r"pip install (-e )?'(fmae-cli|\.)\[", h)]
    assert not wrong, wrong


def test_the_installed_wheel_runs_fmae_help(wheel, tmp_path):
    """Installed (not editable) into a fresh environment; the dependencies come from this one."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)  # ensurepip: offline, from the interpreter's own wheels
    py = env_dir / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # This environment's packages (typer, rich, ...) as a fallback after the venv's own.
    deps = {sysconfig.get_paths()["purelib"], *(p for p in sys.path if p.endswith("-packages"))}
    Path(purelib, "_fmae_test_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], check=True)
    probe = "import fmae.cli, fmae.sweeps, fmae.figures, fmae; print(fmae.__file__)"
    where = subprocess.run([str(py), "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                           check=True).stdout.strip()
    assert Path(where).is_relative_to(env_dir), f"fmae was imported from {where}, not from the wheel"
    out = subprocess.run([str(env_dir / "bin" / "fmae"), "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "train" in out.stdout and "sweep" in out.stdout and out.stderr == ""
