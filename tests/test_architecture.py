"""The architecture as docs/architecture.md states it: layers, no circles, the CLI wing imported only by
__main__, one status vocabulary, thin commands. Read from the source (ast), nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FMAE = ROOT / "fmae"

# Lowest first: a module may import from its own layer or a lower one, never from a higher one.
# docs/architecture.md states the same order (test_the_layer_order_is_the_documented_one).
LAYERS = (
    ("foundation", ("fmae", "fmae.errors", "fmae.checks", "fmae.status", "fmae.seeds", "fmae.faults", "fmae.atomic",
                    "fmae.manifest", "fmae.locks", "fmae.config", "fmae.execution", "fmae.settings", "fmae.interrupts",
                    "fmae.stats", "fmae.progress", "fmae.optim",
                    "fmae.numerics")),
    ("data and models", ("fmae.device", "fmae.data", "fmae.images", "fmae.model", "fmae.noise", "fmae.metrics",
                         "fmae.checkpoints", "fmae.checkpoint_bounds", "fmae.evaluation")),
    ("training", ("fmae.training", "fmae.training.*", "fmae.engine", "fmae.denoising")),
    ("runs", ("fmae.runs", "fmae.saving")),
    ("executors", ("fmae.executors", "fmae.executors.*")),
    ("workflows", ("fmae.train_run", "fmae.eval_run", "fmae.denoise_run", "fmae.exports", "fmae.sweeps",
                   "fmae.sweeps.*",
                   "fmae.trackers", "fmae.trackers.*",
                   "fmae.figures", "fmae.figures.*")),
    ("cli", ("fmae.cli", "fmae.cli.*")),
    ("entry point", ("fmae.__main__",)),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(FMAE.rglob("*.py")) if "__pycache__" not in p.parts}


def layer_of(module: str) -> int:
    for i, (_, members) in enumerate(LAYERS):
        for member in members:
            if module == member or (member.endswith(".*") and module.startswith(member[:-1])):
                return i
    raise AssertionError(f"{module} is in no layer: add it to LAYERS here and to docs/architecture.md")


def imports(module: str) -> set[str]:
    """The fmae modules `module` imports, at module level or inside functions (lazy imports count)."""
    out = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "fmae"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "fmae":
            for alias in node.names:  # `from fmae.sweeps import run` imports the module fmae.sweeps.run
                sub = f"{node.module}.{alias.name}"
                out.add(sub if sub in MODULES else node.module)
    return out - {module}


GRAPH = {m: imports(m) for m in MODULES}


def test_every_import_names_a_module_and_every_module_has_a_layer():
    for module, targets in GRAPH.items():
        layer_of(module)
        assert targets <= set(MODULES), (module, targets - set(MODULES))


def test_no_import_goes_up_a_layer():
    up = [f"{m} ({LAYERS[layer_of(m)][0]}) imports {t} ({LAYERS[layer_of(t)][0]})"
          for m, targets in GRAPH.items() for t in targets if layer_of(t) > layer_of(m)]
    assert not up, "\n".join(up)


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of `graph`, each as a path that ends where it began."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    found: list[list[str]] = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                found.append([*path[path.index(t):], t])
            elif t not in state:
                visit(t, [*path, t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return found


def test_no_circles():
    """No module imports one that imports it back, directly or round a circle; a submodule importing
    a name of its own package (`from fmae.trackers import Trackers` in fmae/trackers/export.py) counts."""
    assert not circles(GRAPH), "\n".join(" -> ".join(c) for c in circles(GRAPH))


def test_the_cli_wing_is_imported_only_by_main():
    outside = [(m, t) for m, targets in GRAPH.items() for t in targets
               if (t == "fmae.cli" or t.startswith("fmae.cli.")) and not (m == "fmae.cli" or m.startswith("fmae.cli."))]
    assert outside == [("fmae.__main__", "fmae.cli")]


def test_the_checker_sees_circles_and_layers():
    """The checks above can fail: the circle this layout removed (the CLI and its training
    commands importing each other) is found, and a module in no layer is refused."""
    old = {"fmae.cli": {"fmae.commands.training"}, "fmae.commands.training": {"fmae.cli", "fmae.config"}}
    assert circles(old) == [["fmae.cli", "fmae.commands.training", "fmae.cli"]]
    assert sum(len(t) for t in GRAPH.values()) > 100  # the imports were read
    assert "fmae.training.contract" in GRAPH["fmae.runs"]  # lazy ones too
    assert layer_of("fmae.cli.training") > layer_of("fmae.sweeps.run") > layer_of("fmae.runs")
    assert layer_of("fmae.status") == 0
    with pytest.raises(AssertionError):
        layer_of("fmae.nowhere")


def test_the_layer_order_is_the_documented_one():
    text = (ROOT / "docs" / "architecture.md").read_text()
    positions = [text.find(f"**{name}**") for name, _ in LAYERS]
    assert -1 not in positions, [name for (name, _), p in zip(LAYERS, positions) if p == -1]
    assert positions == sorted(positions)


def test_no_status_is_spelled_outside_the_status_module():
    from fmae.status import Status

    values = {s.value for s in Status}
    found = [f"{module}:{node.lineno} {node.value!r}" for module, path in MODULES.items() if module != "fmae.status"
             for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in values]
    assert not found, found


def library_calls(tree: ast.Module, fn: ast.FunctionDef) -> list[str]:
    """The calls in `fn` into the library below the CLI and above the foundation: to a name imported (in the
    module or in `fn`) from such a module, or to a function of such a module (`data.find_and_load(...)`).
    Building settings (fmae.config, fmae.settings), an error (fmae.errors) or a status is not a library call;
    nor is the CLI's own rendering (fmae.cli)."""
    bound = {}  # local name -> the fmae module it comes from
    for node in [*tree.body, *ast.walk(fn)]:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "fmae":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                bound[alias.asname or alias.name] = sub if sub in MODULES else node.module
        elif isinstance(node, ast.Import):
            bound |= {a.asname or a.name: a.name for a in node.names if a.name.split(".")[0] == "fmae"}
    library = {m for m in MODULES if 0 < layer_of(m) < layer_of("fmae.cli")}
    calls = []
    for node in ast.walk(fn):
        if isinstance(node, ast.Call):
            callee = node.func
            while isinstance(callee, ast.Attribute):
                callee = callee.value
            if isinstance(callee, ast.Name) and bound.get(callee.id) in library:
                calls.append(ast.unparse(node.func))
    return calls


