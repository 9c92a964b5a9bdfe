"""Golden-object tests of the pure builders: resource in, the exact Kubernetes object out.

Regenerate the golden files after an intended change with `UPDATE_GOLDEN=1 pytest tests/unit/test_builders.py`
and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from slipway_operator import builders
from slipway_operator.api.common import Toleration
from slipway_operator.api.datasetprep import DatasetPrepSpec
from slipway_operator.api.modeldeployment import Autoscaling
from slipway_operator.api.trainingrun import TrainingRunSpec
from slipway_operator.api.validation import validate_manifest
from slipway_operator.controllers import tuningsweep
from slipway_operator.controllers.common import Settings, run_job
from slipway_operator.workloads import prep_config, serve_config, train_config

GOLDEN = Path(__file__).parent / "golden"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
IMAGE = "ghcr.io/example/slipway-trainer:0.1.0"


def owner_of(kind: str, name: str) -> builders.Owner:
    return builders.Owner("slipway.dev/v1alpha1", kind, name, "ml", f"uid-{name}")


def example(path: str) -> Any:
    return validate_manifest(yaml.safe_load((EXAMPLES / path).read_text()))


def training_objects() -> list[dict[str, Any]]:
    spec = example("fashion-mnist/02-trainingrun.yaml")
    assert isinstance(spec, TrainingRunSpec)
    owner = owner_of("TrainingRun", "fashion-cnn")
    config = train_config("fashion-cnn", spec, "s3://slipway/datasets/ml/fashion", "s3://slipway/runs/ml/fashion-cnn")
    job = builders.ray_job(
        owner,
        builders.Workload(
            step="train",
            image=IMAGE,
            resources=spec.resources,
            config=builders.config_text(config),
            storage_secret="s3-creds",
            ttl_seconds_after_finished=spec.ttl_seconds_after_finished,
            backoff_limit=spec.failure_policy.backoff_limit,
            active_deadline_seconds=spec.failure_policy.active_deadline_seconds,
            suspend=spec.suspend,
        ),
    )
    return [job]


def prep_objects() -> list[dict[str, Any]]:
    spec = DatasetPrepSpec.model_validate(
        {
            "source": {"uri": "s3://raw/people/", "format": "csv", "secretRef": "s3-creds"},
            "label": "bought",
            "privacy": {"hashColumns": ["email"], "saltSecretRef": {"name": "salts", "key": "people"}},
            "resources": {
                "workers": 3,
                "cpusPerWorker": 2,
                "memory": "8Gi",
                "queue": "team-a",
                "nodeSelector": {"pool": "cpu"},
                "priorityClassName": "batch",
            },
        }
    )
    owner = owner_of("DatasetPrep", "people")
    config = prep_config("people", spec, "s3://slipway/datasets/ml/people")
    job = builders.ray_job(
        owner,
        builders.Workload(
            step="prep",
            image=IMAGE,
            resources=spec.resources,
            config=builders.config_text(config),
            storage_secret="slipway-store",
            source_secret=spec.source.secret_ref,
            salt=spec.privacy.salt_secret_ref,
        ),
    )
    return [job]


def deployment_objects() -> list[dict[str, Any]]:
    spec = example("fashion-mnist/04-modeldeployment.yaml")
    owner = owner_of("ModelDeployment", "fashion")
    config = serve_config("fashion", spec, "s3://slipway/sweeps/ml/fashion-sweep/model")
    config_map = builders.config_map(owner, "0123abcd", config)
    return [
        config_map,
        builders.server_deployment(
            owner,
            "stable",
            "0123abcd",
            IMAGE,
            config_map["metadata"]["name"],
            spec.resources,
            spec.replicas.min,
            storage_secret="s3-creds",
        ),
        builders.server_service(owner),
        builders.autoscaler(
            owner, "stable", spec.replicas.min, spec.replicas.max or 0, spec.autoscaling or Autoscaling()
        ),
    ]


def sweep_objects() -> list[dict[str, Any]]:
    obj = yaml.safe_load((EXAMPLES / "fashion-mnist" / "03-tuningsweep.yaml").read_text())
    obj["metadata"] |= {"namespace": "ml", "uid": "uid-fashion-sweep"}
    dataset = {"status": {"phase": "Succeeded", "outputUri": "s3://slipway/datasets/ml/fashion"}}
    settings = Settings(image=IMAGE, store_uri="s3://slipway", storage_secret="s3-creds")
    return tuningsweep.desired_children(obj, dataset, settings).children


CASES = {
    "trainingrun-fashion-cnn": training_objects,
    "tuningsweep-fashion-sweep": sweep_objects,
    "datasetprep-people": prep_objects,
    "modeldeployment-fashion": deployment_objects,
}


class Readable(yaml.SafeDumper):
    """Multi-line strings (a workload's config.json) as literal blocks, so golden diffs read well."""


Readable.add_representer(
    str,
    lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None),
)


