"""A simulated two-node Ray cluster loses a node in the middle of a sweep: Ray retries the tasks that
ran there, each from the epoch the driver saved last, and the sweep ends equal to one run alone."""

import threading
import time

from tests.helpers import assert_same_sweep, cli

GRID = ["sweep", "--optim", "sgd", "adam", "--lr", "0.1", "--hidden", "4", "8", "--batch-size", "16",
        "--epochs", "25", "--threads", "1", "-q", "--json"]


def test_a_node_removed_mid_sweep_costs_nothing_but_time(fake_dataset, tmp_path, ray_cluster):
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    ref = cli(*GRID, "--run-dir", str(tmp_path / "one"))
    assert ref.exit_code == 0, ref.stderr

    node = ray_cluster.add_node(num_cpus=2)
    ray_cluster.wait_for_nodes()

    @ray.remote(num_cpus=2)
    class Hold:  # takes the head node's CPUs, so that the cells start on the node that will go
        def ping(self) -> int:
            return 1

    head = ray.get_runtime_context().get_node_id()
    hold = Hold.options(scheduling_strategy=NodeAffinitySchedulingStrategy(head, soft=False)).remote()
    ray.get(hold.ping.remote())
    seen: dict = {}

    def remove_the_node_mid_sweep() -> None:
        cells = tmp_path / "two" / "cells"
        deadline = time.time() + 120
        while time.time() < deadline and not list(cells.glob("*/last.pt")):
            time.sleep(0.01)
        seen["finished_before"] = len(list(cells.glob("*/summary.json")))
        ray_cluster.remove_node(node)
        seen["removed"] = True
        ray.kill(hold)  # the head's CPUs are free again: the retried tasks run there

    remover = threading.Thread(target=remove_the_node_mid_sweep)
    remover.start()
    try:
        result = cli(*GRID, "--executor", "ray", "--run-dir", str(tmp_path / "two"))
    finally:
        remover.join(timeout=180)
    assert seen.get("removed") and seen["finished_before"] < 4, seen
    assert len([n for n in ray.nodes() if n["Alive"]]) == 1
    assert result.exit_code == 0, result.stderr
    assert_same_sweep(tmp_path / "one", tmp_path / "two")
