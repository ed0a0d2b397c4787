"""Connecting to a Ray cluster (or starting one on this machine) for one job.

Example:
    >>> with ray_session("local", num_cpus=2) as ray:  # doctest: +SKIP
    ...     ray.cluster_resources()["CPU"]
    2.0
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from meteora.errors import InvalidInputError, require

__all__ = ["ray_session", "import_ray"]

logger = logging.getLogger(__name__)


def import_ray() -> Any:
    """``ray`` with Ray Data, or a clear error naming the extra to install."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray = require("ray", "distributed", "running on a Ray cluster")
    require("ray.data", "distributed", "running on a Ray cluster")
    return ray


@contextlib.contextmanager
def ray_session(address: str | None = None, *, num_cpus: int | None = None) -> Iterator[Any]:
    """Use Ray for the duration of a ``with`` block.

    Args:
        address: ``None`` uses Ray as it is when already initialised in this process,
            else starts one here like ``"local"``; ``"local"`` starts a single-node
            cluster in this process (stopped at the end); ``"auto"`` joins the cluster
            started on this machine with ``ray start``; ``"host:port"`` or
            ``"ray://host:10001"`` joins a remote one (only this process's connection is
            closed at the end: the cluster keeps running).
        num_cpus: CPUs of a cluster started here (``None``: all of them).

    Yields:
        the ``ray`` module.
    """
    ray = import_ray()
    if ray.is_initialized():
        if address not in (None, "local", "auto"):
            logger.warning("Ray is already initialised in this process; ignoring address=%r", address)
        yield ray
        return
    if address is not None and not isinstance(address, str):
        raise InvalidInputError(f"address must be None, 'local', 'auto', 'host:port' or 'ray://host:port', got {address!r}")
    if address in (None, "local"):
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