@pytest.mark.parametrize("name", sorted(CASES))
def test_builders_match_their_golden_objects(name: str) -> None:
    built = yaml.dump_all(CASES[name](), Dumper=Readable, sort_keys=True)
    path = GOLDEN / f"{name}.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(built)
    assert path.exists(), f"{path} is missing: run with UPDATE_GOLDEN=1 and review it"
    assert built == path.read_text(), f"{name} differs from {path}; if intended, UPDATE_GOLDEN=1 and review the diff"


def test_gpu_workers_get_the_gpu_limit_and_toleration_and_the_head_gets_none() -> None:
    (job,) = training_objects()
    cluster = job["spec"]["rayClusterSpec"]
    head = cluster["headGroupSpec"]["template"]["spec"]
    workers = cluster["workerGroupSpecs"][0]
    assert workers["replicas"] == 2
    limits = workers["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}
    assert builders.GPU_TOLERATION in workers["template"]["spec"]["tolerations"]
    assert "nvidia.com/gpu" not in head["containers"][0]["resources"]["limits"]
    assert "tolerations" not in head
    assert job["spec"]["entrypoint"] == "python -m slipway_trainer train --config /etc/slipway/config.json"
    assert job["spec"]["ttlSecondsAfterFinished"] == 3600 and job["spec"]["activeDeadlineSeconds"] == 86400


def test_fractional_cpus_become_millicores_and_ray_gets_whole_cpus_that_the_workers_share() -> None:
    spec = example("fashion-mnist/02-trainingrun.yaml").model_copy()
    spec.resources = spec.resources.model_copy(update={"cpus_per_worker": 0.5, "gpus_per_worker": 0})
    workload = builders.Workload(step="train", image=IMAGE, resources=spec.resources, config="{}")
    job = builders.ray_job(owner_of("TrainingRun", "half"), workload)
    workers = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    assert workers["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] == "500m"
    assert workers["rayStartParams"] == {"num-cpus": "1", "resources": "'{\"slipway_worker\": 1}'"}
    config = train_config("half", spec, "s3://b/d", "s3://b/r")
    assert config.cpus_per_worker == 0.5 and config.model_dump(by_alias=True)["cpusPerWorker"] == 0.5
    assert [builders.cpu_quantity(c) for c in (1, 2.0, 0.25, 1.5)] == ["1", "2", "250m", "1500m"]
    whole = train_config("whole", example("fashion-mnist/02-trainingrun.yaml"), "s3://b/d", "s3://b/r")
    assert whole.model_dump(by_alias=True)["cpusPerWorker"] == 4  # whole cores stay integers in the config


def test_children_are_owned_labelled_and_deterministically_named() -> None:
    for obj in prep_objects():
        meta = obj["metadata"]
        assert meta["name"] == "people-prep"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "slipway"
        assert meta["labels"]["slipway.dev/datasetprep"] == "people"
        assert meta["ownerReferences"][0]["uid"] == "uid-people" and meta["ownerReferences"][0]["controller"]
    assert prep_objects()[0]["metadata"]["labels"][builders.KUEUE_QUEUE_LABEL] == "team-a"


def test_the_workload_config_rides_on_the_ray_pods_and_their_volume_shows_it_as_the_config_file() -> None:
    (job,) = training_objects()
    cluster = job["spec"]["rayClusterSpec"]
    templates = [cluster["headGroupSpec"]["template"], cluster["workerGroupSpecs"][0]["template"]]
    config = builders.job_config(job)
    assert config is not None and json.loads(config)["name"] == "fashion-cnn"
    for template in templates:
        assert template["metadata"]["annotations"] == {builders.CONFIG_ANNOTATION: config}
        (volume,) = template["spec"]["volumes"]
        (item,) = volume["downwardAPI"]["items"]
        assert item == {"path": "config.json", "fieldRef": {"fieldPath": "metadata.annotations['slipway.dev/config']"}}
        mount = template["spec"]["containers"][0]["volumeMounts"][0]
        assert (mount["name"], mount["mountPath"]) == (volume["name"], builders.CONFIG_DIR)
    assert builders.job_config({"spec": {}}) is None  # a RayJob of an earlier operator (its config in a ConfigMap)


def test_credentials_reach_pods_from_secrets_and_never_the_config() -> None:
    (job,) = prep_objects()
    text = builders.job_config(job) or ""
    assert "people" in text and "s3-creds" not in text and "salts" not in text
    container = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    # The source's own Secret is prefixed: its keys never replace the store's, which the output is written with.
    assert container["envFrom"] == [
        {"secretRef": {"name": "slipway-store"}},
        {"secretRef": {"name": "s3-creds"}, "prefix": "SOURCE_"},
    ]
    assert container["env"] == [
        {"name": "SLIPWAY_HASH_SALT", "valueFrom": {"secretKeyRef": {"name": "salts", "key": "people"}}},
        {"name": "SLIPWAY_STOP_FILE", "value": "/tmp/slipway-stop"},  # the preStop hook's stop request
    ]


def test_the_workers_get_the_node_selector_and_the_head_runs_anywhere() -> None:
    (job,) = prep_objects()
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["workerGroupSpecs"][0]["template"]["spec"]["nodeSelector"] == {"pool": "cpu"}
    head = cluster["headGroupSpec"]["template"]["spec"]
    assert "nodeSelector" not in head and head["priorityClassName"] == "batch"


def test_pods_are_non_root_and_drop_every_capability() -> None:
    (job,) = training_objects()
    cluster = job["spec"]["rayClusterSpec"]
    templates = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"], job["spec"]["submitterPodTemplate"]]
    for group in templates:
        pod = group["template"]["spec"] if "template" in group else group["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        container = pod["containers"][0]["securityContext"]
        assert container["allowPrivilegeEscalation"] is False and container["capabilities"] == {"drop": ["ALL"]}


def test_long_names_stay_within_63_characters() -> None:
    owner = builders.Owner("slipway.dev/v1alpha1", "TrainingRun", "x" * 63, "ml", "u")
    assert len(builders.child_name(owner, "train")) == 63


def test_the_server_is_probed_on_oip_health_and_serves_under_the_deployments_name() -> None:
    config_map, deployment, service, _ = deployment_objects()
    served = json.loads(config_map["data"]["config.json"])
    assert served["modelName"] == "fashion" and served["server"]["batching"] == {
        "maxBatchSize": 32,
        "maxLatencyMs": 5.0,
    }
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert deployment["metadata"]["name"] == "fashion-stable" and deployment["spec"]["replicas"] == 2
    # The selector names the track (immutable); the revision is a pod label, so a new one is a rolling update.
    assert deployment["spec"]["selector"]["matchLabels"]["slipway.dev/track"] == "stable"
    assert deployment["spec"]["template"]["metadata"]["labels"]["slipway.dev/revision"] == "0123abcd"
    assert service["spec"]["selector"] == {"slipway.dev/modeldeployment": "fashion"}  # every revision


# --- the cluster's GPU pool (the chart's `gpu` values) and the serving image -----------------------------------

H100_POOL = builders.GpuPool(
    resource="nvidia.com/gpu",
    node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "pool": "gpu"},
    tolerations=(
        builders.GPU_TOLERATION,
        {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"},
    ),
)


def test_gpu_workers_land_on_the_pool_and_the_spec_wins_key_by_key() -> None:
    spec = example("fashion-mnist/02-trainingrun.yaml")
    spec.resources.node_selector = {"pool": "gpu-spot"}
    spec.resources.tolerations = [Toleration(key="dedicated", operator="Exists")]
    settings = Settings(image=IMAGE, store_uri="s3://slipway", gpu=H100_POOL)
    job = run_job(
        owner_of("TrainingRun", "r"),
        "train",
        settings,
        spec.resources,
        train_config("r", spec, "s3://b/d", "s3://b/r"),
        spec.failure_policy,
        None,
        False,
    )
    cluster = job["spec"]["rayClusterSpec"]
    worker = cluster["workerGroupSpecs"][0]["template"]["spec"]
    assert worker["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "pool": "gpu-spot"}
    # The spec's own toleration for `dedicated` replaces the pool's; the pool's GPU toleration is added.
    assert worker["tolerations"] == [{"key": "dedicated", "operator": "Exists"}, builders.GPU_TOLERATION]
    head = cluster["headGroupSpec"]["template"]["spec"]
    assert "nodeSelector" not in head and "tolerations" not in head  # the head needs no GPU node


def test_cpu_only_workers_ignore_the_gpu_pool() -> None:
    spec = DatasetPrepSpec.model_validate({"source": {"uri": "s3://raw/x.csv"}, "resources": {"workers": 2}})
    workload = builders.Workload(step="prep", image=IMAGE, resources=spec.resources, config="{}", gpu=H100_POOL)
    worker = builders.ray_job(owner_of("DatasetPrep", "x"), workload)["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    assert "nodeSelector" not in worker["template"]["spec"] and "tolerations" not in worker["template"]["spec"]


def test_another_gpu_vendor_is_requested_by_its_resource_name() -> None:
    amd = Settings.from_env({"SLIPWAY_GPU_RESOURCE": "amd.com/gpu"}).gpu
    assert amd.place({}, []) == builders.GpuPool(resource="amd.com/gpu").place({}, [])  # the pool's own default
    spec = example("fashion-mnist/02-trainingrun.yaml")
    workload = builders.Workload(step="train", image=IMAGE, resources=spec.resources, config="{}", gpu=amd)
    worker = builders.ray_job(owner_of("TrainingRun", "r"), workload)["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    pod = worker["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["amd.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"]["limits"]
    assert pod["tolerations"] == [{"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    md = example("fashion-mnist/04-modeldeployment.yaml")
    md.resources.gpus = 1
    server = builders.server_deployment(
        owner_of("ModelDeployment", "m"), "stable", "r1", IMAGE, "cm", md.resources, 1, gpu=amd
    )
    pod = server["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["amd.com/gpu"] == "1"
    assert pod["tolerations"] == [{"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_settings_from_the_environment_and_clear_errors_for_malformed_values() -> None:
    settings = Settings.from_env(
        {
            "SLIPWAY_IMAGE": "trainer:1",
            "SLIPWAY_SERVER_IMAGE": "server:1",
            "SLIPWAY_GPU_NODE_SELECTOR": '{"pool": "h100"}',
            "SLIPWAY_GPU_TOLERATIONS": "[]",
            "SLIPWAY_ALLOW_FILE_URIS": "true",
        }
    )
    assert settings.gpu.node_selector == {"pool": "h100"} and settings.gpu.tolerations == ()
    assert settings.allow_file_uris
    # ONNX models are served from the slim server image; TorchScript needs torch, so the trainer image.
    assert settings.serving_image("onnx") == "server:1" and settings.serving_image("torchscript") == "trainer:1"
    assert Settings.from_env({"SLIPWAY_IMAGE": "trainer:1"}).serving_image("onnx") == "trainer:1"
    assert not Settings.from_env({}).allow_file_uris
    with pytest.raises(ValueError, match=r"SLIPWAY_GPU_NODE_SELECTOR is not valid JSON"):
        Settings.from_env({"SLIPWAY_GPU_NODE_SELECTOR": "pool=h100"})
    with pytest.raises(ValueError, match=r"SLIPWAY_GPU_TOLERATIONS must be a list of toleration objects in JSON"):
        Settings.from_env({"SLIPWAY_GPU_TOLERATIONS": '{"key": "x"}'})
    with pytest.raises(ValueError, match=r"SLIPWAY_GPU_NODE_SELECTOR must be an object of label strings in JSON"):
        Settings.from_env({"SLIPWAY_GPU_NODE_SELECTOR": '{"count": 8}'})
    with pytest.raises(ValueError, match=r"SLIPWAY_WORKERS must be a whole number of at least 1, got 'eight'"):
        Settings.from_env({"SLIPWAY_WORKERS": "eight"})
    with pytest.raises(ValueError, match=r"SLIPWAY_BACKEND must be kubernetes or local, got 'docker'"):
        Settings.from_env({"SLIPWAY_BACKEND": "docker"})
    process = Settings.from_env({"SLIPWAY_BACKEND": "local", "SLIPWAY_WORKERS": "3", "SLIPWAY_STATE": "/s"})
    assert (process.backend, process.workers, process.state, process.allow_file_uris) == ("local", 3, "/s", True)