def command(module: str, name: str) -> tuple[ast.Module, ast.FunctionDef]:
    tree = ast.parse(MODULES[module].read_text())
    return tree, next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)


THIN = [("fmae.cli.training", "train"), ("fmae.cli.training", "sweep"), ("fmae.cli.inspection", "eval_"),
        ("fmae.cli.inspection", "denoise"), ("fmae.cli.inspection", "plot"), ("fmae.cli.export", "export")]


@pytest.mark.parametrize("module, name", THIN)
def test_commands_are_thin(module, name):
    """Signature, settings, one library call with one progress object, render: at most 30 lines of body."""
    tree, fn = command(module, name)
    body = fn.body[1:] if isinstance(fn.body[0], ast.Expr) and isinstance(fn.body[0].value, ast.Constant) else fn.body
    lines = body[-1].end_lineno - body[0].lineno + 1
    assert lines <= 30, f"{module}.{name}: {lines} lines of body"
    assert len(library_calls(tree, fn)) == 1, f"{module}.{name}: library calls {library_calls(tree, fn)}"


def test_every_command_is_checked_for_thinness():
    """A command registered in fmae/cli/app.py and left out of THIN would escape the check above."""
    app = ast.parse(MODULES["fmae.cli.app"].read_text())
    registered = {(f"fmae.cli.{node.args[0].value.id}", node.args[0].attr) for node in ast.walk(app)
                  if isinstance(node, ast.Call) and isinstance(node.func, ast.Call) and node.args
                  and isinstance(node.args[0], ast.Attribute) and isinstance(node.args[0].value, ast.Name)}
    assert registered == set(THIN)


