"""A real two-node Ray cluster on 127.0.0.1 for tests: a head and a worker node, 1 CPU each.

Started with Ray's own multi-node test harness (``ray.cluster_utils.Cluster``): each node
runs its own GCS/raylet/object-store processes, children of this process, and
``cluster.shutdown()`` stops exactly those. Two things keep everything on 127.0.0.1 and
away from any other Ray on the machine: Ray normally swaps a loopback address for the
machine's outward one (switched off here, as Ray does on a laptop), and the harness's
write of the shared "current cluster" file (``/tmp/ray/ray_current_cluster``, read by
``ray.init("auto")``) is skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def local_ray_cluster(num_cpus: int = 1, timeout: float = 180.0) -> Iterator[object]:
    """Start the cluster, connect this process as its driver, yield the ``ray`` module."""
    import pytest

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray = pytest.importorskip("ray")
    from ray._private import ray_constants
    from ray._private import utils as ray_utils
    from ray.cluster_utils import Cluster

    # workers import meteora from this checkout, like the driver
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    temp_dir = tempfile.mkdtemp(prefix="ray")  # short: Ray's socket paths must fit 107 bytes
    patches = [(ray_constants, "ENABLE_RAY_CLUSTER", False), (ray_utils, "write_ray_address", lambda *a, **k: None)]
    saved = [(mod, name, getattr(mod, name)) for mod, name, _ in patches]
    for mod, name, value in patches:
        setattr(mod, name, value)
    cluster = None
    try:
        local = {"num_cpus": num_cpus, "node_ip_address": "127.0.0.1"}
        cluster = Cluster(
            initialize_head=True,
            head_node_args={**local, "include_dashboard": False, "temp_dir": temp_dir},
        )
        cluster.add_node(**local)
        ray.init(address=cluster.address, log_to_driver=False)
        deadline = time.monotonic() + timeout
        while len([n for n in ray.nodes() if n["Alive"]]) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError("the Ray worker node did not come up")
            time.sleep(0.5)
        yield ray
    finally:
        import psutil

        started = psutil.Process().children(recursive=True)
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        # actor processes notice their node is gone within seconds; stop any that did not
        _, alive = psutil.wait_procs([p for p in started if p.is_running()], timeout=30)
        for proc in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        for mod, name, value in saved:
            setattr(mod, name, value)
        shutil.rmtree(temp_dir, ignore_errors=True)
