"""Issue 18, red team on executors, signals, checkpoints and flags: each case as the attacker or the
careless user met it, ending in nothing lost, the true result, or one error line and its exit code.
Subprocess cases run fmae through a short script that first points fmae at a tiny synthetic
dataset (and, where a case needs it, plants a fault); the marker files they leave prove the fault
happened where the case says."""

import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from fmae import runs
from fmae.config import MAX_EXAMPLES, ModelConfig, TrainConfig
from fmae.executors import base
from fmae.executors.ray_cluster import CONNECT_TIMEOUT
from tests.helpers import cli, default_sigint, one_error_line, reap, tiny, write_dataset

ROOT = Path(__file__).resolve().parent.parent
ONE_EPOCH = ["--lr", "0.1", *tiny(1, hidden=4)]


def fmae_script(tmp_path: Path, args: list[str], prelude: str = "") -> str:
    """Python code that runs `fmae ARGS` on a tiny dataset of its own, after `prelude`."""
    tiny = tmp_path / "tiny"
    sums = write_dataset(tiny) if not tiny.exists() else json.loads((tmp_path / "sums.json").read_text())
    (tmp_path / "sums.json").write_text(json.dumps(sums))
    return ("import json, os, sys\nfrom fmae import data\n"
            f"data.CHECKSUMS = json.loads(open({str(tmp_path / 'sums.json')!r}).read())\n"
            f"os.environ['FMAE_DATA_DIR'] = {str(tiny)!r}\n{prelude}\n"
            f"sys.argv = ['fmae', *{args!r}]\nfrom fmae.cli import main\nmain()\n")


def child_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), **extra}


