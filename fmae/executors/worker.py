"""What runs where a cell trains: one task = epochs of a cell (or of a lockstep group or a stack of cells).

A task holds plain data only (configs as dicts, resume states packed as bytes), so it crosses
process and machine boundaries unchanged; it returns each epoch's resume state, packed, and the
cells' status. The driver saves them: a worker writes nothing. A task runs in the driver itself
(--jobs 1: its resume states as they are, every epoch handed to the driver as it ends, the models
kept in memory from the first epoch to the last), in a pool worker process (--jobs N) or as a
Ray task (--executor ray).
"""

from __future__ import annotations

import io
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from fmae import faults

# A pool worker's own process state, set once by `init_pool_worker` in that process; the driver
# never touches it (ProcessPoolExecutor's initializer offers no other place to keep the dataset).
_POOL: dict[str, Any] = {}

@dataclass(frozen=True)
class Task:
    names: tuple[str, ...]
    configs: tuple[dict[str, Any], ...]
    resume: tuple[bytes | dict[str, Any] | None, ...]  # packed, or as they are for the inline backend
    device: str
    threads: int | None
    epochs: int | None = 1  # None: until every cell of the task has ended
    fault: tuple[str, str] | None = None  # test-only: (cell:epoch, marker path), see fmae.faults.death
    engine: str = "cells"  # the engine, resolved (fmae.engine.resolve_engine): stacked or cells
    numerics: str = "default"  # fmae.numerics: "portable" is checked in the process that trains


def pack(obj: Any) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def unpack(blob: bytes) -> Any:
    import torch

    return torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)


def run_task(task: Task, dataset: Any, on_state: Callable[[int, dict[str, Any]], None] | None = None,
             ) -> list[dict[str, Any]]:
    """Train the task's cells for up to `task.epochs` epochs; per cell {"states": [bytes], "status": str}.
    With `on_state(index, state)`, each finished epoch's resume state (a copy) goes there instead."""
    from fmae import numerics

    numerics.enter(task.numerics)  # a Ray worker may not have loaded torch yet
    import torch

    from fmae import engine
    from fmae.config import TrainConfig
    from fmae.device import set_threads

    set_threads(task.threads)
    numerics.verify(task.numerics)
    configs = [TrainConfig.from_dict(c) for c in task.configs]
    states: list[list[bytes]] = [[] for _ in configs]

    def on_epoch(index: int, cell: Any, metrics: Any, data_rng: Any) -> None:
        if on_state is not None:  # an owned snapshot, on the training device until it is saved
            on_state(index, cell.snapshot(data_rng))
        else:  # packed: a copy too
            states[index].append(pack(dict(cell.snapshot(data_rng))))
        faults.maybe_die(task.fault, task.names[index], metrics.epoch)

    results = engine.train_many(configs, dataset, torch.device(task.device),
                                resume=[unpack(r) if isinstance(r, bytes) else r for r in task.resume],
                                on_epoch=on_epoch, max_epochs=task.epochs, engine=task.engine)
    return [{"states": s, "status": r.status} for s, r in zip(states, results)]


# ---------------------------------------------------------------- a pool worker (--jobs N)


def dataset_arrays(dataset: Any) -> dict[str, Any]:
    """The dataset as plain tensors for a pool worker. Sent as process arguments, torch moves them
    to shared memory and passes file descriptors: the workers map one copy, the pipe to a starting
    worker carries a few bytes (a large payload there blocks the driver if the worker dies first),
    and nothing outlives the processes that use it."""
    return {"train_images": dataset.train_images.cpu(), "train_labels": dataset.train_labels.cpu(),
            "test_images": dataset.test_images.cpu(), "test_labels": dataset.test_labels.cpu(),
            "source": dataset.source, "sha256": dict(dataset.sha256)}


def from_arrays(d: dict[str, Any], device: str = "cpu") -> Any:
    from fmae.data import FashionMNIST

    return FashionMNIST(d["train_images"], d["train_labels"], d["test_images"], d["test_labels"], d["source"],
                        d["sha256"]).to(device)


def worker_device(device: str, index: int, gpus: int) -> str:
    """Pool worker `index`'s device: with several GPUs, worker i trains on cuda:(i mod gpus)."""
    return f"cuda:{index % gpus}" if device == "cuda" and gpus > 1 else device


def init_pool_worker(dataset: dict[str, Any], device: str, lifeline: Any, pids: str | None, counter: Any) -> None:
    """Runs first in each pool worker. The worker dies with the driver: a thread waits on the
    lifeline, a pipe whose write end only the driver holds, and leaves when it reads EOF (the
    driver closed it to stop the workers, or died: a SIGKILLed driver cannot say goodbye, and a
    worker forked by the fork server is not the driver's child, so its parent pid tells nothing).
    `counter`: shared by the pool's workers, each takes the next index (its GPU, see worker_device).
    `pids`: the test-only fmae.faults.worker_pids folder, read in the driver (the fork server's
    environment is that of its start); each worker leaves a file named by its pid holding its index."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C reaches the whole group: the driver decides

    def watch() -> None:
        try:
            lifeline.recv_bytes()  # the driver never writes: this returns only by EOF
        except (EOFError, OSError):
            pass
        os._exit(0)

    threading.Thread(target=watch, name="fmae-watch-driver", daemon=True).start()
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    if pids:
        with open(os.path.join(pids, str(os.getpid())), "w") as fh:
            fh.write(f"{index}\n")
    gpus = 0
    if device == "cuda":
        import torch

        gpus = torch.cuda.device_count()
    _POOL["device"] = worker_device(device, index, gpus)
    _POOL["dataset"] = from_arrays(dataset, _POOL["device"])


def run_in_pool(task: Task) -> list[dict[str, Any]]:
    return run_task(replace(task, device=_POOL["device"]), _POOL["dataset"])


# ---------------------------------------------------------------- a Ray task (--executor ray)


def run_in_ray(task: Task, arrays: dict[str, Any]) -> list[dict[str, Any]]:
    """`arrays`: the dataset as numpy arrays from Ray's object store, read in place (no copy per task)."""
    import warnings

    import torch

    from fmae.data import FashionMNIST

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only arrays: the engine never writes to the data
        t = {k: torch.from_numpy(arrays[k]) for k in ("train_images", "train_labels", "test_images", "test_labels")}
    dataset = FashionMNIST(t["train_images"], t["train_labels"], t["test_images"], t["test_labels"],
                           arrays["source"], arrays["sha256"]).to(task.device)
    return run_task(task, dataset)
