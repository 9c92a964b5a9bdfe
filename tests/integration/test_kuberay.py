"""The real KubeRay operator (v1.5.0, built from its pinned module) on the test control plane, given a RayJob exactly
as Slipway's builder makes it for a TrainingRun with two one-GPU workers.

What is real here: KubeRay accepts the RayJob, creates a RayCluster whose head pod lands on the CPU node and whose
two GPU workers land on the GPU node (KWOK marks all three Running and Ready), then its submitter Job (K8sJobMode)
with our image and entrypoint. What KWOK cannot give is a Ray dashboard: the submitter's pod is completed at once by
KWOK, the dashboard's address does not resolve, so the Ray job never reports a status; 30 s after the submitter
finished KubeRay counts the attempt as FAILED and retries it on a fresh RayCluster (the example allows two retries).
The test asserts exactly that much, then deletes the TrainingRun and checks that everything goes with it.

A second test runs the same RayJob, its GPU workers placed by an operator GPU pool (a nodeSelector on the GPU
product, a toleration of the GPU node's taint), in KubeRay's namespace while it enforces the restricted Pod Security
Standard: every pod KubeRay makes of it (head, workers with the init container KubeRay injects, the submitter) is
admitted, lands where the pool says and runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import testbed
import yaml

from slipway_operator.builders import CONFIG_ANNOTATION, GPU_RESOURCE, GPU_TOLERATION, GpuPool, job_config
from slipway_operator.controllers import trainingrun
from slipway_operator.controllers.common import Settings

pytestmark = pytest.mark.cluster
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
IMAGE = "slipway/trainer:test"
# KubeRay v1.5.0's DefaultSubmitterFinishedTimeout: how long it waits for a Ray status once the submitter is done.
SUBMITTER_FINISHED_TIMEOUT = 30


def get(plane: testbed.ControlPlane, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
    out = plane.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(out) if out else None


def items(plane: testbed.ControlPlane, kind: str, namespace: str, selector: str | None = None) -> list[dict[str, Any]]:
    args = ["get", kind, "-n", namespace, "-o", "json", *(["-l", selector] if selector else [])]
    found: list[dict[str, Any]] = json.loads(plane.kubectl(*args))["items"]
    return found


def server_side_apply(plane: testbed.ControlPlane, obj: dict[str, Any]) -> None:
    """As the operator's kubernetes backend applies its children."""
    plane.kubectl(
        "apply", "--server-side", "--force-conflicts", "--field-manager=slipway", "-f", "-", input=json.dumps(obj)
    )


def running_and_ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))
    return status.get("phase") == "Running" and ready


def apply_training_run(plane: testbed.ControlPlane, namespace: str, settings: Settings) -> dict[str, Any]:
    """The example TrainingRun (a real owner, with a dataset URI so that it waits for no DatasetPrep) and its
    RayJob as the operator builds it with `settings`, applied as the operator applies it (its one child)."""
    manifest = yaml.safe_load((EXAMPLES / "fashion-mnist" / "02-trainingrun.yaml").read_text())
    manifest["spec"]["dataset"] = {"uri": "s3://slipway-test/datasets/fashion"}
    assert manifest["spec"]["resources"]["workers"] == 2 and manifest["spec"]["resources"]["gpusPerWorker"] == 1
    plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))
    run = get(plane, "trainingrun", "fashion-cnn", namespace)
    assert run is not None
    desired = trainingrun.desired_children(run, None, settings)
    assert desired.waiting_for is None
    (ray_job,) = desired.children
    assert ray_job["kind"] == "RayJob"
    server_side_apply(plane, ray_job)
    return ray_job