def test_the_thinness_check_counts_library_calls():
    """It can fail: a command that loads the data and evaluates in its own body (eval before issue 23)
    makes several library calls; settings, the progress object and the render are none."""
    fat = ast.parse("""
from fmae.settings import EvalSettings
def eval_(ckpt, device):
    from fmae import data, engine, evaluation
    from fmae.checkpoints import load_models
    from fmae.cli.ui import Feedback, emit
    settings = EvalSettings(tuple(ckpt))
    torch_device = engine.resolve_device(device)
    models = load_models(ckpt, torch_device)
    dataset = data.find_and_load(None, on_found=Feedback().message)
    emit([evaluation.evaluate_checkpoint(m, dataset.test_images, dataset.test_labels) for m in models], False, print)
""")
    fn = fat.body[1]
    assert library_calls(fat, fn) == ["engine.resolve_device", "load_models", "data.find_and_load",
                                      "evaluation.evaluate_checkpoint"]
    tree, train = command("fmae.cli.training", "train")
    assert library_calls(tree, train) == ["run_train"]


def test_no_optimizer_is_named_in_the_training_wing():
    """Each optimizer is one spec (fmae.optim.SPECS) that both engines ask by their config's `optim`: no
    module of fmae/training/ spells an optimizer's name or compares a config's `optim` with anything."""
    from fmae.config import OPTIMIZERS

    found = _branches("fmae.training", OPTIMIZERS, "optim")
    assert not found, found
    assert any(module.startswith("fmae.training") for module in MODULES)


def _branches(prefix: str, names, attr: str, also=lambda node: False) -> list[str]:
    """Where the modules under `prefix` spell one of `names` or compare an `.attr` with anything (or
    `also(node)` holds): the branches on a kind that a spec or a plan object should own."""
    found = []
    for module, path in MODULES.items():
        if module.startswith(prefix):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                    found.append(f"{module}:{node.lineno} {node.value!r}")
                elif (isinstance(node, ast.Compare) and any(isinstance(n, ast.Attribute) and n.attr == attr
                                                            for n in [node.left, *node.comparators])) or also(node):
                    found.append(f"{module}:{node.lineno} {ast.unparse(node)}")
    return found


def test_no_re_export_shims_and_no_one_letter_module_names():
    """A name is imported from the module that defines it: no `from x import y  # noqa: F401` passes one
    on (an import kept for its side effect, `import mlflow  # noqa: F401`, is not one); and no module
    binds a one-letter name at its top level (the CLI's defaults are MODEL_DEFAULTS, not M)."""
    shims, letters = [], []
    for module, path in MODULES.items():
        lines = path.read_text().splitlines()
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and "noqa: F401" in lines[node.lineno - 1]:
                shims.append(f"{module}:{node.lineno}")
        for node in tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else []
            names = [e for t in targets for e in (t.elts if isinstance(t, ast.Tuple) else [t])]
            letters += [f"{module}:{node.lineno} {n.id}" for n in names if isinstance(n, ast.Name) and len(n.id) == 1]
    assert not shims, shims
    assert not letters, letters


def test_no_executor_is_named_in_the_sweeps_wing():
    """A sweep's executor is one plan object (fmae.executors.plan_for, chosen once): no module of
    fmae/sweeps/ spells an executor's name, compares a config's `executor` or asks a backend with getattr."""
    from fmae.execution import EXECUTORS

    def asks_a_backend(node) -> bool:
        return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr" \
            and "backend" in ast.unparse(node.args[0])

    found = _branches("fmae.sweeps", EXECUTORS, "executor", asks_a_backend)
    assert not found, found


def test_no_module_is_over_400_lines():
    """Modules are split by concern (docs/architecture.md); one past 400 lines holds more than one."""
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def test_the_trackers_wing_reaches_into_sweeps_only_to_export():
    """A tracker (its protocol, its backends, the live Trackers) knows run and sweep directories by their
    files (fmae.runs), not by the sweeps wing; only fmae.trackers.export, which replays a sweep's files for
    `fmae export`, reads a sweep directory through fmae.sweeps.directory."""
    up = sorted((m, t) for m, targets in GRAPH.items() if m.startswith("fmae.trackers")
                for t in targets if t.startswith("fmae.sweeps"))
    assert up == [("fmae.trackers.export", "fmae.sweeps.directory")], up
