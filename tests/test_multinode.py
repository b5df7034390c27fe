"""Three Ray nodes on this machine (``ray.cluster_utils.Cluster``): the driver's node and two
nodes that can hold the learner (a custom resource keeps it off the driver's). The node that holds
it is killed mid-run, raylet and workers; Ray restarts the learner on the other, which finds the
last checkpoint through the storage URI (the only place both processes know), and the run ends
with the weights of an undisturbed run."""

import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from cluster import train
from cluster.config import preset

LEARNER = {"learner_node": 1.0}


@pytest.fixture
def three_nodes():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1, resources=LEARNER)
    cluster.add_node(num_cpus=2, resources=LEARNER)
    import ray

    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def run_config(tmp_path: Path, name: str):
    cfg = preset("debug")
    return replace(cfg, run_name=name, output_root=str(tmp_path / "local"), storage=f"file://{tmp_path}/storage",
                   learner_resources=tuple(LEARNER.items()), tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")  # fmt: skip


def learners_node(cluster):
    """The node whose raylet is the parent of the learner's worker process."""
    import psutil
    from ray._private import ray_constants

    learner = next(p for p in psutil.process_iter(["cmdline"]) if (p.info["cmdline"] or [""])[0].startswith("ray::Learner"))
    raylets = {n.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid: n for n in cluster.worker_nodes}
    return raylets[learner.ppid()]


def kill_after_first_checkpoint(cluster, latest: Path) -> threading.Thread:
    """Remove the learner's node (its raylet and every worker on it) once the first checkpoint is written."""

    def kill():
        deadline = time.monotonic() + 600
        while not latest.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        cluster.remove_node(learners_node(cluster), allow_graceful=False)

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


def test_the_learners_node_dies_and_the_run_completes_through_storage(three_nodes, tmp_path, capsys):
    cluster = three_nodes
    undisturbed = train.run(run_config(tmp_path, "undisturbed"), "none")
    killer = kill_after_first_checkpoint(cluster, tmp_path / "storage" / "killed" / "checkpoints" / "latest")
    train.run(run_config(tmp_path, "killed"), "none")
    killer.join(timeout=60)
    assert len(cluster.worker_nodes) == 1  # the learner's node is gone
    out = capsys.readouterr().out
    assert "the learner died during" in out and "resumed from file://" in out
    store = tmp_path / "storage" / "killed"
    assert [json.loads(line)["step"] for line in (store / "steps.jsonl").read_text().splitlines()] == [0, 1, 2]  # none lost or doubled
    assert not (tmp_path / "local" / "killed" / "checkpoints").exists()  # nothing through a local path
    a = torch.load(undisturbed, weights_only=True)["state_dict"]
    b = torch.load(store / "policy.pt", weights_only=True)["state_dict"]
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"max |weights - undisturbed run| after the learner's node died: {diff:.3g}")
    assert diff == 0.0
