"""`fmae sweep --jobs N` and `--executor ray` on the tiny synthetic dataset: the same numbers as
one cell after another, workers that die mid-cell retried from the last saved epoch, bad options."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from fmae import faults
from fmae.executors import worker
from fmae.executors.driver import longest_first
from fmae.executors.local import LocalPlan
from tests.helpers import assert_same_sweep, cli, ctrl_c_at_save, installed_env, reap

GRID = ["--optim", "sgd", "adam", "--lr", "0.1", "--hidden", "4", "8", "--batch-size", "16", "--epochs", "3",
        "--threads", "1", "-q", "--json"]
DIES = "adam-lr0.1-h8-s0"


def sweep(path: Path, *extra: str):
    return cli("sweep", *GRID, *extra, "--run-dir", str(path))


@pytest.fixture
def reference(fake_dataset, tmp_path):
    result = sweep(tmp_path / "one")
    assert result.exit_code == 0, result.stderr
    return tmp_path / "one"


def test_jobs_2_equals_jobs_1(reference, tmp_path):
    result = sweep(tmp_path / "two", "--jobs", "2")
    assert result.exit_code == 0, result.stderr
    assert_same_sweep(reference, tmp_path / "two")


def test_jobs_2_on_the_fork_server_and_on_spawn_equal_jobs_1(reference, tmp_path, monkeypatch):
    """Linux forks the workers from a fork server; macOS and Windows take spawn: both give the same sweep."""
    from fmae.executors import local

    assert local.context().get_start_method() == "forkserver"  # this machine (Linux): the path the pool test takes
    monkeypatch.setattr(local, "sys", SimpleNamespace(platform="darwin"))
    assert local.context().get_start_method() == "spawn"
    result = sweep(tmp_path / "spawn", "--jobs", "2")
    assert result.exit_code == 0, result.stderr
    assert_same_sweep(reference, tmp_path / "spawn")


def test_ray_equals_jobs_1(reference, tmp_path, ray_cluster):
    result = sweep(tmp_path / "ray", "--executor", "ray")
    assert result.exit_code == 0, result.stderr
    assert_same_sweep(reference, tmp_path / "ray")


def die_once(monkeypatch, tmp_path: Path, epoch: int = 2) -> Path:
    marker = tmp_path / "died"
    monkeypatch.setenv(faults.DIE_AFTER_EPOCH, f"{DIES}:{epoch}")
    monkeypatch.setenv(faults.DIE_MARKER, str(marker))
    return marker


def test_a_pool_worker_that_dies_mid_cell_is_replaced_and_the_cell_resumes(reference, tmp_path, monkeypatch):
    marker = die_once(monkeypatch, tmp_path)
    result = sweep(tmp_path / "two", "--jobs", "2")
    assert result.exit_code == 0, result.stderr
    dead = int(marker.read_text())  # the worker wrote it, then called os._exit after epoch 2 of DIES
    assert dead != os.getpid() and not Path(f"/proc/{dead}").exists()
    assert_same_sweep(reference, tmp_path / "two")


def test_a_ray_worker_that_dies_mid_cell_is_retried_and_the_cell_resumes(reference, tmp_path, monkeypatch,
                                                                         ray_cluster):
    marker = die_once(monkeypatch, tmp_path)
    result = sweep(tmp_path / "ray", "--executor", "ray")
    assert result.exit_code == 0, result.stderr
    assert int(marker.read_text()) != os.getpid()
    assert_same_sweep(reference, tmp_path / "ray")


def test_ray_gives_up_after_max_retries_and_the_sweep_goes_on(fake_dataset, tmp_path, monkeypatch, ray_cluster):
    marker = die_once(monkeypatch, tmp_path, epoch=1)
    result = sweep(tmp_path / "ray", "--executor", "ray", "--max-retries", "0")
    assert marker.exists()
    assert result.exit_code == 1, result.stderr
    assert result.stdout.startswith("{"), (result.stdout[:2000], result.stderr[-2000:])
    status = {f"{c['optim']}-h{c['hidden']}": c["status"] for c in json.loads(result.stdout)["cells"]}
    assert status == {"sgd-h4": "completed", "sgd-h8": "completed", "adam-h4": "collapsed", "adam-h8": "failed"}
    assert "--max-retries" in json.loads(result.stdout)["cells"][-1]["error"]


@pytest.mark.parametrize("args,needle", [
    (["--jobs", "0"], "jobs must be"),
    (["--threads", "0"], "threads must be"),
    (["--address", "auto"], "--address applies to --executor ray only"),
    (["--executor", "ray", "--jobs", "2"], "--jobs applies to the local executor"),
    (["--executor", "ray", "--cpus-per-cell", "0"], "cpus_per_cell must be > 0"),
    (["--executor", "ray", "--gpus-per-cell", "-1"], "gpus_per_cell must be >= 0"),
    (["--executor", "ray", "--device", "cuda"], "not --device cuda"),
])
def test_bad_executor_options_exit_2(fake_dataset, tmp_path, args, needle):
    result = cli("sweep", "--hidden", "4", *args, "--run-dir", str(tmp_path / "s"))
    assert result.exit_code == 2 and needle in result.stderr, result.stderr
    assert not (tmp_path / "s").exists()


def test_train_threads_are_recorded(fake_dataset, tmp_path):
    result = cli("train", "--hidden", "4", "--epochs", "1", "--batch-size", "16", "--threads",
                 "1", "-q", "--run-dir", str(tmp_path / "r"))
    assert result.exit_code == 0, result.stderr
    assert json.loads((tmp_path / "r" / "config.json").read_text())["environment"]["threads"] == 1
    bad = cli("train", "--threads", "0", "--run-dir", str(tmp_path / "b"))
    assert bad.exit_code == 2 and "threads must be between 1 and 4096, got 0" in bad.stderr


def test_without_ray_executor_ray_exits_1_with_the_install_command(tmp_path):
    code = ("import sys\nsys.modules['ray'] = None  # as if Ray were not installed\n"
            "from fmae.cli import main\nsys.argv = ['fmae', 'sweep', '--executor', 'ray', '--run-dir', 'x']\nmain()")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip() == ("error: --executor ray needs Ray, which is not installed "
                                  "(hint: install it with: pip install 'fmae-cli[ray]')")
    assert not (tmp_path / "x").exists()


def test_workers_that_die_at_start_fail_the_cell_instead_of_hanging(tmp_path):
    """A script without `if __name__ == "__main__"` makes every spawned worker rerun it and die at
    start: the driver must see the pool break, retry, and give the cell up, not block on a worker."""
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import os, sys\nfrom pathlib import Path\nfrom fmae import data\nfrom tests.helpers import write_dataset\n"
        f"d = Path({str(tmp_path / 'tiny')!r})\ndata.CHECKSUMS = write_dataset(d, n_train=200, n_test=20)\n"
        "os.environ['FMAE_DATA_DIR'] = str(d)\n"
        f"sys.argv = ['fmae', 'sweep', '--hidden', '4', '--lr', '0.1', '--epochs', '1', '--jobs', '2', '--json', "
        f"'--run-dir', {str(tmp_path / 's')!r}]\n"
        "from fmae.cli import main\nmain()\n")
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(root)})
    assert out.returncode == 1, out.stderr
    assert out.stderr.count("is in use by fmae process") >= 3  # the first try and --max-retries 2
    docs, text, decoder = [], out.stdout.strip(), json.JSONDecoder()
    while text:  # the workers rerun the script too: each prints its own --json error document
        doc, end = decoder.raw_decode(text)
        docs.append(doc)
        text = text[end:].strip()
    (results,) = [d for d in docs if "cells" in d]  # the driver's
    cell = results["cells"][0]
    assert cell["status"] == "failed" and cell["error"].startswith("its worker died 3 times")


def test_raylet_reports_never_reach_stdout_even_after_the_sweep_closed(tiny_data, ray_cluster, capsys):
    """A raylet report ("a worker died ...") can arrive after the last task; stdout carries --json."""
    import ray._private.worker as ray_worker

    from fmae.execution import ExecutorConfig
    from fmae.executors.ray_cluster import RayBackend

    RayBackend(ExecutorConfig(executor="ray"), tiny_data).close(interrupted=False)
    report = {"pid": "raylet", "ip": "127.0.0.1", "is_err": False, "job": "01000000",
              "lines": ["A worker died or was killed while executing a task"]}
    ray_worker.print_to_stdstream(report, ignore_prefix=False)
    ray_worker.print_to_stdstream({**report, "lines": ["still quiet the second time"]}, ignore_prefix=False)
    out = capsys.readouterr().out
    assert "worker died" not in out and "still quiet" not in out
    ray_worker.print_to_stdstream({**report, "pid": 4242, "lines": ["a task's own print"]}, ignore_prefix=False)
    assert "a task's own print" in capsys.readouterr().out  # only the raylet's reports are dropped


def plan(hidden: int, epochs: int, start: int = 0) -> SimpleNamespace:
    config = SimpleNamespace(model=SimpleNamespace(hidden=hidden), epochs=epochs)
    return SimpleNamespace(config=config, start_epoch=start)


def test_several_slots_take_the_largest_work_first_so_that_no_large_cell_ends_alone():
    small, big, half_done, pair = plan(64, 10), plan(512, 10), plan(512, 10, start=8), [plan(128, 10), plan(256, 10)]
    groups = [[small], [half_done], [big], pair]
    assert longest_first(groups) == [[big], pair, [half_done], [small]]  # 5120, 3840, 1024, 640
    assert longest_first(groups, stop_at=9) == [[big], pair, [small], [half_done]]  # half_done: 1 epoch left
    first, second = plan(64, 10), plan(32, 20)  # equal work: the grid's order stays
    assert [g[0] for g in longest_first([[first], [second]])] == [first, second]
    assert [g[0] for g in longest_first([[second], [first]])] == [second, first]


def test_a_closed_pool_backend_leaves_no_open_pipe(tiny_data):
    """A closed pool leaves nothing behind: both ends of its lifeline are closed."""
    from fmae.executors import local

    local.PoolBackend(2, tiny_data, "cpu").close(interrupted=False)  # multiprocessing's shared heap: once a process
    fds = len(os.listdir("/proc/self/fd"))
    backend = local.PoolBackend(2, tiny_data, "cpu")
    assert len(os.listdir("/proc/self/fd")) == fds + 2  # the lifeline pipe
    backend.close(interrupted=False)
    assert len(os.listdir("/proc/self/fd")) == fds


HALVING = ["--optim", "sgd", "--lr", "0.5", "0.1", "0.01", "--hidden", "4", "--activation", "identity",
           "--batch-size", "16", "--epochs", "9", "--prune", "halving", "--threads", "1", "-q", "--json"]


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_halving_sweep_opens_one_executor_for_all_its_rungs(fake_dataset, tmp_path, monkeypatch, jobs):
    """Three rungs, one backend (Ray used to start and stop once per rung): made once, closed once;
    with --jobs 2, the pool's two workers (indices 0 and 1) serve every rung."""
    made, closed = [], []
    open_backend = LocalPlan.open

    def counted(*a, **k):
        backend = open_backend(*a, **k)
        close = backend.close
        backend.close = lambda **kw: (closed.append(kw), close(**kw))[1]
        made.append(backend)
        return backend

    monkeypatch.setattr(LocalPlan, "open", counted)
    pids = tmp_path / "pids"
    pids.mkdir()
    monkeypatch.setenv(faults.WORKER_PIDS, str(pids))
    result = cli("sweep", *HALVING, "--jobs", jobs, "--run-dir", str(tmp_path / "s"))
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["prune"]["rungs"] == [1, 3, 9]
    assert len(made) == 1 and closed == [{"interrupted": False}]
    if jobs == "2":
        assert sorted(int(p.read_text()) for p in pids.iterdir()) == [0, 1]


