"""Three Ray nodes on this machine (``ray.cluster_utils.Cluster``): the driver's node and two
nodes that can hold the learner (a custom resource keeps it off the driver's). The node that holds
it is killed mid-run, raylet and workers; Ray restarts the learner on the other, which finds the
last checkpoint through the storage URI (the only place both processes know), and the run ends
with the weights of an undisturbed run."""

import contextlib
import json
import os
import signal
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


def learners_node(cluster) -> tuple:
    """(the node whose raylet is the parent of the learner's worker process, that process's pids)."""
    import psutil
    from ray._private import ray_constants

    raylets = {n.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid: n for n in cluster.worker_nodes}
    learners = [p for p in psutil.process_iter(["cmdline", "ppid"]) if (p.info["cmdline"] or [""])[0].startswith("ray::FencedLearner")]
    on_nodes = [p for p in learners if p.info["ppid"] in raylets]
    (node,) = {raylets[p.info["ppid"]] for p in on_nodes}  # one learner in this cluster
    return node, [p.pid for p in on_nodes]


def kill_node(cluster, node, pids: list[int]) -> None:
    """Remove the node (its raylet and object store), then kill its learner process: a worker notices
    its raylet's death only a moment later and could still answer a call that is under way."""
    cluster.remove_node(node, allow_graceful=False)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):  # it had already gone with its raylet
            os.kill(pid, signal.SIGKILL)


def kill_the_learners_node_at_step(monkeypatch, cluster, at: int) -> list:
    """At the start of step ``at`` (after the checkpoint of the step before), remove the learner's node:
    its raylet and every worker on it, as a machine failure would. -> the steps at which it happened."""
    real, killed = train.train_step, []

    def step(step, *args, **kwargs):
        if step == at and not killed:
            kill_node(cluster, *learners_node(cluster))
            killed.append(step)
        return real(step, *args, **kwargs)

    monkeypatch.setattr(train, "train_step", step)
    return killed


def test_the_learners_node_dies_and_the_run_completes_through_storage(three_nodes, tmp_path, capsys, monkeypatch):
    cluster = three_nodes
    undisturbed = train.run(run_config(tmp_path, "undisturbed"), "none")
    killed = kill_the_learners_node_at_step(monkeypatch, cluster, at=1)
    train.run(run_config(tmp_path, "killed"), "none")
    assert killed == [1] and len(cluster.worker_nodes) == 1  # the learner's node is gone
    out = capsys.readouterr().out
    assert "the learner died" in out and "resumed from file://" in out
    store = tmp_path / "storage" / "killed"
    assert [json.loads(line)["step"] for line in (store / "steps.jsonl").read_text().splitlines()] == [0, 1, 2]  # none lost or doubled
    assert not (tmp_path / "local" / "killed" / "checkpoints").exists()  # nothing through a local path
    a = torch.load(undisturbed, weights_only=True)["state_dict"]
    b = torch.load(store / "policy.pt", weights_only=True)["state_dict"]
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"max |weights - undisturbed run| after the learner's node died: {diff:.3g}")
    assert diff == 0.0