def run_fmae(tmp_path: Path, args: list[str], prelude: str = "", timeout: float = 60, **env: str):
    return subprocess.run([sys.executable, "-c", fmae_script(tmp_path, args, prelude)], cwd=tmp_path,
                          env=child_env(**env), capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------- case 6: SIGTERM while the Ray driver waits

SLOW_RAY_TASKS = """
import ray, time
from pathlib import Path
import fmae.executors.worker as worker
real_run, real_wait, marker = worker.run_in_ray, ray.wait, Path({marker!r})
def run_in_ray(task, arrays):  # defined here: Ray ships it by value to its worker
    time.sleep(120)
    return real_run(task, arrays)
def wait(*args, **kwargs):
    marker.write_text("waiting")
    try:
        return real_wait(*args, **kwargs)
    finally:
        marker.write_text("returned")
worker.run_in_ray, ray.wait = run_in_ray, wait
"""


def test_case6_sigterm_while_the_ray_driver_waits_exits_143(tmp_path, ray_cluster):
    marker = tmp_path / "in-ray-wait"
    code = fmae_script(tmp_path, ["sweep", *ONE_EPOCH, "--executor", "ray", "--address",
                                  ray_cluster.address, "--run-dir", "s"], SLOW_RAY_TASKS.format(marker=str(marker)))
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=child_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and not marker.exists():
            time.sleep(0.05)
        time.sleep(1.0)  # well inside ray.wait: the task sleeps for 120 s
        assert proc.poll() is None and marker.read_text() == "waiting", proc.stderr.read() if proc.poll() else ""
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        reap(proc)
    assert marker.read_text() == "returned"  # the signal ended the driver's ray.wait
    assert proc.returncode == 143, err
    # no epoch finished (the task sleeps): the line says so, and names SIGTERM
    line = one_error_line(err)
    assert line.startswith("error: sweep interrupted by SIGTERM; it was interrupted before any epoch"), err


# ---------------------------------------------------------------- case 7: an address where no Ray runs


def test_case7_an_address_without_ray_ends_in_the_documented_error_within_the_deadline(tmp_path, monkeypatch):
    started = time.perf_counter()
    done = run_fmae(tmp_path, ["sweep", *ONE_EPOCH, "--executor", "ray", "--address", "nohost:1234",
                               "--run-dir", "s"], timeout=60, **{CONNECT_TIMEOUT: "3"})
    assert done.returncode == 1, done.stderr
    line = one_error_line(done.stderr)  # Ray's own "Failed to connect to GCS" lines are not shown
    assert line.startswith(f"error: cannot start or reach Ray at nohost:1234 within 3 s ({CONNECT_TIMEOUT})"), line
    assert done.stdout == ""
    assert time.perf_counter() - started < 60  # the hang it was: > 400 s
    monkeypatch.setenv(CONNECT_TIMEOUT, "soon")
    bad = cli("sweep", "--executor", "ray", "--address", "nohost:1", "--run-dir",
              str(tmp_path / "b"))
    assert bad.exit_code == 2 and f"{CONNECT_TIMEOUT} must be whole seconds" in bad.stderr, bad.stderr


# ---------------------------------------------------------------- case 8: a request no node can meet


@pytest.mark.parametrize("request_", [["--cpus-per-cell", "1000"], ["--cpus-per-cell", "2.5"],
                                      ["--gpus-per-cell", "1"]])
def test_case8_a_request_the_cluster_can_never_meet_is_refused_before_submission(tmp_path, ray_cluster, request_):
    done = run_fmae(tmp_path, ["sweep", *ONE_EPOCH, "--executor", "ray", "--address",
                               ray_cluster.address, *request_, "--run-dir", "s"])
    assert done.returncode == 1, done.stderr
    line = one_error_line(done.stderr)
    assert "no node of the Ray cluster can run a cell asking for" in line and request_[0] in line, line
    assert "at most 2 CPUs and 0 GPUs each" in line, line  # the fixture's one node: 2 CPUs, no GPU
    assert not list((tmp_path / "s").glob("cells/*/config.json"))  # nothing was submitted


# ---------------------------------------------------------------- case 9: checkpoints that inflate


def _legit_run(tmp_path: Path, optim: str = "adam") -> runs.RunDir:
    from fmae.training import cells

    config = TrainConfig(model=ModelConfig(hidden=8), optim=optim, momentum=0.9 if optim == "sgd" else 0.0)
    cell = cells.new_cell(config, torch.device("cpu"))
    x = torch.rand(4, 784)
    ((cell.model(x) - x) ** 2).mean().backward()
    cell.optimizer.step()
    run = runs.RunDir(tmp_path / optim)
    run.reset()
    run.save_last(config, cell.resume_state(torch.Generator().manual_seed(1)))
    run.save_model(config, cell.model.state_dict(), [], "completed", {})
    return run


def _deflated(data: bytes) -> bytes:
    """The same torch file, every record DEFLATE-compressed (torch.load still reads it)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    return out.getvalue()


def _bomb(model_pt: Path, target: Path, nbytes: int) -> None:
    """model.pt plus an all-zero tensor of `nbytes`, its record deflated (~nbytes/1000 on disk), made
    without ever holding it: the pickle comes from a save that skips tensor data."""
    obj = torch.load(model_pt, weights_only=True)
    with torch.serialization.skip_data():
        declared = io.BytesIO()
        torch.save({**obj, "extra": torch.empty(nbytes // 4)}, declared)  # untouched pages: no memory
    real = io.BytesIO()
    torch.save({**obj, "extra": torch.zeros(1)}, real)
    with zipfile.ZipFile(io.BytesIO(declared.getvalue())) as meta, \
            zipfile.ZipFile(io.BytesIO(real.getvalue())) as src, \
            zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as dst:
        last = max(int(n.rsplit("/", 1)[1]) for n in meta.namelist() if "/data/" in n)
        for name in meta.namelist():
            if name.endswith(f"/data/{last}"):
                with dst.open(name, "w", force_zip64=True) as fh:
                    for _ in range(nbytes // (1 << 24)):
                        fh.write(bytes(1 << 24))
            else:
                dst.writestr(name, (src if "/data/" in name else meta).read(name))


PEAK_RSS = """
import atexit
def _peak():  # the peak resident size of this process (VmHWM, kB): exec gave it a fresh one
    hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]
    open({peak!r}, "w").write(hwm)