def test_nothing_to_train_starts_no_executor(fake_dataset, tmp_path, monkeypatch):
    args = ["sweep", *GRID, "--epochs", "1", "--run-dir", str(tmp_path / "s")]
    assert cli(*args).exit_code == 0
    monkeypatch.setattr(LocalPlan, "open", None)  # the rerun of a finished sweep opens none
    assert cli(*args).exit_code == 0


def test_an_interrupted_sweep_closes_its_executor_as_interrupted(fake_dataset, tmp_path, monkeypatch):
    closed = []
    open_backend = LocalPlan.open

    def counted(*a, **k):
        backend = open_backend(*a, **k)
        close = backend.close
        backend.close = lambda **kw: (closed.append(kw), close(**kw))[1]
        return backend

    monkeypatch.setattr(LocalPlan, "open", counted)
    with ctrl_c_at_save(1, saved=False):
        result = cli("sweep", *GRID, "--run-dir", str(tmp_path / "s"))
    assert result.exit_code == 130 and closed == [{"interrupted": True}]


@pytest.mark.parametrize("device,index,gpus,expected", [
    ("cuda", 0, 2, "cuda:0"), ("cuda", 1, 2, "cuda:1"), ("cuda", 2, 2, "cuda:0"), ("cuda", 5, 3, "cuda:2"),
    ("cuda", 1, 1, "cuda"), ("cuda", 1, 0, "cuda"), ("cpu", 1, 2, "cpu"), ("mps", 3, 0, "mps"),
])
def test_pool_workers_spread_over_the_gpus(device, index, gpus, expected):
    assert worker.worker_device(device, index, gpus) == expected


