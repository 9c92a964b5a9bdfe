"""Connecting to Ray: the job's cluster when one is given (RAY_ADDRESS, as in a KubeRay RayJob), otherwise a
local Ray whose processes listen and talk on loopback only."""

from __future__ import annotations

import os

from slipway_trainer.artifacts import WORKER_RESOURCE

# Ray resolves 127.0.0.1 to the machine's outward address unless this is "0"; read when ray is imported.
LOOPBACK_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def keep_local_ray_on_loopback() -> None:
    """Call before ray is imported; a no-op when joining a cluster (RAY_ADDRESS set)."""
    if not os.environ.get("RAY_ADDRESS"):
        for key, value in LOOPBACK_ONLY.items():
            os.environ.setdefault(key, value)


def one_per_pod() -> dict[str, float]:
    """What a training worker adds to its Ray resources so that each lands on a pod of its own: the pods'
    resource where the cluster's pods have it (a Slipway RayJob; Ray waits for pods still joining), nothing on
    a local Ray."""
    import ray

    return {WORKER_RESOURCE: 1} if ray.cluster_resources().get(WORKER_RESOURCE, 0) > 0 else {}  # type: ignore[no-untyped-call]


def ensure_ray(num_cpus: int) -> None:
    keep_local_ray_on_loopback()
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(include_dashboard=False, configure_logging=False)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, configure_logging=False)
