"""The journey report, on the real artifacts of a small journey made once for this module: three prepared
datasets (digits, Auto MPG with dropped rows and a text feature, Fashion-MNIST images), two TrainingRuns and one
that fails, a two-trial TuningSweep on Ray Tune, and a ModelDeployment whose status the real controller wrote.
The resources' statuses come from the operator's own code (run_status and the kinds' status fields)."""

from __future__ import annotations

import copy
import html
import json
import math
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import pytest

from slipway_operator import api
from slipway_operator.controllers import kinds
from slipway_operator.controllers import modeldeployment as md
from slipway_operator.controllers.common import Settings
from slipway_operator.reconcile import run_status_fields
from slipway_operator.report import journey_report
from slipway_operator.runstatus import Observed
from slipway_operator.servermetrics import Traffic
from slipway_trainer import storage
from slipway_trainer.config.prep import PrepConfig
from slipway_trainer.config.train import TrainConfig
from slipway_trainer.data import workload as prep_workload
from slipway_trainer.report import markdown_html
from slipway_trainer.train import workload as train_workload
from specs import AUTO_MPG

API = "slipway.dev/v1alpha1"
NOW = "2026-01-01T00:00:00+00:00"
KINDS = ("DatasetPrep", "TrainingRun", "TuningSweep", "ModelDeployment")
DONE = {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}
PREPS: dict[str, dict[str, Any]] = {
    "digits": {
        "source": {"uri": "builtin://sklearn/digits"},
        "transforms": [{"type": "minMax"}],
        "sample": {"rows": 300},
        "split": {"stratifyBy": "target"},
    },
    "cars": AUTO_MPG,
    "fashion": {
        "source": {"uri": "builtin://fashion-mnist"},
        "sample": {"rows": 300, "seed": 1},
        "split": {"stratifyBy": "label"},
    },
}
RUNS: dict[str, dict[str, Any]] = {
    "mlp": {
        "dataset": {"ref": "digits"},
        "model": {"architecture": "mlp", "params": {"hidden": [16]}},
        "training": {"epochs": 2, "batchSize": 32},
        "export": {"formats": ["onnx"]},
    },
    "mpg": {
        "dataset": {"ref": "cars"},
        "model": {"architecture": "mlp", "params": {"hidden": [16]}},
        "objective": {"loss": "huber", "metric": "mae", "direction": "minimize"},
        "training": {"epochs": 2, "batchSize": 32},
        "evaluation": {"sensitiveFeatures": ["Origin"]},
        "export": {"formats": ["onnx"]},
    },
    "broken": {  # a CNN cannot take tabular features: fails before training with ModelDoesNotFitData
        "dataset": {"ref": "digits"},
        "model": {"architecture": "cnn"},
        "training": {"epochs": 2},
    },
}
SWEEP = {
    "searchSpace": {"optimizer.learningRate": {"choice": [0.001, 0.01]}},
    "algorithm": "grid",
    "objective": {"metric": "val_accuracy", "direction": "maximize"},
    "maxTrials": 2,
    "parallelTrials": 2,
}


@dataclass
class Journey:
    root: Path
    resources: list[dict[str, Any]]
    artifacts: dict[str, Path]  # resource name -> its artifact (or output) folder
    report: Path
    html: str