def test_ray_groups_are_cut_into_as_many_tasks_as_run_at_once():
    from fmae.executors.ray_cluster import split

    assert split(list(range(24)), 4) == [list(range(i, i + 6)) for i in range(0, 24, 6)]
    assert split(list(range(5)), 2) == [[0, 1, 2], [3, 4]]
    assert split([0, 1], 8) == [[0], [1]] and split([0, 1, 2], 1) == [[0, 1, 2]]


def tear_a_result(pool) -> None:
    """Half a result in the pool's result pipe (1 MB promised, 100 B sent), as a worker that died while
    it wrote one leaves it; returns once the pool's manager thread has read what is there."""
    import struct
    import time

    results = pool._result_queue
    os.write(results._writer.fileno(), struct.pack("!i", 1 << 20) + b"x" * 100)
    deadline = time.time() + 10
    while time.time() < deadline and results._reader.poll(0):
        time.sleep(0.05)
    time.sleep(0.2)


def test_an_interrupted_pool_ends_its_threads_though_a_worker_died_mid_result(tiny_data):
    """A worker that dies halfway through writing its result (the driver closed the lifeline as it
    sent one) leaves the pool's manager thread waiting for the rest for ever, since the driver holds
    the pipe's write end too; the interpreter's exit joins that thread, so an interrupted sweep hung
    instead of exiting 130, one run in two (tests/test_redteam_exec.py, case 17). An interrupted close
    lets the read end: here the torn message is written by hand, before the workers go."""
    import time

    from fmae.executors import local

    backend = local.PoolBackend(2, tiny_data, "cpu")
    pool = backend._current()
    pool.submit(time.sleep, 60)  # a worker busy: the manager thread waits for results
    results = pool._result_queue
    try:
        thread = pool._executor_manager_thread
        tear_a_result(pool)
        assert thread.is_alive() and not results._reader.poll(0)  # the fault: the thread is inside the torn read
        backend.close(interrupted=True)
        thread.join(timeout=20)
        assert not thread.is_alive()
    finally:
        results._writer.close()  # without the fix, what lets this test's process exit


