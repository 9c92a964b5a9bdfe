"""`make demo` (`slipway demo`): the Fashion-MNIST journey end to end on this machine, in a few minutes.

The example manifests in examples/fashion-mnist/ are shrunk (a 20,000-image subset, 4 epochs, a 3-trial sweep of 2
epochs, one server replica, short shadow and canary steps that need fewer requests) and written to
`<state>/manifests/` so you can see what ran; then the same runner as `slipway run` drives them: data prep, training
(one local worker, in process), tuning on Ray Tune, and an inference server on a loopback port. As soon as the
endpoint serves, a client sends it test images and, for each answer, the true label as feedback (`POST
/v2/models/<name>/feedback`), so the canary that autoUpdate starts for a better model is judged on real requests and
the live accuracy shows in the status. The demo then prints predictions beside the truth, the test accuracy, and
where the report and model card are. Where the Debian Fashion-MNIST package is missing, scikit-learn's digits stand
in.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from slipway_operator.run import Journey, Options, RunError, load
from slipway_trainer import storage
from slipway_trainer.artifacts import MANIFEST, Manifest
from slipway_trainer.datasets import fashion_mnist_missing

EXAMPLES = Path("examples/fashion-mnist")


def shrink(manifests: list[dict[str, Any]], digits: bool) -> list[dict[str, Any]]:
    """The example journey at demo size."""
    for doc in manifests:
        spec = doc["spec"]
        if doc["kind"] == "DatasetPrep":
            spec["sample"] = {"rows": 20000, "seed": 42}
            if digits:
                spec["source"] = {"uri": "builtin://sklearn/digits"}
                spec["label"] = "target"
                spec["split"]["stratifyBy"] = "target"
                spec["sample"] = {"rows": 1797, "seed": 42}
        elif doc["kind"] == "TrainingRun":
            spec["training"] |= {"epochs": 4}
            spec["training"].pop("earlyStopping", None)
            if digits:
                spec["model"] = {"architecture": "mlp", "params": {"hidden": [64]}}
                spec["regularization"] = {}
        elif doc["kind"] == "TuningSweep":
            spec["template"]["training"] |= {"epochs": 2}
            if digits:
                spec["template"]["model"] = {"architecture": "mlp", "params": {"hidden": [64], "dropout": 0.1}}
            spec |= {"maxTrials": 3, "parallelTrials": 1, "scheduler": {"type": "fifo"}}
            spec["objective"].pop("goal", None)
        elif doc["kind"] == "ModelDeployment":
            spec["replicas"] = {"min": 1}
            canary = spec["rollout"]["canary"]
            canary |= {"intervalSeconds": 5, "steps": [20, 50, 100]}
            canary["analysis"] |= {"minRequests": 10}
            spec["rollout"]["shadow"] |= {"intervalSeconds": 5, "minRequests": 10}
    return manifests


def demo(state: Path) -> int:
    print("Slipway demo: the Fashion-MNIST journey on this machine, no cluster needed.\n")
    print("== 1. This machine (python -m slipway_trainer doctor)")
    if subprocess.call([sys.executable, "-m", "slipway_trainer", "doctor"]) != 0:
        print("Fix the problems above, then run `make demo` again.")
        return 1
    digits = bool(fashion_mnist_missing())
    if digits:
        print("\nDebian's dataset-fashion-mnist is not installed: scikit-learn's digits stand in.")

    print(f"\n== 2. The manifests: {EXAMPLES}/, shrunk to demo size")
    try:
        manifests = shrink(load([EXAMPLES]), digits)
    except RunError as err:
        print(f"error: {err}\n(run `make demo` from the repository root)", file=sys.stderr)
        return 1
    folder = state / "manifests"
    folder.mkdir(parents=True, exist_ok=True)
    for doc in manifests:
        (folder / f"{doc['kind'].lower()}-{doc['metadata']['name']}.yaml").write_text(
            yaml.safe_dump(doc, sort_keys=False)
        )
    print(f"  20,000 images, 4 epochs, a 3-trial sweep of 2 epochs, one server replica; written to {folder}/")
    print(f"  (the full-size journey: slipway run -f {EXAMPLES})")

    print("\n== 3. slipway run: prep, train (Ray Train), tune (Ray Tune), serve (OIP v2)")
    journey = Journey(Options(state=state))
    client: Client | None = None
    try:
        objs = journey.start(load([folder]))
        client = Client(objs)
        client.start()
        problem = journey.until_done(objs)
        client.close()
        if problem:
            print(f"\nstopped: {problem}")
            return 1
        print()
        journey.summary(objs)
        print(f"  meanwhile a client sent {client.sent} requests and feedback for {client.rows} rows")
        print("\n== 4. Ask the endpoint about test images it never saw")
        ask(objs)
    except KeyboardInterrupt:
        print("\nstopping (Ctrl-C)...")
        return 130
    finally:
        if client is not None:
            client.close()
        journey.backend.close()
    print(
        f"\nDone. `slipway get --state {state}` lists what ran, `slipway describe NAME --state {state}` explains one, "
        f"`slipway logs NAME --state {state}` shows its log."
    )
    return 0


class Client:
    """Steady traffic with ground-truth feedback, in the background, from the moment the endpoint serves: a few test
    images per request, about ten requests a second, and each answer's true labels sent back by its request id."""

    def __init__(self, objs: list[dict[str, Any]]) -> None:
        self.objs = objs
        self.sent = self.rows = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="demo-client", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)

    def _run(self) -> None:
        test: Any = None
        while not self.stop.wait(0.1):
            kinds = _by_kind(self.objs)
            serving = kinds["ModelDeployment"].get("status") or {}
            prepared = (kinds["DatasetPrep"].get("status") or {}).get("phase") == "Succeeded"
            if not serving.get("endpoint") or not prepared:
                continue
            try:
                if test is None:
                    manifest, test = held_out(self.objs)
                batch = test.slice((self.sent * 4) % max(1, test.num_rows - 4), 4)
                base = f"{serving['endpoint']}/v2/models/{serving['modelName']}"
                answer = infer(f"{base}/infer", batch, manifest)
                self.sent += 1
                truth = batch.column(str(manifest.label)).to_pylist()
                post(f"{base}/feedback", {"id": answer["id"], "truth": truth})
                self.rows += len(truth)
            except OSError:  # the server is starting, or rolling: try again
                continue


