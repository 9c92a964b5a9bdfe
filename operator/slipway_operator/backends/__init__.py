"""Where children run. The controllers decide the children (ConfigMaps, RayJobs, Deployments, Services) as
Kubernetes objects; a backend makes them real and says how they are doing, in the same shapes:

- `kubernetes`: applies them to the cluster (KubeRay runs the RayJobs, Kubernetes the Deployments).
- `local`: runs them on this machine: a RayJob becomes a `python -m slipway_trainer <step>` process (its own
  local Ray), a Deployment an inference-server process on a free loopback port, a Service a loopback router.
  What it observes is written as KubeRay and Kubernetes would write it (RayJob `jobDeploymentStatus`,
  Deployment `readyReplicas`), so one status computation serves both.
"""

from __future__ import annotations

from typing import Any, Protocol


class ApplyRefused(Exception):
    """The cluster refused a child for a reason a retry will not fix (forbidden, invalid, over a quota, a namespace
    that is not there): the resource says so in a condition (reason ``ApplyFailed``) instead of the operator's log
    only. Transient refusals (a conflict, throttling, a server error) are raised as they are, and retried."""


class Backend(Protocol):
    name: str

    def missing_prerequisite(self) -> str | None:
        """What must be installed before RayJobs can run (KubeRay's CRD), or None."""

    def apply(self, children: list[dict[str, Any]], absent: bool = False) -> None:
        """Create or update the children (idempotent: deterministic names, adopted when they exist); raises
        `ApplyRefused` with the cluster's own words when it refuses one for good. `absent`: they were not there
        when last observed (a backend may create them in a cheaper way; one there after all is still updated)."""

    def observe(self, child: dict[str, Any], new: bool = False) -> dict[str, Any] | None:
        """The child as it is now (with its status), or None when it does not exist. `new`: its parent has never
        been reconciled, so a child its watch has not seen is taken as not there (no request to look)."""

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        """Delete a child if it exists."""

    def endpoint(self, service: dict[str, Any]) -> str | None:
        """The base URL clients use to reach a Service."""

    def grpc_endpoint(self, service: dict[str, Any]) -> str | None:
        """`grpc://host:port`: where gRPC clients reach a Service's OIP v2 gRPC port."""

    def scrape(self, deployment: dict[str, Any], path: str) -> tuple[list[str], str | None]:
        """GET `path` from every ready replica of a Deployment: (bodies, why some could not be read)."""

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """The pods matching a label selector, as the API serves them (camelCase); none on the local backend."""

    def warnings(self, namespace: str, names: list[str]) -> list[dict[str, Any]]:
        """The Warning Events about the objects of these names (a RayCluster, a Job that cannot create pods)."""

    def workloads(self, namespace: str) -> list[dict[str, Any]] | None:
        """Kueue's Workloads in the namespace; None when Kueue is not installed (or, locally, not used)."""

    def activate_workload(self, namespace: str, name: str, active: bool) -> None:
        """Set a Kueue Workload's spec.active: Kueue evicts an inactive one and keeps it out of the queue."""

    def log_tail(self, namespace: str, pod: str, container: str, lines: int) -> str:
        """The last lines its previous (crashed) container wrote; "" when they cannot be read."""

    def close(self) -> None:
        """Stop what this process started and must not outlive it."""
