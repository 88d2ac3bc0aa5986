"""Fast start: --help, --version and completion import no torch, torchvision or matplotlib;
completion scripts are current and work."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import cli

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "torchvision", "matplotlib", "torchmetrics", "numpy", "ray", "mlflow", "tensorboard")


def heavy_modules_after(code: str) -> list[str]:
    probe = (
        "import sys\n" + code + "\n"
        f"print('MODULES:' + ','.join(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    line = [x for x in out.stdout.splitlines() if x.startswith("MODULES:")][-1]
    return [m for m in line[len("MODULES:"):].split(",") if m]


def test_importing_the_cli_is_light():
    assert heavy_modules_after("import fmae.cli") == []


def test_the_local_executors_import_no_ray():
    assert "ray" not in heavy_modules_after("import fmae.executors, fmae.executors.local, fmae.sweeps.run")


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["train", "--help"], ["sweep", "--help"],
                                  ["eval", "--help"], ["denoise", "--help"], ["plot", "--help"],
                                  ["export", "--help"]])
def test_help_and_version_are_light(argv):
    code = (f"sys.argv = ['fmae', *{argv!r}]\nfrom fmae.cli import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code")
    assert heavy_modules_after(code) == []


@pytest.mark.parametrize("command", ["train", "sweep", "eval", "denoise", "plot", "export"])
def test_command_help_skips_pydantic(command):
    """Typer validates through pydantic; a flag left at None would import it (0.1 s) before the help."""
    code = (f"sys.argv = ['fmae', {command!r}, '--help']\nfrom fmae.cli import main\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
            "print('MODULES:' + ','.join(m for m in sys.modules if m.split('.')[0] == 'pydantic'))")
    out = subprocess.run([sys.executable, "-c", "import sys\n" + code], capture_output=True, text=True, cwd=ROOT,
                         check=True)
    assert out.stdout.splitlines()[-1] == "MODULES:"


def test_typers_completion_installer_is_hidden():
    out = cli("--help")
    assert out.exit_code == 0 and "--install-completion" not in out.output and "--show-completion" not in out.output


def test_completion_request_is_light():
    code = ("import os\nos.environ.update(_FMAE_COMPLETE='complete_bash', COMP_WORDS='fmae sweep --optim ', "
            "COMP_CWORD='3')\nsys.argv = ['fmae']\nfrom fmae.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass")
    assert heavy_modules_after(code) == []


def test_completion_files_are_current():
    sys.path.insert(0, str(ROOT / "completions"))
    try:
        import generate
    finally:
        sys.path.pop(0)
    for shell, name in generate.SHELLS.items():
        assert (ROOT / "completions" / name).read_text() == generate.script(shell), (
            f"completions/{name} is stale: run python completions/generate.py")


def test_bash_completes_commands_and_values():
    from tests.helpers import installed_env

    env = installed_env()

    def complete(words: str, cword: int) -> list[str]:
        script = (f"source {ROOT / 'completions' / 'fmae.bash'}; COMP_WORDS=({words}); COMP_CWORD={cword}; "
                  "_fmae_completion fmae; printf '%s\\n' \"${COMPREPLY[@]}\"")
        out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True, env=env)
        return [w for w in out.stdout.splitlines() if w]

    assert complete("fmae sw", 1) == ["sweep"]
    assert complete("fmae sweep --optim ''", 3) == ["adam", "sgd"]
    assert complete("fmae sweep --optim sgd --lr 0.1 --hidden 64 --prec", 8) == ["--precision"]
    assert "image-gaussian" in complete("fmae denoise --noise ''", 3)
    assert complete("fmae train --device ''", 3) == ["auto", "cpu", "cuda", "mps"]


def test_bash_completion_is_silent_without_fmae_on_path(tmp_path):
    """A venv not activated: Tab must not print `env: 'fmae': No such file or directory`."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    found = subprocess.run(["bash", "-c", "command -v fmae"], capture_output=True, text=True, env=env)
    assert found.returncode != 0, "this test needs a PATH without fmae"
    script = (f"source {ROOT / 'completions' / 'fmae.bash'}; COMP_WORDS=(fmae tr); COMP_CWORD=1; "
              "_fmae_completion fmae; echo \"n=${#COMPREPLY[@]}\"")
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "n=0" and out.stderr == "", out.stderr


SLOW_IMPORTS = ("torch._dynamo", "torchmetrics", "torchvision", "scipy", "matplotlib")


@pytest.mark.dataset
def test_one_shot_commands_import_nothing_slow(tmp_path, real_data_dir):
    """train, eval and denoise (no figure) never import torch._dynamo (torch.optim's first use),
    torchmetrics or torchvision (1.7 s), scipy or matplotlib."""
    probe = ("import os, sys\nos.environ['FMAE_DATA_DIR'] = sys.argv[1]\nsys.argv = ['fmae', *sys.argv[2:]]\n"
             "from fmae.cli import main\ntry:\n    main()\n"
             "except SystemExit as e:\n    assert e.code in (0, None), e.code\n"
             f"print('SLOW:' + ','.join(sorted(m for m in sys.modules if m.startswith({SLOW_IMPORTS!r}))))")
    run_dir = tmp_path / "r"
    commands = [["train", "--hidden", "8", "--epochs", "1", "--run-dir", str(run_dir), "-q"],
                ["eval", "--ckpt", str(run_dir / "model.pt"), "-q"],
                ["denoise", "--ckpt", str(run_dir / "model.pt"), "--sigma", "0.5", "--limit", "200", "-q"]]
    for argv in commands:
        out = subprocess.run([sys.executable, "-c", probe, str(real_data_dir), *argv], capture_output=True,
                             text=True, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines()[-1] == "SLOW:", (argv[0], out.stdout.splitlines()[-1])