def resource(kind: str, name: str, spec: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    meta = {"name": name, "namespace": "ml", "generation": 1}
    return {"apiVersion": API, "kind": kind, "metadata": meta, "spec": spec, "status": status}


def finished(kind: str, name: str, spec: dict[str, Any], artifacts: str) -> dict[str, Any]:
    """The resource with the status a reconcile pass writes once its workload is done (reconcile.run_status_fields),
    from the progress.json and result.json the real workload wrote under `artifacts`."""
    progress, result = (storage.read_json(storage.join(artifacts, f)) for f in ("progress.json", "result.json"))
    observed = Observed(ray_job=DONE, progress=progress, result=result)
    obj = resource(kind, name, spec, {})
    settings = Settings(image="slipway/trainer:test", store_uri="s3://unused")
    status = run_status_fields(obj, kinds.RUNS[kind], observed, settings, artifacts, None, NOW)
    api.BY_KIND[kind].status.model_validate(status)  # every field set is one the CRD keeps
    return {**obj, "status": status}


class Serving:
    """The real ModelDeployment controller, driven as the operator drives it; Kubernetes makes every Deployment
    it is given ready at once (as tests/unit/test_modeldeployment.py does)."""

    def __init__(self, obj: dict[str, Any], sources: dict[str, dict[str, Any]], traffic: Traffic) -> None:
        self.obj, self.sources, self.traffic = obj, sources, traffic
        self.deployments: dict[str, dict[str, Any]] = {}
        self.now = 1_800_000_000.0

    def step(self) -> None:
        self.now += 10
        spec = md.ModelDeploymentSpec.model_validate(self.obj["spec"])
        ref = str(spec.model.from_training_run or spec.model.from_tuning_sweep)
        source, waiting = md.source_of(spec, self.sources[ref])
        observed = md.Observed(
            source=source,
            waiting_for=waiting,
            deployments={t: self.deployments.get(t) for t in (md.STABLE, md.CANARY)},
            traffic={md.STABLE: self.traffic},
            endpoint="http://digits.ml.svc.cluster.local",
            now=self.now,
        )
        settings = Settings(image="slipway/server:test", store_uri="s3://slipway")
        plan = md.plan(copy.deepcopy(self.obj), observed, settings)
        for child in plan.children:
            if child["kind"] == "Deployment":
                n = child["spec"]["replicas"]
                ready = {"observedGeneration": 1, "replicas": n, "readyReplicas": n, "updatedReplicas": n}
                track = child["metadata"]["labels"]["slipway.dev/track"]
                self.deployments[track] = {**child, "metadata": {**child["metadata"], "generation": 1}, "status": ready}
        for _, _, name in plan.delete:
            self.deployments.pop(name.rsplit("-", 1)[1], None)
        self.obj["status"] = plan.status


@pytest.fixture(scope="module")
def journey(tmp_path_factory: pytest.TempPathFactory) -> Journey:
    root = tmp_path_factory.mktemp("journey")
    resources: list[dict[str, Any]] = []
    artifacts: dict[str, Path] = {}
    for name, spec in PREPS.items():
        output = root / "datasets" / name
        result = prep_workload.run(
            PrepConfig.model_validate({"name": name, "outputUri": output.as_uri(), "spec": spec})
        )
        assert result["status"] == "Succeeded", result
        placed = {**spec, "output": {**spec.get("output", {}), "uri": output.as_uri()}}
        resources.append(finished("DatasetPrep", name, placed, storage.join(output.as_uri(), "_run")))
        artifacts[name] = output
    for name, spec in RUNS.items():
        folder = root / "runs" / name
        dataset = (root / "datasets" / spec["dataset"]["ref"]).as_uri()
        train_spec = {k: v for k, v in spec.items() if k != "dataset"}
        config = {"name": name, "datasetUri": dataset, "artifactUri": folder.as_uri(), "useRay": False}
        train_workload.run(TrainConfig.model_validate({**config, "spec": train_spec}))
        resources.append(finished("TrainingRun", name, spec, folder.as_uri()))
        artifacts[name] = folder

    folder = root / "runs" / "sweep"
    template = {k: v for k, v in RUNS["mlp"].items() if k != "dataset"}
    config = {
        "name": "sweep",
        "datasetUri": (root / "datasets" / "digits").as_uri(),
        "artifactUri": folder.as_uri(),
        "template": template,
        "spec": SWEEP,
    }
    (root / "sweep.json").write_text(json.dumps(config))
    command = [sys.executable, "-m", "slipway_trainer", "tune", "--config", str(root / "sweep.json")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    sweep_spec = {"template": {"dataset": {"ref": "digits"}, **template}, **SWEEP}
    resources.append(finished("TuningSweep", "sweep", sweep_spec, folder.as_uri()))
    artifacts["sweep"] = folder

    # Served from the TrainingRun first, then rolled (rolling update) to the sweep's best model.
    deployment = resource(
        "ModelDeployment",
        "digits",
        {
            "model": {"fromTrainingRun": "mlp"},
            "replicas": {"min": 2},
            "rollout": {"strategy": "rolling"},
            "monitoring": {"drift": {"enabled": True, "method": "psi", "threshold": 0.2}},
        },
        {},
    )
    deployment["metadata"]["uid"] = "uid-digits"
    traffic = Traffic(250, 1, {0.025: 250.0, math.inf: 250.0}, {"pixel_3_4": 0.35, "pixel_0_1": 0.01}, 2)
    serving = Serving(deployment, {r["metadata"]["name"]: r for r in resources}, traffic)
    serving.step()
    serving.step()
    deployment["spec"]["model"] = {"fromTuningSweep": "sweep"}
    deployment["metadata"]["generation"] = 2
    serving.step()
    serving.step()
    resources.append(deployment)

    # Given with the kinds in reverse: the report puts them in journey order, keeping the order within a kind.
    given = sorted(resources, key=lambda r: -list(KINDS).index(r["kind"]))
    report = journey_report(given, root / "report", title="Digits <journey>")
    return Journey(root, resources, artifacts, report, report.read_text())


def section(page: str, anchor: str) -> str:
    found = re.search(rf'<section id="{re.escape(anchor)}".*?</section>', page, re.S)
    assert found, f"no section {anchor}"
    return found.group(0)


def status(journey: Journey, kind: str, name: str) -> dict[str, Any]:
    return next(r["status"] for r in journey.resources if (r["kind"], r["metadata"]["name"]) == (kind, name))


def test_one_section_per_resource_in_journey_order_with_phase_and_message(journey: Journey) -> None:
    assert journey.report == journey.root / "report" / "report.html"
    page = journey.html
    assert "<title>Digits &lt;journey&gt;</title>" in page
    anchors = re.findall(r'<section id="([^"]+)"', page)
    assert anchors == [
        "datasetprep-digits",
        "datasetprep-cars",
        "datasetprep-fashion",
        "trainingrun-mlp",
        "trainingrun-mpg",
        "trainingrun-broken",
        "tuningsweep-sweep",
        "modeldeployment-digits",
    ]
    for r in journey.resources:
        text = section(page, f"{r['kind'].lower()}-{r['metadata']['name']}")
        assert html.escape(r["status"]["phase"]) in text
        assert html.escape(r["status"]["message"]) in text
    assert page.count('<a href="#') == len(anchors)  # the overview links every section


def test_data_profile_rows_drops_features_and_pixels_come_from_the_manifests(journey: Journey) -> None:
    digits = json.loads((journey.artifacts["digits"] / "manifest.json").read_text())
    text = section(journey.html, "datasetprep-digits")
    for split in ("train", "validation", "test"):
        assert f"<td>{digits['rows'][split]:,}</td>" in text
    assert "No row was dropped" in text
    assert digits["fingerprint"] in text
    feature = digits["profile"]["features"]["pixel_2_3"]
    assert f"mean {feature['mean']:.4g}, std {feature['std']:.4g}" in text
    assert f"<td>{digits['classBalance']['train']['9']}</td>" in text

    cars = json.loads((journey.artifacts["cars"] / "manifest.json").read_text())
    text = section(journey.html, "datasetprep-cars")
    assert cars["dropped"] == {"missingLabel": 8}
    assert "<td>missingLabel</td><td>8</td>" in text
    assert "dropped columns</dt><dd>Name</dd>" in text
    usa = cars["profile"]["features"]["Origin"]["frequencies"]["USA"]
    assert "<td>Origin</td><td>categorical</td>" in text and f"USA ({usa:.1%})" in text
    assert "label-histogram.png" in text  # regression: the label's histogram, not a class balance

    fashion = json.loads((journey.artifacts["fashion"] / "manifest.json").read_text())
    image = fashion["profile"]["features"]["image"]
    text = section(journey.html, "datasetprep-fashion")
    assert "<h4>Pixels of image: " in text and "28 x 28 x 1" in text
    assert f"<td>grey</td><td>{image['pixelMean'][0]:.4g}</td><td>{image['pixelStd'][0]:.4g}</td>" in text
    assert "T-shirt/top" in text  # class names of the built-in set
    assert "datasetprep-fashion-pixels-image.png" in text and "datasetprep-fashion-class-balance.png" in text


def test_training_metrics_plots_fairness_and_model_card(journey: Journey) -> None:
    metrics = json.loads((journey.artifacts["mlp"] / "report" / "metrics.json").read_text())
    text = section(journey.html, "trainingrun-mlp")
    for name in ("accuracy", "precision", "f1"):
        assert f"<td>test_{name}</td><td>{metrics['test'][name]:.4g}</td>" in text
    assert "trainingrun-mlp-training-curves.png" in text and "trainingrun-mlp-confusion-matrix.png" in text
    assert "<h3>Model card</h3>" in text
    assert "<h4>Test metrics</h4>" in text and "<strong>Architecture</strong>" in text  # markdown rendered
    assert "<th>layer</th><th>type</th><th>output shape</th><th>parameters</th>" in text
    assert status(journey, "TrainingRun", "mlp")["modelUri"] in text
    history = json.loads((journey.artifacts["mlp"] / "history.json").read_text())
    assert f"<td>{history[-1]['val_loss']:.4g}</td>" in text

    fairness = json.loads((journey.artifacts["mpg"] / "report" / "metrics.json").read_text())["fairness"]["Origin"]
    text = section(journey.html, "trainingrun-mpg")
    assert set(fairness["groups"]) == {"USA", "Japan", "Europe"}
    assert f"mae per group, largest gap {fairness['largest_gap']:.4g}" in text
    for group, figures in fairness["groups"].items():
        assert f"<td>{group}</td><td>{figures['rows']}</td><td>{figures['mae']:.4g}</td>" in text
    assert "permutation importance" in text and "<td>Weight_in_lbs</td>" in text


def test_a_failed_run_is_reported_as_failed_and_the_rest_still_renders(journey: Journey) -> None:
    result = json.loads((journey.artifacts["broken"] / "result.json").read_text())
    assert result["status"] == "Failed" and result["reason"] == "ModelDoesNotFitData"
    text = section(journey.html, "trainingrun-broken")
    assert 'class="phase phase-bad">Failed</span>' in text
    assert '<div class="failure">' in text and "ModelDoesNotFitData" in text
    assert "it published no evaluation" in text
    assert "Missing:" not in text  # a failed run's absent model is not listed as missing artifacts
    overview = journey.html.split("<main>")[0]
    assert "failed: ModelDoesNotFitData" in overview


def test_sweep_leaderboard_comparison_plot_and_top_two_verdict(journey: Journey) -> None:
    report = journey.artifacts["sweep"] / "report"
    board = json.loads((report / "leaderboard.json").read_text())
    top_two = json.loads((report / "top_two.json").read_text())
    text = section(journey.html, "tuningsweep-sweep")
    leaderboard = text.split("<h3>Leaderboard</h3>")[1].split("</table>")[0]
    rows = re.findall(r"<tr[^>]*><td>\d+</td><td>([^<]+)</td>", leaderboard)
    assert rows == [row["trial"] for row in board]  # ranked as the leaderboard ranks them
    best = status(journey, "TuningSweep", "sweep")["bestTrial"]
    assert re.search(rf'<tr class="best"><td>1</td><td>{best["id"]}</td>', text)
    for row in board:
        assert f"<td>{row['best']:.4g}</td>" in text
    assert html.escape(top_two["verdict"]) in text
    assert ("The winner is really better" if top_two["winnerIsBetter"] else "Not distinguishable") in text
    assert "tuningsweep-sweep-comparison.png" in text.split("<h3>Leaderboard</h3>")[1].split("<h3>")[0]
    assert "tuningsweep-sweep-confusion-matrix.png" in text  # the best trial's evaluation
    assert "<h3>Model card</h3>" in text and best["id"] in text


def test_serving_health_revisions_traffic_drift_and_history(journey: Journey) -> None:
    served = status(journey, "ModelDeployment", "digits")
    assert served["phase"] == "Available"
    text = section(journey.html, "modeldeployment-digits")
    assert "http://digits.ml.svc.cluster.local/v2/models/digits/infer" in text
    assert served["current"]["name"] in text and served["current"]["source"] == "TuningSweep/sweep"
    assert served["readyReplicas"] == "2/2" and "2/2" in text
    old = served["history"][0]
    assert old["outcome"] == "Replaced" and old["source"] == "TrainingRun/mlp"
    assert f"<td>{old['name']}</td><td>Replaced</td>" in text
    assert "<td>250</td><td>0.40%</td><td>25 ms</td>" in text
    assert served["drift"]["driftedFeatures"] == ["pixel_3_4"]
    assert "drifted features</dt><dd>pixel_3_4</dd>" in text and "largest score</dt><dd>0.35</dd>" in text
    assert "<td>Drifted</td><td>True</td><td>DriftDetected</td>" in text


def test_every_referenced_png_is_beside_the_report_and_nothing_reaches_the_network(journey: Journey) -> None:
    page = journey.html
    folder = journey.report.parent
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert set(sources) == {
        "datasetprep-digits-class-balance.png",
        "datasetprep-digits-feature-histograms.png",
        "datasetprep-cars-label-histogram.png",
        "datasetprep-cars-feature-histograms.png",
        "datasetprep-fashion-class-balance.png",
        "datasetprep-fashion-pixels-image.png",
        "trainingrun-mlp-training-curves.png",
        "trainingrun-mlp-confusion-matrix.png",
        "trainingrun-mpg-training-curves.png",  # regression: no confusion matrix
        "tuningsweep-sweep-training-curves.png",
        "tuningsweep-sweep-confusion-matrix.png",
        "tuningsweep-sweep-comparison.png",
    }
    for name in sources:
        assert "/" not in name and name.endswith(".png")
        assert (folder / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n"), name
    copied = folder / "trainingrun-mlp-confusion-matrix.png"
    assert copied.read_bytes() == (journey.artifacts["mlp"] / "report" / "confusion_matrix.png").read_bytes()
    links = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert all(not re.match(r"[a-z]+:", link) for link in links)  # relative files and #anchors only
    assert "<script" not in page and "<link" not in page and "@import" not in page
    # nothing but the title is hostile here: no HTML the report built was escaped by mistake
    assert "&lt;" not in page.replace("Digits &lt;journey&gt;", "")


def test_hostile_strings_are_escaped_and_broken_resources_do_not_stop_the_report(tmp_path: Path) -> None:
    hostile = '<script>alert("name")</script>'
    message = '<img src=x onerror=alert(1)> & "quoted"'
    resources: list[dict[str, Any]] = [
        {
            "kind": "ModelDeployment",
            "metadata": {"name": "md"},
            "spec": {"model": {"uri": hostile}},
            "status": {
                "phase": "Degraded",
                "message": message,
                "endpoint": hostile,
                "conditions": [{"type": "Degraded", "status": "True", "reason": "<Unhealthy>", "message": message}],
                "history": [{"name": hostile, "outcome": "RolledBack", "reason": message}],
                "traffic": "not a mapping",
            },
        },
        {
            "kind": "DatasetPrep",
            "metadata": {"name": hostile, "namespace": message},
            "spec": {"source": {"uri": f"file:///{hostile}"}, "label": hostile},
            "status": {
                "phase": "Failed",
                "message": message,
                "conditions": [{"type": "Failed", "status": "True", "reason": "Bad<Reason>", "message": message}],
            },
        },
        {  # says it succeeded, but its artifacts are gone
            "kind": "TrainingRun",
            "metadata": {"name": "gone"},
            "spec": {"model": {"architecture": hostile}},
            "status": {"phase": "Succeeded", "artifactUri": (tmp_path / "nowhere").as_uri(), "message": "done"},
        },
        {"kind": "Mystery", "metadata": None, "status": "garbage"},
        {},
    ]
    page = journey_report(resources, tmp_path / "out", title=hostile).read_text()
    for text in (hostile, message, "<Unhealthy>", "Bad<Reason>"):
        assert text not in page
        assert html.escape(text) in page
    assert "<script" not in page and "<img src=x" not in page
    failed = section(page, "datasetprep-script-alert-name-script")
    assert '<div class="failure"><strong>Failed (Bad&lt;Reason&gt;)</strong>: ' + html.escape(message) in failed
    gone = section(page, "trainingrun-gone")
    assert "Missing: the run&#x27;s result.json" in gone and "Missing: the model card" in gone
    assert "Missing: the run&#x27;s plots" in gone
    assert 'class="phase phase-bad">Degraded</span>' in section(page, "modeldeployment-md")
    assert "Mystery is not a kind this report knows" in page
    assert len(re.findall(r"<section id=", page)) == 5


def test_markdown_is_rendered_simply_and_escaped() -> None:
    card = "\n".join(
        [
            "# Model card: <b>x</b>",
            "",
            "- **Task**: classification of `a<b`",
            "- second *item*",
            "",
            "1. first",
            "2. second",
            "",
            "| metric | value |",
            "|---|---|",
            "| <i>acc</i> | 0.9 |",
            "",
            "A paragraph",
            "on two lines & more.",
            "```",
            "<raw>",
            "```",
        ]
    )
    assert markdown_html(card) == (
        "<h3>Model card: &lt;b&gt;x&lt;/b&gt;</h3>"
        "<ul><li><strong>Task</strong>: classification of <code>a&lt;b</code></li><li>second <em>item</em></li></ul>"
        "<ol><li>first</li><li>second</li></ol>"
        "<table><thead><tr><th>metric</th><th>value</th></tr></thead>"
        "<tbody><tr><td>&lt;i&gt;acc&lt;/i&gt;</td><td>0.9</td></tr></tbody></table>"
        "<p>A paragraph\non two lines &amp; more.</p>"
        "<pre><code>&lt;raw&gt;\n</code></pre>\n"
    )


def test_markdown_from_a_model_card_cannot_inject_markup_or_reach_the_network() -> None:
    hostile = ['<script>alert("card")</script>', "<img src=x onerror=alert(1)>"]
    card = "\n\n".join([*hostile, "See [the docs](https://example.com) ![a](x.png)"])
    rendered = markdown_html(card)
    assert "<script" not in rendered and "<img" not in rendered and "<a " not in rendered
    assert "&lt;script&gt;alert(&quot;card&quot;)&lt;/script&gt;" in rendered
    assert "&lt;img src=x onerror=alert(1)&gt;" in rendered
    assert "[the docs](https://example.com)" in rendered  # shown as text, not linked


def test_markdown_tables_render_as_tables_and_headings_are_shifted() -> None:
    rendered = markdown_html("# One\n\n## Two\n\n##### Five\n\n| a | b |\n|---|---:|\n| 1 | 2 |", shift=2)
    assert rendered.startswith("<h3>One</h3><h4>Two</h4><h6>Five</h6><table>")  # shifted, at most to h6
    assert "<thead><tr><th>a</th><th" in rendered and "<td>1</td><td" in rendered and rendered.endswith("</table>")
    assert markdown_html("# One", shift=0) == "<h1>One</h1>"


def test_an_artifact_that_breaks_its_contract_is_said_in_its_section_and_the_others_render(
    journey: Journey, tmp_path: Path
) -> None:
    good = next(r for r in journey.resources if r["metadata"]["name"] == "digits" and r["kind"] == "DatasetPrep")
    manifest = json.loads((journey.artifacts["digits"] / "manifest.json").read_text())
    broken = tmp_path / "broken" / "manifest.json"
    broken.parent.mkdir()
    broken.write_text(json.dumps({**manifest, "rows": "many"}))
    bad = copy.deepcopy(good)
    bad["metadata"]["name"] = "broken"
    bad["status"]["manifestUri"] = broken.as_uri()
    board = tmp_path / "leaderboard.json"
    board.write_text(json.dumps({"not": "a list"}))
    sweep = copy.deepcopy(next(r for r in journey.resources if r["kind"] == "TuningSweep"))
    sweep["status"]["leaderboardUri"] = board.as_uri()
    page = journey_report([bad, good, sweep], tmp_path / "out").read_text()
    text = section(page, "datasetprep-broken")
    assert "Unreadable: the dataset manifest (" + html.escape(broken.as_uri()) in text
    assert "does not match the Manifest contract: rows" in text
    assert f"<td>{manifest['rows']['train']:,}</td>" in text  # the status's row counts still shown
    assert "digits-class-balance.png" in section(page, "datasetprep-digits")  # the other section is whole
    swept = section(page, "tuningsweep-sweep")
    assert "Unreadable: the leaderboard" in swept and "not a list of trials" in swept
    assert "tuningsweep-sweep-confusion-matrix.png" in swept  # the rest of the section still renders


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("slipway_trainer.report", "{'torch', 'ray', 'kopf', 'kubernetes'}"),
        ("slipway_operator.report", "{'torch', 'ray'}"),
    ],
)
def test_the_report_module_loads_no_torch_ray_kopf_or_kubernetes(module: str, forbidden: str) -> None:
    probe = f"import sys, {module}; print(sorted({{m.split('.')[0] for m in sys.modules}} & {forbidden}))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_artifacts_on_another_fsspec_store_and_a_run_still_in_progress(journey: Journey, tmp_path: Path) -> None:
    # memory:// stands in for s3://: every read goes through slipway_trainer.storage, whatever the scheme.
    memory = fsspec.filesystem("memory")
    text = json.dumps([r for r in journey.resources if r["metadata"]["name"] in ("digits", "mlp")][:2])
    for name in ("digits", "mlp"):
        memory.put(str(journey.artifacts[name]), f"/report-test/{name}", recursive=True)
        text = text.replace(journey.artifacts[name].as_uri(), f"memory://report-test/{name}")
    prep, run = json.loads(text)
    assert prep["kind"] == "DatasetPrep" and run["kind"] == "TrainingRun"
    assert storage.exists(prep["status"]["manifestUri"]) and prep["status"]["manifestUri"].startswith("memory://")
    run["status"] |= {"phase": "Running", "message": "epoch 2/2", "progress": "2/2 epochs"}
    page = journey_report([run, prep], tmp_path / "out").read_text()
    rows = json.loads((journey.artifacts["digits"] / "manifest.json").read_text())["rows"]
    assert f"<td>{rows['train']:,}</td>" in section(page, "datasetprep-digits")
    running = section(page, "trainingrun-mlp")
    assert 'class="phase phase-busy">Running</span>' in running
    assert "Not finished (Running)</strong>: epoch 2/2 — 2/2 epochs" in running
    copied = tmp_path / "out" / "trainingrun-mlp-training-curves.png"
    assert copied.read_bytes() == (journey.artifacts["mlp"] / "report" / "training_curves.png").read_bytes()
    assert "Missing:" not in page