def test_a_worker_killed_mid_result_comes_back_lost_instead_of_never(tiny_data, monkeypatch):
    """A kill -9 of a worker halfway through writing its result (the pipe was full) leaves the pool's
    manager thread reading the rest for ever: the pool never learned of the death, and the sweep
    waited for ever. The backend finds the dead worker at two looks and releases the pipe: every
    task of that pool comes back lost (then retried from its last saved epoch)."""
    import signal
    import threading
    import time

    from fmae.executors import local
    from fmae.executors.base import WorkerLost

    monkeypatch.setattr(local.PoolBackend, "WATCH", 0.5)
    backend = local.PoolBackend(2, tiny_data, "cpu")
    pool = backend._current()
    futures = [pool.submit(time.sleep, 60) for _ in range(2)]
    for future in futures:
        backend._owner[future] = pool
    deadline = time.time() + 30
    while time.time() < deadline and len(pool._processes) < 2:
        time.sleep(0.05)
    results, thread = pool._result_queue, pool._executor_manager_thread
    tear_a_result(pool)
    assert thread.is_alive() and not results._reader.poll(0)  # the manager thread is inside the torn read
    os.kill(next(iter(pool._processes)), signal.SIGKILL)
    time.sleep(0.5)
    assert thread.is_alive() and not any(f.done() for f in futures)  # the fault: the death goes unnoticed
    got = []
    waiter = threading.Thread(target=lambda: got.extend(backend.wait(futures)), daemon=True)
    waiter.start()
    waiter.join(timeout=30)
    try:
        assert got and all(isinstance(outcome, WorkerLost) for _, outcome in got)
        thread.join(timeout=20)
        assert not thread.is_alive()
    finally:
        results._writer.close()  # without the fix, what lets this test's process exit
        backend.close(interrupted=True)


RUNNER = """import json, os, sys
from fmae import data
data.CHECKSUMS = json.loads(os.environ["TEST_SUMS"])
if __name__ == "__main__":  # not in the pool's workers, which import this script again
    sys.argv = ["fmae", *sys.argv[1:]]
    from fmae.cli import main
    main()
"""


