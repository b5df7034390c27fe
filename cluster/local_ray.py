"""How the project starts a Ray of its own (``python -m serving``, a direct ``python -m cluster.train``).

Such a Ray is one machine's. Ray 2.60 binds its GCS, raylet, worker and agent servers to every
interface, and ``ray.init`` rewrites a node address of 127.0.0.1 to the machine's network address,
so its Prometheus exporters (the agent's and the autoscaler's ``/metrics``) answer anyone on
the network; token authentication, which a new local Ray turns on by itself, protects the gRPC
services but not those. Ray's single-machine mode (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, what
it uses on laptops) keeps the node on the loopback address instead: every server of the instance,
metrics included, then listens on 127.0.0.1 only. A multi-node cluster is started with
``ray start`` or KubeRay instead (``cluster/k8s/``), never here.
"""

from __future__ import annotations

import os

SECURE_DEFAULTS = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def secure_ray_env() -> None:
    """Set the defaults above in this process's environment (inherited by the Ray it starts),
    leaving any value the user set."""
    for key, value in SECURE_DEFAULTS.items():
        os.environ.setdefault(key, value)
