"""The directory lock: exclusive under contention, released by a dying owner, honest about owners
it cannot check, covering a running sweep's cells, refusing a second `fmae sweep` on one directory,
and clean on a full disk."""

import multiprocessing
import os
import platform
import resource
import signal
import subprocess
import sys
import time

import pytest

from fmae.errors import RunDirError
from fmae.locks import LOCK_NAME, DirectoryLock, lock_run_dir
from tests.helpers import installed_env

ROUNDS = 25
WORKERS = 8


def _contender(directory, barrier, holders, most, acquired):
    for _ in range(ROUNDS):
        barrier.wait(timeout=60)
        try:
            with DirectoryLock(directory):
                with holders.get_lock():
                    holders.value += 1
                    most.value = max(most.value, holders.value)
                with acquired.get_lock():
                    acquired.value += 1
                time.sleep(0.002)
                with holders.get_lock():
                    holders.value -= 1
        except RunDirError:
            pass


def test_at_most_one_holder_among_processes_started_at_a_barrier(tmp_path):
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(WORKERS)
    holders, most, acquired = ctx.Value("i", 0), ctx.Value("i", 0), ctx.Value("i", 0)
    procs = [ctx.Process(target=_contender, args=(tmp_path, barrier, holders, most, acquired))
             for _ in range(WORKERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert all(p.exitcode == 0 for p in procs)
    assert most.value == 1, f"{most.value} processes held the lock at once"
    assert acquired.value >= ROUNDS  # each round, someone got it
    assert not (tmp_path / LOCK_NAME).exists()


HOLD = "import sys, time; from fmae.locks import DirectoryLock\nwith DirectoryLock(sys.argv[1]):\n" \
       "    print('held', flush=True); time.sleep(60)\n"


def test_a_live_owner_is_named_and_a_killed_one_releases_the_lock(tmp_path):
    owner = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout.readline().strip() == "held"
        with pytest.raises(RunDirError, match=f"in use by fmae process {owner.pid} on {platform.node()}"):
            with DirectoryLock(tmp_path):
                pass
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    with DirectoryLock(tmp_path):  # the kernel released the killed owner's lock: no pid guessing
        assert (tmp_path / LOCK_NAME).read_text().split() == [str(os.getpid()), platform.node()]


def test_a_record_of_a_live_unrelated_pid_does_not_block(tmp_path):
    # a pid now owned by another process (here our parent) must not be taken for the owner
    (tmp_path / LOCK_NAME).write_text(f"{os.getppid()} {platform.node()}\n")
    with DirectoryLock(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text().split()[0] == str(os.getpid())


def test_a_lock_from_another_host_is_shown_with_how_to_remove_it(tmp_path):
    lock = tmp_path / LOCK_NAME
    lock.write_text("4242 other-host.example\n")
    with pytest.raises(RunDirError) as err:
        with DirectoryLock(tmp_path):
            pass
    message = str(err.value)
    assert "fmae process 4242 on host other-host.example" in message and f"remove {lock}" in message
    assert "automatically" not in message and lock.read_text() == "4242 other-host.example\n"


def test_a_cell_of_a_running_sweep_is_refused(tmp_path):
    sweep = tmp_path / "s"
    cell = sweep / "cells" / "adam-lr0.001-h4-s0"
    cell.mkdir(parents=True)
    (sweep / "sweep.json").write_text("{}")
    with DirectoryLock(sweep):
        with pytest.raises(RunDirError, match=f"{cell} is a cell of sweep {sweep}, which is in use by fmae process"):
            with lock_run_dir(cell):
                pass
        assert not (cell / LOCK_NAME).exists()
    with lock_run_dir(cell):  # a cell being trained holds its sweep off in turn
        with pytest.raises(RunDirError, match="in use by fmae process"):
            with DirectoryLock(sweep):
                pass
    assert not (sweep / LOCK_NAME).exists() and not (cell / LOCK_NAME).exists()


SWEEP = ["fmae", "sweep", "--lr", "0.01", "0.001", "--hidden", "16", "--epochs", "3", "-q"]


@pytest.mark.dataset
def test_a_second_sweep_on_the_same_directory_is_refused(tmp_path, real_data_dir):
    env = installed_env(FMAE_DATA_DIR=str(real_data_dir))
    first = subprocess.Popen([*SWEEP[:-1], "--epochs", "30", "--run-dir", "s"], cwd=tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not (tmp_path / "s" / LOCK_NAME).exists():
            time.sleep(0.05)
        second = subprocess.run([*SWEEP[:-1], "--epochs", "30", "--run-dir", "s"], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 1
        assert f"in use by fmae process {first.pid}" in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the killed owner's lock is stale: the next run takes it over
    third = subprocess.run([*SWEEP, "--run-dir", "s", "--epochs", "29"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=60, check=False)
    assert third.returncode == 1 and "other shared settings (epochs 30 -> 29)" in third.stderr, third.stderr


def _no_file_space() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))  # every write of a byte fails: a full disk


def test_a_full_disk_while_writing_the_lock_is_one_error_and_leaves_no_lock(tmp_path):
    code = ("import sys\nfrom fmae.errors import FmaeError\nfrom fmae.locks import DirectoryLock\n"
            "try:\n    DirectoryLock(sys.argv[1]).__enter__()\nexcept FmaeError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                          preexec_fn=_no_file_space, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.startswith(f"cannot write {tmp_path / LOCK_NAME}: File too large (hint: "), done.stdout
    assert os.listdir(tmp_path) == []