atexit.register(_peak)
"""


def test_case9_compressed_or_foreign_checkpoints_are_refused_before_anything_inflates(tmp_path):
    from fmae.checkpoints import load_checkpoint
    from fmae.errors import CheckpointError

    adam, sgd = _legit_run(tmp_path, "adam"), _legit_run(tmp_path, "sgd")
    for run in (adam, sgd):  # legit files load exactly as torch.load reads them
        for name, kind in (("model.pt", "model"), ("last.pt", "resume")):
            mine, plain = load_checkpoint(run.file(name), kind), torch.load(run.file(name), weights_only=True)
            weights = "state_dict" if kind == "model" else "model"
            assert all(torch.equal(mine[weights][k], plain[weights][k]) for k in plain[weights])
    # every kind of file, deflated: refused from the zip directory (model.pt, last.pt, best.pt's bytes)
    for name, kind in (("model.pt", "model"), ("last.pt", "resume")):
        squeezed = _deflated(adam.file(name).read_bytes())
        torch.load(io.BytesIO(squeezed), weights_only=True)  # torch itself would read it
        with pytest.raises(CheckpointError, match="is compressed"):
            load_checkpoint("best.pt", kind, data=squeezed)
    # a resume state whose optimizer buffer is not its weight's shape
    state = torch.load(adam.file("last.pt"), weights_only=True)
    state["optimizer"]["state"][0]["exp_avg"] = torch.zeros(3, 3)
    torch.save(state, adam.file("last.pt"))
    with pytest.raises(CheckpointError, match="optimizer state exp_avg of encoder.weight is"):
        load_checkpoint(adam.file("last.pt"), "resume")

    # the attack: 1 GB of zeros in ~1 MB of file; refused with one line, and the RSS never grows by it
    nbytes = 1 << 30
    _bomb(adam.file("model.pt"), tmp_path / "bomb.pt", nbytes)
    assert (tmp_path / "bomb.pt").stat().st_size < nbytes // 100
    (tmp_path / "small.pt").write_bytes(_deflated(adam.file("model.pt").read_bytes()))
    peaks = {}
    for name in ("small.pt", "bomb.pt"):  # the small one: what importing torch and refusing costs anyway
        peak = tmp_path / f"peak-{name}"
        done = run_fmae(tmp_path, ["eval", "--ckpt", name, "-q"], PEAK_RSS.format(peak=str(peak)), timeout=120)
        assert done.returncode == 1, done.stderr
        assert "refused: record" in one_error_line(done.stderr) and "is compressed" in done.stderr, done.stderr
        peaks[name] = int(peak.read_text()) * 1024  # VmHWM: this process's peak, in kB
    assert peaks["bomb.pt"] < peaks["small.pt"] + nbytes // 4, peaks


# ---------------------------------------------------------------- case 10: --examples bounded


def test_case10_examples_are_bounded_by_what_a_figure_can_hold(fake_dataset, tmp_path, monkeypatch):
    from fmae.figures import plots

    done = cli("train", *ONE_EPOCH, "--run-dir", str(tmp_path / "r"))
    assert done.exit_code == 0, done.stderr
    too_many = str(MAX_EXAMPLES + 1)
    for args in (["plot", str(tmp_path / "r"), "--kind", "recon", "--out", str(tmp_path / "f"), "--examples", too_many],
                 ["denoise", "--ckpt", str(tmp_path / "r" / "model.pt"), "--out", str(tmp_path / "g.png"),
                  "--examples", too_many]):
        result = cli(*args)
        assert result.exit_code == 2, result.stderr
        line = one_error_line(result.stderr)
        assert f"examples must be at most {MAX_EXAMPLES}" in line and "--examples" in line, line
    assert not (tmp_path / "f").exists() and not (tmp_path / "g.png").exists()

    # the maximum fits: each figure's size at MAX_EXAMPLES rows, at the dpi it is saved with, under 2**16 pixels
    sizes = []

    class Stop(Exception):
        pass

    def figure(figsize, **_):
        sizes.append(figsize)
        raise Stop

    monkeypatch.setattr(plots, "Figure", figure)
    rows = torch.zeros(MAX_EXAMPLES, 784)
    for draw in (lambda: plots.recon(rows, {"a": rows}),
                 lambda: plots.denoise_grid(rows, rows, {"a": rows}, sigma=0.5, noise="gaussian")):
        with pytest.raises(Stop):
            draw()
    assert all(max(w, h) * plots.DPI < 2**16 for w, h in sizes), sizes
    assert all(max(w, h) * plots.dpi_for(w, h) <= plots.MAX_PIXELS + 1e-6 for w, h in sizes), sizes  # as saved


# ---------------------------------------------------------------- case 13: every integer flag bounded

HUGE = str(2**64)


@pytest.mark.parametrize("args,flag", [
    (["plot", "RUN", "--kind", "recon", "--seed", HUGE], "--seed"),
    (["plot", "RUN", "--kind", "recon", "--seed", "-1"], "--seed"),
    (["plot", "RUN", "--kind", "recon", "--examples", HUGE], "--examples"),
    (["denoise", "--ckpt", "CKPT", "--seed", HUGE], "--seed"),
    (["denoise", "--ckpt", "CKPT", "--limit", HUGE], "--limit"),
    (["denoise", "--ckpt", "CKPT", "--out", "g.png", "--index", HUGE], "--index"),
    (["train", "--seed", HUGE], "--seed"),
    (["train", "--hidden", HUGE], "--hidden"),
    (["train", "--epochs", HUGE], "--epochs"),
    (["train", "--batch-size", HUGE], "--batch-size"),
    (["train", "--patience", HUGE], "--patience"),
    (["train", "--threads", HUGE], "--threads"),
    (["sweep", "--seed", HUGE], "--seed"),
    (["sweep", "--hidden", HUGE], "--hidden"),
    (["sweep", "--jobs", HUGE], "--jobs"),
    (["sweep", "--max-retries", HUGE], "--max-retries"),
    (["sweep", "--prune", "halving", "--eta", HUGE], "--eta"),
    (["sweep", "--prune", "halving", "--min-epochs", HUGE], "--min-epochs"),
])
def test_case13_every_integer_flag_is_bounded_with_exit_2_naming_it(fake_dataset, tmp_path, args, flag):
    run = tmp_path / "r"
    done = cli("train", *ONE_EPOCH, "--run-dir", str(run))
    assert done.exit_code == 0, done.stderr
    args = [str(run) if a == "RUN" else str(run / "model.pt") if a == "CKPT" else a for a in args]
    out = ["--run-dir", str(tmp_path / "x")] if args[0] in ("train", "sweep") else \
        ["--out", str(tmp_path / "f")] if args[0] == "plot" else []
    result = cli(*args, *out)
    assert result.exit_code == 2, result.stderr
    assert flag in one_error_line(result.stderr), result.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "f").exists()


# ---------------------------------------------------------------- case 15: a small /dev/shm

# What torch raises when /dev/shm is full (seen with a 16 MB tmpfs mounted on /dev/shm in a private
# mount namespace, which needs root): here the same failure, at the same call, without root.
SHM_FULL = """
import torch
from pathlib import Path
def _share_fd_cpu_(self, *args, **kwargs):
    Path({marker!r}).write_text("tried")
    raise RuntimeError("unable to allocate shared memory(shm) for file </torch_1_2_0>: No space left on device (28)")