def process_state(pid: int) -> str:
    """A process's state letter (/proc/PID/stat): R running, S sleeping, T stopped."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_a_stopped_worker_s_cell_is_named_while_the_sweep_waits_and_the_sweep_ends_once_it_goes_on(fake_dataset,
                                                                                                     tmp_path):
    """Issue 27, item 6: a pool worker stopped (SIGSTOP) held a --jobs sweep without a word. After
    FMAE_TEST_STALL_SECONDS without an epoch, the progress says which cell it waits for and since
    when; after SIGCONT the sweep goes on and ends as any other."""
    from fmae import data

    pids = tmp_path / "pids"
    pids.mkdir()
    (tmp_path / "run_fmae.py").write_text(RUNNER)
    env = installed_env(FMAE_DATA_DIR=str(fake_dataset), TEST_SUMS=json.dumps(data.CHECKSUMS),
                        **{faults.WORKER_PIDS: str(pids), faults.STALL_SECONDS: "1", faults.WRITE_DELAY: "0.02"})
    proc = subprocess.Popen([sys.executable, "run_fmae.py", "sweep", "--optim", "sgd", "--lr", "0.1", "0.05",
                             "--hidden", "8", "--batch-size", "16", "--epochs", "150", "--patience", "0",
                             "--threads", "1", "--jobs", "2", "--run-dir", "sw", "--json"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()

    def wait_for(done, what: str, seconds: float = 120) -> None:
        deadline = time.monotonic() + seconds
        while not done():
            assert proc.poll() is None and time.monotonic() < deadline, f"{what}: not seen\n" + "".join(lines)
            time.sleep(0.05)

    workers: list[int] = []
    try:
        wait_for(lambda: len(list(pids.iterdir())) == 2 and sum(" epoch " in line for line in lines) >= 4,
                 "two workers and their first epochs")
        workers = [int(p.name) for p in pids.iterdir()]
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        wait_for(lambda: all(process_state(pid) == "T" for pid in workers), "the workers stopped")  # the fault
        stopped_at = time.strftime("%H:%M:%S")
        wait_for(lambda: any(line.startswith("waiting for cell") for line in lines), "the waiting line", 60)
        waiting = [line for line in lines if line.startswith("waiting for cell")]
        found = re.fullmatch(r"waiting for cell (sgd-lr0\.(1|05)-h8-s0) since (\d\d:\d\d:\d\d) "
                             r"\(no epoch for \d+ s\)\n", waiting[0])
        assert found, waiting
        assert found[3] <= stopped_at or stopped_at < "00:00:05"  # its last news came before the stop
        assert all(process_state(pid) == "T" for pid in workers)  # still stopped: the sweep waited on them
        assert proc.poll() is None
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
    try:
        out = proc.stdout.read()
        assert proc.wait(timeout=300) == 0, "".join(lines)
    finally:
        reap(proc)
    reader.join(10)
    doc = json.loads(out)
    assert sorted(c["status"] for c in doc["cells"]) == ["completed", "completed"]
    assert all(c["epochs_run"] == 150 for c in doc["cells"])
    assert not any(line.startswith(("error", "warning", "Traceback")) for line in lines)


def test_every_backend_and_plan_is_the_protocol_in_code():
    """fmae.executors.base states the backend protocol (inline, slots, submit, wait, close(*, interrupted))
    and the plan each executor kind implements; plan_for is the one place that picks a kind."""
    import inspect

    from fmae.execution import EXECUTORS, ExecutorConfig
    from fmae.executors import base, local, plan_for, ray_cluster

    for backend in (local.InlineBackend, local.PoolBackend, ray_cluster.RayBackend):
        assert isinstance(backend.inline, bool), backend
        for name in ("submit", "wait", "close"):
            assert callable(getattr(backend, name)), (backend, name)
        assert inspect.signature(backend.close).parameters["interrupted"].kind is inspect.Parameter.KEYWORD_ONLY
    kinds = {name: type(plan_for(ExecutorConfig(executor=name))) for name in EXECUTORS}
    assert kinds == {"local": local.LocalPlan, "ray": ray_cluster.RayPlan}
    assert all(issubclass(k, base.ExecutorPlan) and not inspect.isabstract(k) for k in kinds.values())
    assert plan_for(ExecutorConfig(jobs=2)).describe(1) == "2 jobs x 1 thread"
    assert plan_for(ExecutorConfig()).describe(2) == "2 threads"
    assert plan_for(ExecutorConfig(executor="ray")).describe(1) == "ray, 1 thread per cell"