def ray_pods(
    plane: testbed.ControlPlane, namespace: str, cluster_name: str, wait: Callable[..., None] = testbed.wait_until
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The RayCluster's head and two GPU workers, once all three are Running and Ready: (head, workers)."""

    def pods() -> list[dict[str, Any]]:
        return items(plane, "pods", namespace, f"ray.io/cluster={cluster_name}")

    wait("3 Ray pods Running and Ready", lambda: len(pods()) == 3 and all(running_and_ready(p) for p in pods()), 60)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for pod in pods():
        by_type.setdefault(pod["metadata"]["labels"]["ray.io/node-type"], []).append(pod)
    (head,) = by_type["head"]
    workers = by_type["worker"]
    assert len(workers) == 2
    return head, workers


def delete_training_run(plane: testbed.ControlPlane, namespace: str, ray_job_name: str) -> None:
    """Deleting the TrainingRun takes everything with it: the garbage collector deletes the RayJob (KubeRay
    removes its finalizer), then the RayCluster, the submitter Job and the pods."""
    plane.kubectl("delete", "trainingrun", "fashion-cnn", "-n", namespace, "--ignore-not-found")
    testbed.wait_until(
        "the RayJob, its RayClusters and their pods to be gone",
        lambda: (
            get(plane, "rayjob", ray_job_name, namespace) is None
            and items(plane, "rayclusters", namespace, "slipway.dev/trainingrun=fashion-cnn") == []
            and items(plane, "jobs", namespace) == []
            and items(plane, "pods", namespace) == []
        ),
        90,
    )


def test_kuberay_runs_a_training_rayjob_on_a_ray_cluster_with_gpu_workers(
    control_plane: testbed.ControlPlane, slipway_crds: testbed.ControlPlane, kuberay_operator: testbed.KubeRayOperator
) -> None:
    plane, namespace = control_plane, kuberay_operator.watch_namespaces[0]

    ray_job = apply_training_run(plane, namespace, Settings(image=IMAGE, store_uri="s3://slipway-test"))
    name = ray_job["metadata"]["name"]

    # Every jobDeploymentStatus seen while polling, in order (KubeRay passes through some in milliseconds).
    seen: list[str] = []

    def job() -> dict[str, Any]:
        obj = get(plane, "rayjob", name, namespace) or {}
        status = obj.get("status") or {}
        deployment = str(status.get("jobDeploymentStatus", ""))
        if deployment and (not seen or seen[-1] != deployment):
            seen.append(deployment)
        return obj

    # KubeRay takes the RayJob: its finalizer, then a RayCluster owned by the RayJob.
    testbed.wait_until(
        "KubeRay to create the RayCluster", lambda: (job().get("status") or {}).get("rayClusterName"), 60
    )
    rayjob = job()
    assert "ray.io/rayjob-finalizer" in rayjob["metadata"]["finalizers"]
    assert rayjob["spec"]["submissionMode"] == "K8sJobMode"  # the CRD's default: the builder sets none
    cluster_name = rayjob["status"]["rayClusterName"]
    cluster = get(plane, "raycluster", cluster_name, namespace)
    assert cluster is not None
    assert cluster["metadata"]["ownerReferences"][0]["uid"] == rayjob["metadata"]["uid"]

    # Head and two GPU workers, Running and Ready on the right nodes.
    head, workers = ray_pods(plane, namespace, cluster_name)
    assert head["spec"]["nodeName"] == testbed.CPU_NODE
    assert GPU_RESOURCE not in head["spec"]["containers"][0]["resources"].get("limits", {})
    for worker in workers:
        assert worker["spec"]["nodeName"] == testbed.GPU_NODE
        assert worker["metadata"]["labels"]["ray.io/group"] == "workers"
        assert worker["spec"]["containers"][0]["resources"]["limits"][GPU_RESOURCE] == "1"
        assert GPU_TOLERATION in worker["spec"]["tolerations"]
    for pod in (head, *workers):
        assert pod["metadata"]["labels"]["slipway.dev/trainingrun"] == "fashion-cnn"  # our template labels survive
        # ...and the config annotation, which the pod's downward-API volume shows the workload as its config file
        assert pod["metadata"]["annotations"][CONFIG_ANNOTATION] == job_config(ray_job)
        assert pod["spec"]["containers"][0]["image"] == IMAGE
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        mounts = {m["mountPath"]: m["name"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
        assert mounts["/etc/slipway"] == "slipway-config"
    # KubeRay turns our rayStartParams into the `ray start` command: a head with no CPUs, one GPU per worker.
    assert "--num-cpus=0" in head["spec"]["containers"][0]["args"][0]
    assert all("--num-gpus=1" in w["spec"]["containers"][0]["args"][0] for w in workers)
    # and one `slipway_worker` per worker pod, which each training worker asks for: one worker per pod.
    assert all("""--resources='{"slipway_worker": 1}'""" in w["spec"]["containers"][0]["args"][0] for w in workers)

    testbed.wait_until(
        "the RayCluster to be ready",
        lambda: ((get(plane, "raycluster", cluster_name, namespace) or {}).get("status") or {}).get("state") == "ready",
        60,
    )
    cluster_status = (get(plane, "raycluster", cluster_name, namespace) or {})["status"]
    assert cluster_status["desiredGPU"] == "2" and cluster_status["availableWorkerReplicas"] == 2

    # The cluster is ready, so KubeRay submits: a Kubernetes Job running `ray job submit` with our image and
    # entrypoint. KWOK completes its pod at once (it runs nothing).
    testbed.wait_until(
        "the RayJob to run", lambda: (job().get("status") or {}).get("jobDeploymentStatus") == "Running", 60
    )
    submitter = get(plane, "job", name, namespace)
    assert submitter is not None
    assert submitter["metadata"]["ownerReferences"][0]["uid"] == rayjob["metadata"]["uid"]
    container = submitter["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == IMAGE
    assert f"-- {ray_job['spec']['entrypoint']}" in container["args"][0]
    testbed.wait_until(
        "the submitter Job to complete",
        lambda: ((get(plane, "job", name, namespace) or {}).get("status") or {}).get("succeeded") == 1,
        60,
    )
    assert job()["status"].get("jobStatus", "") == ""  # no Ray job status: the dashboard is unreachable

    # With no Ray status 30 s after the submitter finished, KubeRay counts a failed attempt (reason
    # JobDeploymentStatusTransitionGracePeriodExceeded), deletes that RayCluster and starts again on a new one.
    testbed.wait_until(
        "KubeRay to count the attempt as failed",
        lambda: (job().get("status") or {}).get("failed", 0) >= 1,
        SUBMITTER_FINISHED_TIMEOUT + 60,
    )
    testbed.wait_until(
        "the retry on a new RayCluster",
        lambda: (job().get("status") or {}).get("rayClusterName") not in (None, cluster_name),
        60,
    )
    testbed.wait_until(
        "the first RayCluster to be deleted", lambda: get(plane, "raycluster", cluster_name, namespace) is None, 60
    )
    # Statuses pass in milliseconds (Initializing lasts until the pods run, Retrying until the cluster is
    # deleted), so polling sees some of them; KubeRay's events on the RayJob tell the whole story.
    assert "Running" in seen and set(seen) <= {"Initializing", "Running", "Retrying"}, seen
    assert job()["spec"]["backoffLimit"] == 2  # the example's failurePolicy.backoffLimit: retries remain
    events = items(plane, "events", namespace)
    reasons = {e["reason"] for e in events if e["involvedObject"]["kind"] == "RayJob"}
    assert {"CreatedRayCluster", "CreatedRayJobSubmitter", "DeletedRayCluster", "DeletedRayJobSubmitter"} <= reasons
    # KubeRay refused nothing of ours. (Under load it also posts transient Warnings about its own races —
    # conflicts, a RayCluster or submitter Job already there or already gone — and retries; those are not ours.)
    refusals = [
        (e["reason"], e["message"])
        for e in events
        if e["type"] == "Warning"
        and e["involvedObject"]["kind"] in ("RayJob", "RayCluster")
        and (
            "Invalid" in e["reason"]
            or "Validation" in e["reason"]
            or "is invalid" in e["message"]
            or "forbidden" in e["message"]
        )
    ]
    assert not refusals, refusals

    delete_training_run(plane, namespace, name)
    print(f"jobDeploymentStatus seen: {seen}")


PSS_LABELS = ("pod-security.kubernetes.io/enforce", "pod-security.kubernetes.io/enforce-version")
GPU_PRODUCT = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}  # a label of testbed.GPU_NODE
GPU_TAINT_TOLERATION = {"key": GPU_RESOURCE, "operator": "Equal", "value": "present", "effect": "NoSchedule"}


def pod_security_refusals(plane: testbed.ControlPlane, namespace: str) -> list[str]:
    """Every event or status condition in the namespace that says a pod was refused by PodSecurity admission:
    KubeRay's events on the RayCluster for its head and worker pods, the Job controller's FailedCreate on the
    submitter Job, and the conditions of the RayJob, RayCluster and Job."""
    found = [
        f"event {e['involvedObject']['kind']}/{e['involvedObject']['name']} {e['reason']}: {e.get('message', '')}"
        for e in items(plane, "events", namespace)
        if "PodSecurity" in e.get("message", "")
        or (e["reason"] == "FailedCreate" and "forbidden" in e.get("message", ""))
    ]
    for kind in ("rayjobs", "rayclusters", "jobs"):
        for obj in items(plane, kind, namespace):
            status = obj.get("status") or {}
            for condition in status.get("conditions") or []:
                if "PodSecurity" in condition.get("message", "") or "forbidden" in condition.get("message", ""):
                    found.append(f"{kind} {obj['metadata']['name']} condition {condition}")
            if "PodSecurity" in str(status.get("message", "")):
                found.append(f"{kind} {obj['metadata']['name']} status message {status['message']}")
    return found


def test_kuberay_pods_of_a_training_rayjob_on_a_gpu_pool_are_admitted_under_the_restricted_pod_security_standard(
    control_plane: testbed.ControlPlane, slipway_crds: testbed.ControlPlane, kuberay_operator: testbed.KubeRayOperator
) -> None:
    # KubeRay watches one namespace of its own, shared with the test above: it enforces the restricted standard
    # for this test only, and whatever this test made is gone (the labels too) when it ends, passed or failed.
    plane, namespace = control_plane, kuberay_operator.watch_namespaces[0]
    pool = GpuPool(node_selector=GPU_PRODUCT, tolerations=(GPU_TAINT_TOLERATION,))
    settings = Settings(image=IMAGE, store_uri="s3://slipway-test", gpu=pool)
    ray_job_name = "fashion-cnn-train"

    def wait(what: str, check: Callable[[], object], timeout: float) -> None:
        """testbed.wait_until, but a refusal by PodSecurity ends the wait at once and fails with its message."""
        try:
            testbed.wait_until(what, lambda: pod_security_refusals(plane, namespace) or check(), timeout)
        finally:
            refused = pod_security_refusals(plane, namespace)
            assert not refused, f"waiting for {what}, PodSecurity refused:\n" + "\n".join(refused)

    plane.kubectl(
        "label", "namespace", namespace, "--overwrite", f"{PSS_LABELS[0]}=restricted", f"{PSS_LABELS[1]}=latest"
    )
    try:
        # The standard is enforced here: a pod with no securityContext is refused (a dry run: nothing is made).
        with pytest.raises(testbed.TestbedError, match="violates PodSecurity"):
            plane.kubectl("run", "root-pod", "--image=busybox:1.36", "-n", namespace, "--dry-run=server")

        ray_job = apply_training_run(plane, namespace, settings)
        ray_job_name = ray_job["metadata"]["name"]
        # The pool places the GPU workers, not the head.
        group = ray_job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]
        assert group["nodeSelector"] == GPU_PRODUCT and group["tolerations"] == [GPU_TAINT_TOLERATION]
        head_spec = ray_job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
        assert "nodeSelector" not in head_spec and "tolerations" not in head_spec

        def status() -> dict[str, Any]:
            return (get(plane, "rayjob", ray_job_name, namespace) or {}).get("status") or {}

        wait("KubeRay to create the RayCluster", lambda: status().get("rayClusterName"), 60)
        cluster_name = status()["rayClusterName"]
        assert get(plane, "raycluster", cluster_name, namespace) is not None

        # Head and both GPU workers created (admitted), Running and Ready where the pool says.
        head, workers = ray_pods(plane, namespace, cluster_name, wait)
        assert head["spec"]["nodeName"] == testbed.CPU_NODE
        assert "nodeSelector" not in head["spec"]
        for worker in workers:
            assert worker["spec"]["nodeName"] == testbed.GPU_NODE
            assert worker["spec"]["nodeSelector"] == GPU_PRODUCT
            assert GPU_TAINT_TOLERATION in worker["spec"]["tolerations"]
            assert worker["spec"]["containers"][0]["resources"]["limits"][GPU_RESOURCE] == "1"
            # KubeRay injects an init container that waits for the head's GCS, with a copy of our securityContext.
            assert [c["name"] for c in worker["spec"]["initContainers"]] == ["wait-gcs-ready"]
        for pod in (head, *workers):
            assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
            for container in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]:
                security = container.get("securityContext") or {}
                assert security.get("allowPrivilegeEscalation") is False, (pod["metadata"]["name"], container)
                assert security.get("capabilities", {}).get("drop") == ["ALL"], (pod["metadata"]["name"], container)

        # The cluster is ready, so KubeRay submits: its submitter Job's pod is admitted too (KWOK completes it).
        wait("the RayJob to run", lambda: status().get("jobDeploymentStatus") == "Running", 60)

        def submitter_pods() -> list[dict[str, Any]]:
            return items(plane, "pods", namespace, f"batch.kubernetes.io/job-name={ray_job_name}")

        wait("the submitter Job's pod", submitter_pods, 60)
        submitter = submitter_pods()[0]
        assert submitter["spec"]["securityContext"]["runAsNonRoot"] is True
        assert submitter["spec"]["containers"][0]["image"] == IMAGE
        wait(
            "the submitter Job to complete",
            lambda: ((get(plane, "job", ray_job_name, namespace) or {}).get("status") or {}).get("succeeded") == 1,
            60,
        )
        job_conditions = (get(plane, "job", ray_job_name, namespace) or {})["status"].get("conditions", [])
        assert not [c for c in job_conditions if c["type"] == "Failed" and c["status"] == "True"], job_conditions
        refused = pod_security_refusals(plane, namespace)
        assert not refused, "PodSecurity refused:\n" + "\n".join(refused)
    finally:
        try:
            delete_training_run(plane, namespace, ray_job_name)
        finally:
            plane.kubectl("label", "namespace", namespace, *(f"{label}-" for label in PSS_LABELS), check=False)
