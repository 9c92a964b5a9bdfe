"""Controllers decide the children of a resource from the resource and what was observed (pure functions)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from slipway_operator import builders
from slipway_operator.controllers import datasetprep, trainingrun
from slipway_operator.controllers.common import Settings

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SETTINGS = Settings(image="slipway/trainer:test", store_uri="s3://slipway/", storage_secret="store-creds")


def resource(path: str, namespace: str = "ml", **status: Any) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load((EXAMPLES / path).read_text())
    obj["metadata"] |= {"namespace": namespace, "uid": f"uid-{obj['metadata']['name']}"}
    if status:
        obj["status"] = status
    return obj


def config_of(children: list[dict[str, Any]]) -> dict[str, Any]:
    job = next(c for c in children if c["kind"] == "RayJob")
    return dict(json.loads(builders.job_config(job) or ""))


def test_a_dataset_prep_becomes_one_ray_job_carrying_its_config_and_writing_to_the_store() -> None:
    desired = datasetprep.desired_children(resource("fashion-mnist/01-datasetprep.yaml"), SETTINGS)
    assert desired.waiting_for is None
    assert [c["kind"] for c in desired.children] == ["RayJob"]
    config = config_of(desired.children)
    assert config["outputUri"] == "s3://slipway/datasets/ml/fashion"
    assert config["spec"]["source"]["uri"] == "builtin://fashion-mnist"
    job = desired.children[0]
    assert job["spec"]["entrypoint"].startswith("python -m slipway_trainer prep")
    worker = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert worker["image"] == "slipway/trainer:test"
    assert worker["envFrom"] == [{"secretRef": {"name": "store-creds"}}]


def test_a_training_run_waits_for_its_dataset_prep_and_says_so() -> None:
    run = resource("fashion-mnist/02-trainingrun.yaml")
    missing = trainingrun.desired_children(run, None, SETTINGS)
    assert missing.children == [] and missing.waiting_for == "DatasetPrep fashion (it does not exist yet)"
    running = trainingrun.desired_children(
        run, resource("fashion-mnist/01-datasetprep.yaml", phase="Running"), SETTINGS
    )
    assert running.children == [] and running.waiting_for == "DatasetPrep fashion (Running)"


def test_a_training_run_trains_on_the_prepared_dataset_once_it_succeeded() -> None:
    dataset = resource(
        "fashion-mnist/01-datasetprep.yaml", phase="Succeeded", outputUri="s3://slipway/datasets/ml/fashion"
    )
    desired = trainingrun.desired_children(resource("fashion-mnist/02-trainingrun.yaml"), dataset, SETTINGS)
    assert desired.waiting_for is None
    config = config_of(desired.children)
    assert config["datasetUri"] == "s3://slipway/datasets/ml/fashion"
    assert config["artifactUri"] == "s3://slipway/runs/ml/fashion-cnn"
    assert config["lineage"] == {"trainingRun": "fashion-cnn", "datasetRef": "fashion"}
    assert config["workers"] == 2 and config["gpusPerWorker"] == 1
    job = desired.children[0]
    assert job["metadata"]["name"] == "fashion-cnn-train"
    assert job["spec"]["backoffLimit"] == 2 and job["spec"]["activeDeadlineSeconds"] == 86400


def test_a_training_run_with_a_dataset_uri_needs_no_dataset_prep() -> None:
    run = resource("fashion-mnist/02-trainingrun.yaml")
    run["spec"]["dataset"] = {"uri": "s3://shared/datasets/fashion"}
    desired = trainingrun.desired_children(run, None, SETTINGS)
    assert config_of(desired.children)["datasetUri"] == "s3://shared/datasets/fashion"


def test_children_are_the_same_on_every_pass() -> None:
    dataset = resource("fashion-mnist/01-datasetprep.yaml", phase="Succeeded", outputUri="s3://x/d")
    run = resource("fashion-mnist/02-trainingrun.yaml")
    first = trainingrun.desired_children(run, dataset, SETTINGS).children
    assert trainingrun.desired_children(run, dataset, SETTINGS).children == first  # deterministic: adopt, not duplicate


def test_file_uris_in_a_spec_are_found_wherever_they_are() -> None:
    from slipway_operator.controllers.common import file_uri_paths

    spec = {
        "source": {"uri": "file:///data/raw.csv"},
        "output": {"uri": "s3://b/out"},
        "extra": [{"uri": "s3://x"}, {"uri": "file:///mnt/y"}],
        "note": "see file:///not-a-prefix",
    }
    assert file_uri_paths(spec) == ["spec.source.uri", "spec.extra[1].uri"]
