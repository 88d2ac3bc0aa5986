"""Ray core tasks (--executor ray): a private local instance, or a cluster joined with --address.

Ray core, not Ray Tune: Tune would impose its own trial directories and checkpoint layout, while
fmae's cells already resume exactly; tasks are all a sweep needs. The dataset goes into Ray's
object store once, as numpy arrays that tasks read in place: worker nodes need fmae and torch,
neither the dataset nor a shared filesystem. A task whose worker or node died is retried by Ray
(--max-retries) and starts again from the state the driver saved last; nothing of Ray is imported
before this module is.

Joining a cluster (--address) gives up after FMAE_RAY_CONNECT_TIMEOUT seconds (default 30) with
"cannot start or reach Ray" (Ray's own defaults retry for many minutes), and a cell's request that
no live node can meet is refused before any task is submitted (Ray would queue it for ever).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

from fmae.config import check_device
from fmae.errors import ConfigError, FmaeError, first_line
from fmae.execution import ExecutorConfig
from fmae.executors import worker
from fmae.executors.base import ExecutorPlan, cores, threads_each

INSTALL_HINT = "install it with: pip install 'fmae-cli[ray]'"
CONNECT_TIMEOUT = "FMAE_RAY_CONNECT_TIMEOUT"  # seconds --address may take to answer
DEFAULT_CONNECT_TIMEOUT = 30
REACH_HINT = "check --address (auto, or ray://host:port) and that `ray status` works there"


def connect_timeout() -> int:
    """FMAE_RAY_CONNECT_TIMEOUT: whole seconds, 1 to 3600 (default 30)."""
    raw = os.environ.get(CONNECT_TIMEOUT, "").strip()
    if not raw:
        return DEFAULT_CONNECT_TIMEOUT
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= 3600:
        raise ConfigError(f"{CONNECT_TIMEOUT} must be whole seconds between 1 and 3600, got {raw!r}",
                          f"e.g. {CONNECT_TIMEOUT}={DEFAULT_CONNECT_TIMEOUT}, or unset it")
    return value


def connect_settings(timeout: int) -> dict[str, str]:
    """Ray's own settings that make one `ray.init(address=...)` give up after about `timeout`
    seconds: its connection attempt, then its wait for the cluster's id, then no second round
    (Ray's defaults: 5 + 5 + 30 s a round, 20 rounds). Ray reads the first two when it is
    imported, the last at each ray.init; a setting already in the environment is kept."""
    connect = max(1, min(5, timeout // 4))
    return {"RAY_gcs_rpc_server_connect_timeout_s": str(connect),
            "RAY_py_gcs_connect_timeout_s": str(max(1, timeout - 2 * connect - 1)),
            "RAY_gcs_server_port_wait_time_s": "1"}


def import_ray(address: str | None = None) -> Any:
    """Ray, imported; joining `address`, first with the connection deadline set (see connect_settings)."""
    if address is not None:
        for name, value in connect_settings(connect_timeout()).items():
            os.environ.setdefault(name, value)
    try:
        import ray
    except ImportError:
        raise FmaeError("--executor ray needs Ray, which is not installed", INSTALL_HINT) from None
    return ray


@contextlib.contextmanager
def captured_output() -> Iterator[None]:
    """Ray's C++ side writes its retries ("Failed to connect to GCS ...") straight to file
    descriptors 1 and 2, where fmae's results and its one error line go: while joining a cluster
    they go to a temporary file, shown on stderr only with FMAE_DEBUG=1."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with tempfile.TemporaryFile() as sink:
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            if os.environ.get("FMAE_DEBUG") == "1":
                sink.seek(0)
                sys.stderr.write(sink.read().decode(errors="replace"))


class RayPlan(ExecutorPlan):
    """--executor ray: Ray tasks on a private local instance or a joined cluster (--address)."""

    def device(self, requested: str) -> Any:
        """The workers' device, which the driver need not have: cuda when --gpus-per-cell > 0, else
        cpu. Ray is checked to be installed here, before any data is read."""
        check_device(requested)
        import_ray(self.options.address)
        import torch

        wanted = "cuda" if self.options.gpus_per_cell > 0 else "cpu"
        if requested not in ("auto", wanted):
            raise ConfigError(f"--executor ray with --gpus-per-cell {self.options.gpus_per_cell:g} trains on {wanted}, "
                              f"not --device {requested}", "leave --device auto; --gpus-per-cell > 0 means cuda")
        return torch.device(wanted)

    def data_device(self, device: Any) -> Any:
        return "cpu"  # the driver's copy is sent to the workers

    def planned_device(self, requested: str) -> str:
        return requested if self.options.gpus_per_cell else "cpu"

    def describe(self, threads: int) -> str:
        return f"ray, {threads_each(threads)} per cell"

    def tasks(self, groups: list[list[Any]], backend: Any) -> list[list[Any]]:
        """With --gpus-per-cell, each task asks for that many GPUs: the groups are cut so that there
        are as many tasks as the cluster runs at once."""
        if self.options.gpus_per_cell > 0:
            return [part for g in groups for part in split(g, backend.slots)]
        return groups

    def open(self, dataset: Any, device: Any) -> RayBackend:
        return RayBackend(self.options, dataset)


def split(group: list[Any], parts: int) -> list[list[Any]]:
    """A group cut into `parts` near-equal groups (in order), none empty."""
    parts = max(1, min(parts, len(group)))
    size, extra = divmod(len(group), parts)
    cuts = [i * size + min(i, extra) for i in range(parts + 1)]
    return [group[a:b] for a, b in zip(cuts, cuts[1:])]


class RayBackend:
    inline = False

    def __init__(self, options: ExecutorConfig, dataset: Any) -> None:
        ray = self._ray = import_ray(options.address)
        self._options = options
        self._running: set[Any] = set()
        self._quiet_raylet()  # before anything of Ray runs here
        self._owned = not ray.is_initialized()  # a program (or a test session) that started Ray keeps it
        if self._owned:
            self._init(options.address)
        try:
            self.check_fits()
        except BaseException:
            self.close(interrupted=False)
            raise
        arrays = {k: getattr(dataset, k).cpu().numpy()
                  for k in ("train_images", "train_labels", "test_images", "test_labels")}
        self._data = ray.put({**arrays, "source": dataset.source, "sha256": dict(dataset.sha256)})
        self._task = ray.remote(num_cpus=options.cpus_per_cell, max_retries=options.max_retries,
                                retry_exceptions=False)(worker.run_in_ray)

    def _init(self, address: str | None) -> None:
        ray, sigterm = self._ray, signal.getsignal(signal.SIGTERM)
        quiet = dict(log_to_driver=False, configure_logging=True, logging_level=logging.ERROR)
        try:
            if address is None:  # "local": a new instance of our own, whatever RAY_ADDRESS says
                ray.init(address="local", num_cpus=cores(), include_dashboard=False, **quiet)
            else:
                with captured_output():  # no process starts here: nothing inherits the redirection
                    ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
            first = first_line(exc)
            within = f" within {connect_timeout()} s ({CONNECT_TIMEOUT})" if address is not None else ""
            raise FmaeError(f"cannot start or reach Ray at {address or 'a local instance'}{within}: {first}",
                            REACH_HINT) from None
        finally:
            signal.signal(signal.SIGTERM, sigterm)  # ray.init takes SIGTERM over; fmae's handler saves and exits 143

    def check_fits(self) -> None:
        """Refuse, before submitting anything, a cell that no live node can run: Ray would queue
        its tasks for ever, silently. --threads is bounded by the largest node's CPUs, as on
        this machine (see fmae.execution.check_threads)."""
        from fmae.execution import check_threads

        nodes = [n.get("Resources") or {} for n in self._ray.nodes() if n.get("Alive")]
        cpus, gpus = self._options.cpus_per_cell, self._options.gpus_per_cell
        most_cpus = max((float(r.get("CPU", 0)) for r in nodes), default=0.0)
        most_gpus = max((float(r.get("GPU", 0)) for r in nodes), default=0.0)
        if not any(float(r.get("CPU", 0)) >= cpus and float(r.get("GPU", 0)) >= gpus for r in nodes):
            raise FmaeError(f"no node of the Ray cluster can run a cell asking for --cpus-per-cell {cpus:g} and "
                            f"--gpus-per-cell {gpus:g}: its {len(nodes)} live node(s) have at most "
                            f"{most_cpus:g} CPUs and {most_gpus:g} GPUs each",
                            "ask for what one node has, or add a larger node to the cluster")
        check_threads(self._options.threads, max(1, int(most_cpus)), where="the largest Ray node")

    def _quiet_raylet(self) -> None:
        """Ray prints the raylet's error reports (a worker died, ...) on the driver's stdout, which
        carries fmae's results; fmae reports failures itself. FMAE_DEBUG=1 shows them on stderr.
        The filter stays for the life of the process: a report can arrive after the sweep's last
        task (it once reached stdout after close and broke a `--json` document)."""
        module = getattr(getattr(self._ray, "_private", None), "worker", None)
        original = getattr(module, "print_to_stdstream", None)
        if original is None or getattr(original, "fmae_quiet", False):  # another Ray, or done already
            return

        def print_to_stdstream(data: dict[str, Any], *args: Any, **kwargs: Any) -> None:
            if data.get("pid") != "raylet":
                original(data, *args, **kwargs)
            elif os.environ.get("FMAE_DEBUG") == "1":
                original({**data, "is_err": True}, *args, **kwargs)

        print_to_stdstream.fmae_quiet = True  # type: ignore[attr-defined]
        module.print_to_stdstream = print_to_stdstream

    @property
    def slots(self) -> int:
        """Tasks worth keeping in flight: as many as the cluster's resources run at once, now."""
        free = self._ray.cluster_resources()
        n = int(free.get("CPU", 0) // self._options.cpus_per_cell)
        if self._options.gpus_per_cell > 0:
            n = min(n, int(free.get("GPU", 0) // self._options.gpus_per_cell))
        return max(1, n)

    def submit(self, task: worker.Task, on_state: Any = None) -> Any:
        """A task (a cell, or a group trained together) asks for --gpus-per-cell GPUs; Ray gives it
        its own (CUDA_VISIBLE_DEVICES), so tasks spread over a machine's or a cluster's GPUs.
        `on_state` is not called: a task's states come back with its result."""
        from fmae import numerics

        # the portable mode's environment, set before the worker process loads torch (a joined
        # cluster's workers do not inherit this process's environment)
        extra = {"runtime_env": {"env_vars": dict(numerics.PORTABLE_ENV)}} if task.numerics == numerics.PORTABLE else {}
        ref = self._task.options(num_gpus=self._options.gpus_per_cell, **extra).remote(task, self._data)
        self._running.add(ref)
        return ref

    def wait(self, handles: list[Any]) -> list[tuple[Any, Any]]:
        ray = self._ray
        ready, _ = ray.wait(handles, num_returns=1)
        out = []
        for ref in ready:
            self._running.discard(ref)
            try:
                out.append((ref, ray.get(ref)))
            except ray.exceptions.RayTaskError as exc:  # the task raised: its own exception, without Ray's frames
                cause = getattr(exc, "cause", None)
                out.append((ref, cause if isinstance(cause, Exception) else FmaeError(str(exc).splitlines()[0])))
            except ray.exceptions.RayError as exc:  # the worker or node died more than --max-retries times
                first = first_line(exc)
                out.append((ref, FmaeError(f"Ray gave up on the task after {self._options.max_retries} retries: "
                                           f"{type(exc).__name__}: {first}", "see --max-retries")))
        return out

    def close(self, *, interrupted: bool) -> None:
        """Stop what is in flight (interrupted, or --fail-fast). A private instance is shut down
        whole, which takes its workers with it; its tasks are not cancelled first: a forced
        cancel whose task is finishing at that moment makes Ray's core worker fail a check and end
        the driver with exit 1 ("Tried to complete task that was not pending", Ray 2.5x), which
        once replaced fmae's 143 after SIGTERM. On a joined cluster, which stays up, the forced
        cancel is the only way to stop the tasks."""
        if not self._owned:
            for ref in self._running:
                self._ray.cancel(ref, force=True)
        self._running.clear()
        if self._owned:
            self._ray.shutdown()