torch.UntypedStorage._share_fd_cpu_ = _share_fd_cpu_
"""


def test_case15_jobs_2_with_a_full_dev_shm_says_so_and_points_at_jobs_1(tmp_path):
    marker = tmp_path / "shm-tried"
    done = run_fmae(tmp_path, ["sweep", *ONE_EPOCH, "--hidden", "8", "--jobs", "2", "--run-dir", "s"],
                    SHM_FULL.format(marker=str(marker)))
    assert marker.read_text() == "tried"  # the dataset was on its way to shared memory for a worker
    assert done.returncode == 1, done.stderr
    line = one_error_line(done.stderr)
    assert "not enough shared memory for --jobs 2" in line and "/dev/shm" in line and "--jobs 1" in line, line


# ---------------------------------------------------------------- case 16: flags the executor ignored, --threads


def test_case16_ray_sizes_are_refused_on_the_local_executor_and_threads_are_bounded_by_the_cores(fake_dataset,
                                                                                                  tmp_path):
    for args, needle in ((["--cpus-per-cell", "1"], "--cpus-per-cell applies to --executor ray only"),
                         (["--gpus-per-cell", "0"], "--gpus-per-cell applies to --executor ray only"),
                         (["--jobs", "2", "--cpus-per-cell", "2", "--gpus-per-cell", "0.5"],
                          "--cpus-per-cell and --gpus-per-cell apply to --executor ray only")):
        result = cli("sweep", *ONE_EPOCH, *args, "--run-dir", str(tmp_path / "s"))
        assert result.exit_code == 2 and needle in one_error_line(result.stderr), result.stderr
        assert not (tmp_path / "s").exists()
    cores = base.cores()
    for command in ("train", "sweep"):
        result = cli(command, *ONE_EPOCH, "--threads", str(4 * cores + 1),
                     "--run-dir", str(tmp_path / command))
        assert result.exit_code == 2, result.stderr
        assert f"threads must be at most {4 * cores}" in one_error_line(result.stderr), result.stderr
        assert not (tmp_path / command).exists()
    result = cli("train", *ONE_EPOCH, "--threads", str(cores), "--run-dir",
                 str(tmp_path / "ok"))
    assert result.exit_code == 0, result.stderr


# ---------------------------------------------------------------- case 17: Ctrl-C pressed three times


def test_case17_three_ctrl_c_during_a_jobs_2_sweep_exit_130_with_one_line_and_leave_nothing(tmp_path):
    for attempt in range(2):
        private = tmp_path / f"tmp{attempt}"
        private.mkdir()
        code = fmae_script(tmp_path, ["sweep", "--lr", "0.1", *tiny(100000, hidden=4), "--hidden", "8", "--jobs", "2",
                                      "--run-dir", f"s{attempt}"])
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=child_env(TMPDIR=str(private)),
                                text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                preexec_fn=default_sigint)
        try:
            deadline = time.time() + 120
            while time.time() < deadline and proc.poll() is None \
                    and not list((tmp_path / f"s{attempt}").glob("cells/*/last.pt")):
                time.sleep(0.02)
            assert proc.poll() is None, proc.stderr.read()
            assert list(private.glob("pymp-*"))  # the pool's fork server keeps its socket there
            for _ in range(3):  # a terminal's Ctrl-C reaches the whole process group
                os.killpg(proc.pid, signal.SIGINT)
                time.sleep(0.02)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        assert proc.returncode == 130, (proc.returncode, err)
        line = one_error_line(err)
        assert line.startswith("error: sweep interrupted by SIGINT; finished epochs are saved"), err
        assert "Exception ignored" not in err and "KeyboardInterrupt" not in err, err
        assert not list(private.glob("pymp-*")), list(private.iterdir())
