"""Every command, run by the code of two revisions on the same tiny data, compared byte for byte.

    python scripts/compare_before_after.py [--old 622222a] [--new .] [--keep DIR [--phase before|after]]

The old revision is exported with `git archive` (no checkout); the new tree is this working tree
(or --new). Each revision runs the same list of commands, one after another, in the same scratch
directory (so the paths they print are the same), with the same environment: a tiny synthetic
Fashion-MNIST (tests/helpers.py), no terminal, a clock that stands still (time.perf_counter
returns 0, so every duration printed or saved is 0.0; Saver's own clock is unchanged and
--checkpoint-every 0 writes last.pt after every epoch) and one torch thread. For each command it
compares the exit code, stdout and stderr, and afterwards every file the commands wrote (PNG
bytes included); the one wall-clock time fmae records, summary.json's `finished_at`, is read
as one fixed time. Prints one line per difference and `identical: N commands, M files`; exits 1 on
any difference. A refactoring must leave all of it identical. With --keep DIR and --phase, one
revision runs per call (its outcome kept in DIR) and the call that finds both compares them: each
half fits a shared machine's time slot.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import write_dataset  # noqa: E402

TINY = ["--hidden", "4", "--epochs", "2", "--batch-size", "16", "--checkpoint-every", "0", "--threads", "1"]
GRID = ["--optim", "sgd", "adam", "--lr", "0.1", "0.01", "--hidden", "4", "8", "--epochs", "2", "--batch-size", "16",
        "--checkpoint-every", "0", "--threads", "1"]

COMMANDS: list[list[str]] = [
    [], ["--help"], ["--version"], ["train", "--help"], ["sweep", "--help"], ["eval", "--help"],
    ["denoise", "--help"], ["plot", "--help"], ["nosuch"],
    # train: a table, JSON, a resume, a default lr, usage errors, a bad value, --fail-on
    ["train", "--optim", "sgd", "--lr", "0.1", *TINY, "--run-dir", "runs/a"],
    ["train", "--optim", "adam", *TINY, "--run-dir", "runs/b", "--json"],
    ["train", "--optim", "sgd", "--lr", "0.1", *TINY, "--run-dir", "runs/a"],  # already holds a run
    ["train", "--optim", "sgd", "--lr", "0.1", *TINY[:2], "--epochs", "3", *TINY[4:], "--run-dir", "runs/a",
     "--resume"],
    ["train", "--run-dir", "runs/a", "--resume", "--overwrite"],
    ["train", "--dropout", "2", "--run-dir", "runs/x"],
    ["train", "--optim", "adam", "--momentum", "0.9", "--run-dir", "runs/x"],
    ["train", "--optim", "sgd", "--lr", "1e6", *TINY, "--run-dir", "runs/div", "--fail-on", "collapsed"],
    ["train", "--optim", "sgd", "--lr", "0.1", *TINY, "--noise", "gaussian", "--noise-sigma", "0.3",
     "--run-dir", "runs/dae", "-q"],
    # sweep: a table, a rerun, seeds (groups), JSON, halving, jobs, errors, --fail-on
    ["sweep", *GRID, "--run-dir", "runs/s"],
    ["sweep", *GRID, "--run-dir", "runs/s"],
    ["sweep", *GRID, "--lr", "0.001", "--run-dir", "runs/s", "--json"],
    ["sweep", "--optim", "sgd", "--lr", "0.1", "--hidden", "4", "--seed", "0", "1", "2", *GRID[9:],
     "--momentum", "0.5", "--run-dir", "runs/seeds"],
    ["sweep", *GRID, "--epochs", "4", "--prune", "halving", "--eta", "2", "--run-dir", "runs/h"],
    ["sweep", *GRID, "--jobs", "2", "--run-dir", "runs/j", "--json", "-q"],  # -q: two workers interleave stderr
    ["sweep", *GRID, "--eta", "2", "--run-dir", "runs/x"],
    ["sweep", "--optim", "sgd", "--lr", "0.1", "0.1", "--run-dir", "runs/x"],
    ["sweep", *GRID, "--epochs", "3", "--run-dir", "runs/s"],  # other shared settings: epochs may grow
    ["sweep", *GRID, "--dropout", "0.2", "--run-dir", "runs/s"],
    ["sweep", "--optim", "sgd", "--lr", "1e6", "0.1", *GRID[5:], "--run-dir", "runs/sd",
     "--fail-on", "diverged", "collapsed"],
    ["sweep", *GRID, "--run-dir", "runs/a"],  # a training run, not a sweep
    # eval, denoise, plot
    ["eval", "--ckpt", "runs/s/best.pt", "runs/a/model.pt"],
    ["eval", "--ckpt", "runs/s/best.pt", "--json"],
    ["eval", "--ckpt", "nothing.pt"],
    ["eval", "--ckpt", "runs/a/model.pt", "--split", "train", "--baseline", "pca", "--json"],
    ["eval", "--ckpt", "runs/a/model.pt", "--baseline", "pca", "-q"],
    ["eval", "--ckpt", "runs/a/model.pt", "--device", "cuda"],
    ["denoise", "--ckpt", "runs/s/best.pt", "runs/b/model.pt", "--sigma", "0.25", "0.5", "--limit", "8",
     "--out", "fig/denoise.png", "--curve", "fig/psnr.png"],
    ["denoise", "--ckpt", "runs/s/best.pt", "--noise", "salt-pepper", "--sigma", "0.1", "--json"],
    ["denoise", "--ckpt", "runs/s/best.pt", "--input", "images.npy", "--output", "images.out.npy"],
    ["denoise", "--ckpt", "runs/s/best.pt", "runs/a/model.pt", "--input", "images.npy"],
    ["denoise", "--ckpt", "runs/a/model.pt", "--input", "images.npy", "--json"],
    ["denoise", "--ckpt", "runs/a/model.pt", "--input", "missing.png"],
    ["denoise", "--ckpt", "runs/a/model.pt", "--index", "1", "2"],
    ["denoise", "--ckpt", "runs/a/model.pt", "--index", "1", "2", "--out", "fig/idx.svg", "--limit", "8", "-q"],
    ["denoise", "--ckpt", "runs/a/model.pt", "--out", "fig/x.gif"],
    ["plot", "runs/s", "runs/seeds", "runs/a", "--out", "fig/all"],
    ["plot", "runs/s", "--kind", "heatmap", "recon", "--format", "svg", "--out", "fig/svg", "--json"],
    ["plot", "runs/h", "--kind", "compare", "--out", "fig/c"],
    ["plot", "nowhere"],
    ["plot", "runs/a", "--examples", "0"],
    ["plot", "runs/a", "--seed", "-1"],
    ["plot", "runs/a", "--kind", "heatmap"],
    ["plot", "runs/a", "runs/b", "--kind", "curves", "recon", "--train", "--overlay", "--examples", "2", "--seed", "3",
     "--out", "fig/r", "--json"],
]

FINISHED_AT = re.compile(rb'"finished_at": "[0-9T:-]+Z"')


def normalized(data: bytes) -> bytes:
    """The bytes with the wall-clock time of a run's end fixed (the rest is deterministic)."""
    return FINISHED_AT.sub(b'"finished_at": "2000-01-01T00:00:00Z"', data)


