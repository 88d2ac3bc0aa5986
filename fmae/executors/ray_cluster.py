"""Ray core tasks (--executor ray): a private local instance, or a cluster joined with --address.

Ray core, not Ray Tune: Tune would impose its own trial directories and checkpoint layout, while
fmae's cells already resume exactly; tasks are all a sweep needs. The dataset goes into Ray's
object store once, as numpy arrays that tasks read in place: worker nodes need fmae and torch,
neither the dataset nor a shared filesystem. A task whose worker or node died is retried by Ray
(--max-retries) and starts again from the state the driver saved last; nothing of Ray is imported
before this module is.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

from fmae.config import ExecutorConfig
from fmae.errors import FmaeError
from fmae.executors import cores, worker

INSTALL_HINT = "install it with: pip install 'fmae-cli[ray]'"


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise FmaeError("--executor ray needs Ray, which is not installed", INSTALL_HINT) from None
    return ray


class RayBackend:
    inline = False

    def __init__(self, options: ExecutorConfig, dataset: Any) -> None:
        ray = self._ray = import_ray()
        self._options = options
        self._running: set[Any] = set()
        self._quiet_raylet()  # before anything of Ray runs here
        self._owned = not ray.is_initialized()  # a program (or a test session) that started Ray keeps it
        if self._owned:
            self._init(options.address)
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
                ray.init(address=address, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise FmaeError(f"cannot start or reach Ray at {address or 'a local instance'}: {first}",
                            "check --address (auto, or ray://host:port) and that `ray status` works there") from None
        finally:
            signal.signal(signal.SIGTERM, sigterm)  # ray.init takes SIGTERM over; fmae's handler saves and exits 143

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

    def submit(self, task: worker.Task) -> Any:
        gpus = self._options.gpus_per_cell * len(task.names)
        ref = self._task.options(num_gpus=gpus).remote(task, self._data)
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
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                out.append((ref, FmaeError(f"Ray gave up on the task after {self._options.max_retries} retries: "
                                           f"{type(exc).__name__}: {first}", "see --max-retries")))
        return out

    def close(self, *, interrupted: bool) -> None:
        for ref in self._running:  # interrupted, or --fail-fast: stop what is in flight
            self._ray.cancel(ref, force=True)
        self._running.clear()
        if self._owned:
            self._ray.shutdown()  # the private instance and its workers go; a joined cluster stays up