def _by_kind(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in objs}


def held_out(objs: list[dict[str, Any]]) -> tuple[Manifest, Any]:
    """The prepared dataset's manifest and its test split."""
    import pyarrow.parquet as pq

    dataset = _by_kind(objs)["DatasetPrep"]["status"]["outputUri"]
    where = storage.join(dataset, MANIFEST)
    manifest = Manifest.read(storage.read_json(where), where)
    test_path = storage.join(dataset, manifest.splits["test"])
    return manifest, pq.read_table(test_path.removeprefix("file://"))


def ask(objs: list[dict[str, Any]], count: int = 10) -> None:
    serving = _by_kind(objs)["ModelDeployment"]["status"]
    manifest, test = held_out(objs)
    label = str(manifest.label)
    names = manifest.labels()
    url = f"{serving['endpoint']}/v2/models/{serving['modelName']}/infer"
    right = total = 0
    shown = 0
    for start in range(0, min(test.num_rows, 500), 100):
        batch = test.slice(start, 100)
        outputs = {o["name"]: o for o in infer(url, batch, manifest)["outputs"]}
        predicted = outputs.get("class_name", outputs["label"])["data"]
        truth = [names[manifest.classes.index(v)] for v in batch.column(label).to_pylist()]
        for guess, actual in zip(predicted, truth, strict=True):
            if shown < count:
                print(f"  {'ok ' if str(guess) == str(actual) else '   '} predicted {guess!s:<12} truth {actual}")
                shown += 1
            right += str(guess) == str(actual)
            total += 1
    print(f"  {right}/{total} test images right through the endpoint ({right / total:.1%})")
    current = serving.get("current") or {}
    print(f"  serving revision {current.get('name')} from {current.get('source')}: {current.get('modelUri')}")
    print(f"  model card: {storage.join(current.get('modelUri', ''), 'model_card.md')}")


def infer(url: str, batch: Any, manifest: Manifest) -> dict[str, Any]:
    images = manifest.images
    if images:
        data = [list(v) for v in batch.column("image").to_pylist()]
        inputs = [
            {
                "name": "input",
                "shape": [batch.num_rows, images.height, images.width],
                "datatype": "UINT8",
                "data": data,
            }
        ]
    else:  # tabular: one input per feature column
        features = [c for c in batch.column_names if c != manifest.label]
        inputs = [
            {
                "name": c,
                "shape": [batch.num_rows],
                "datatype": "FP64",
                "data": [float(v) for v in batch.column(c).to_pylist()],
            }
            for c in features
        ]
    return post(url, {"inputs": inputs})


def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return dict(json.loads(answer.read()))