HOOK = """import time
time.perf_counter = lambda: 0.0  # a clock that stands still: every duration is 0.0, in both revisions
import fmae.data
fmae.data.CHECKSUMS = {sums!r}
"""


def run_all(tree: Path, work: Path, data: Path, hook: Path) -> tuple[list[tuple[int, bytes, bytes]], dict[str, str]]:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    import numpy as np

    np.save(work / "images.npy", (np.arange(2 * 28 * 28).reshape(2, 28, 28) % 251 / 250).astype(np.float32))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work.parent / "home"), "LANG": "C.UTF-8",
           "PYTHONPATH": os.pathsep.join([str(hook), str(tree)]), "FMAE_DATA_DIR": str(data),
           "OMP_NUM_THREADS": "1", "COLUMNS": "120"}
    outcomes = []
    for argv in COMMANDS:
        done = subprocess.run([sys.executable, "-m", "fmae", *argv], cwd=work, env=env, capture_output=True,
                              timeout=600)
        outcomes.append((done.returncode, normalized(done.stdout), normalized(done.stderr)))
    files = {str(p.relative_to(work)): hashlib.sha256(normalized(p.read_bytes())).hexdigest()
             for p in sorted(work.rglob("*")) if p.is_file() and not p.is_symlink()}
    return outcomes, files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default="622222a", help="the revision before (git archive)")
    parser.add_argument("--new", type=Path, default=ROOT, help="the tree after [default: this working tree]")
    parser.add_argument("--keep", type=Path, help="keep the scratch directory here")
    parser.add_argument("--phase", choices=("before", "after"), help="with --keep: run only this revision")
    args = parser.parse_args()
    if args.phase and args.keep is None:
        parser.error("--phase needs --keep")
    scratch = Path(tempfile.mkdtemp(prefix="fmae-compare-")) if args.keep is None else args.keep
    scratch.mkdir(parents=True, exist_ok=True)
    old = scratch / "old-tree"
    if not old.exists():
        old.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.old], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
    sums = write_dataset(scratch / "data", n_train=200, n_test=50)
    hook = scratch / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(HOOK.format(sums=sums))
    work = scratch / "work"
    trees = {"before": old, "after": args.new.resolve()}
    outcomes = {}
    for phase, tree in trees.items():
        kept = scratch / f"{phase}.pickle"
        if args.phase in (None, phase) or not kept.exists():
            if args.phase not in (None, phase):
                print(f"{phase}: not run yet (run with --phase {phase})")
                return 2
            outcomes[phase] = run_all(tree, work, scratch / "data", hook)
            kept.write_bytes(pickle.dumps(outcomes[phase]))
        else:
            outcomes[phase] = pickle.loads(kept.read_bytes())
    (before, before_files), (after, after_files) = outcomes["before"], outcomes["after"]
    differences = []
    for argv, (c0, o0, e0), (c1, o1, e1) in zip(COMMANDS, before, after):
        name = "fmae " + " ".join(argv)
        for what, a, b in (("exit code", c0, c1), ("stdout", o0, o1), ("stderr", e0, e1)):
            if a != b:
                differences.append(f"{name}: {what} differs\n  before: {a!r:.400}\n  after:  {b!r:.400}")
    for path in sorted(set(before_files) | set(after_files)):
        if before_files.get(path) != after_files.get(path):
            state = ("only before" if path not in after_files else "only after" if path not in before_files
                     else "bytes differ")
            differences.append(f"file {path}: {state}")
    for line in differences:
        print(line)
    codes = sorted({c for c, _, _ in after})
    print(f"{'identical' if not differences else 'DIFFERENT'}: {len(COMMANDS)} commands (exit codes {codes}), "
          f"{len(after_files)} files; {len(differences)} differences (old {args.old}, new {args.new})")
    if args.keep is None:
        shutil.rmtree(scratch, ignore_errors=True)
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
