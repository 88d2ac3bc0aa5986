"""Shared fixtures: tiny synthetic IDX datasets for unit tests, the real dataset (and the check that
only tests marked `dataset` reach it) for the rest, a Ray cluster, the device. Plain functions: helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from fmae import data, faults
from tests.helpers import locate_real_data, write_dataset


@pytest.fixture
def tiny_dir(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    directory = tmp_path / "tiny"
    return directory, write_dataset(directory)


@pytest.fixture
def tiny_data(tiny_dir):
    directory, sums = tiny_dir
    return data.load(directory, checksums=sums)


@pytest.fixture
def fake_dataset(tiny_dir, monkeypatch):
    """Make the tiny dataset what fmae finds first, with its own checksums, for CLI tests."""
    directory, sums = tiny_dir
    monkeypatch.setattr(data, "CHECKSUMS", sums)
    monkeypatch.setenv("FMAE_DATA_DIR", str(directory))
    return directory


# the fixtures that bring the real dataset: a test that asks for one carries the `dataset` mark, and only such a test
REAL_DATA = frozenset({"real_data_dir", "real_data", "small_real"})


@pytest.fixture(autouse=True)
def _an_idle_machine(monkeypatch):
    """The busy-machine hint reads this load, not the test machine's own (which varies); the
    environment carries it into the `fmae` processes tests start. A test may set another."""
    monkeypatch.setenv(faults.LOAD, "0")


@pytest.fixture(autouse=True)
def _dataset_mark_is_true(request):
    """`-m 'not dataset'` must leave exactly the tests that run without the real Fashion-MNIST: the mark
    goes with the fixtures above, no more and no less."""
    marked = request.node.get_closest_marker("dataset") is not None
    reads = sorted(REAL_DATA & set(request.fixturenames))
    if marked and not reads:
        pytest.fail("marked `dataset` but reads no real data: drop the mark")
    if reads and not marked:
        pytest.fail(f"reads the real dataset ({', '.join(reads)}) but is not marked `dataset`")


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    return locate_real_data()


@pytest.fixture(scope="session")
def real_data(real_data_dir):
    return data.load(real_data_dir)


@pytest.fixture(scope="session")
def small_real(real_data):
    """A small real subset: 2000 training and 500 test images."""
    return real_data.subset(2000, 500)


@pytest.fixture(scope="session")
def ray_cluster():
    """One simulated Ray cluster for the whole session (starting Ray costs seconds): a head node of
    2 CPUs, which `fmae sweep --executor ray` in this process uses as it is. Ray missing fails."""
    try:
        from ray.cluster_utils import Cluster
    except ImportError:
        pytest.fail("these tests need Ray: pip install -e '.[test]' (it brings ray)")
    import ray

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster

    ray.shutdown()
    cluster.shutdown()


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", choices=("cpu", "cuda", "mps"),
                     help="where the tests marked `device` train (benchmarks/gpu_check.sh passes cuda)")


@pytest.fixture
def device(request):
    """The device named by `pytest --device`; a device that is not there fails the test."""
    import torch

    name = request.config.getoption("--device")
    if name == "cuda" and not torch.cuda.is_available():
        pytest.fail("--device cuda: torch sees no CUDA device here")
    if name == "mps" and not torch.backends.mps.is_available():
        pytest.fail("--device mps: torch sees no MPS device here")
    return torch.device(name)
