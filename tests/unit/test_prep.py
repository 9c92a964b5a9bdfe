"""Data preparation on real data: the built-in sets, real CSV/JSONL/Parquet/image files, bad input."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from slipway_trainer.config.prep import PrepConfig
from slipway_trainer.data import prep as prep_module
from slipway_trainer.data import workload
from slipway_trainer.data.transforms import TransformSpec


def prep(tmp_path: Path, spec: dict[str, Any], name: str = "out") -> tuple[dict[str, Any], Path]:
    out = tmp_path / name
    config = PrepConfig.model_validate({"name": name, "outputUri": out.as_uri(), "spec": spec})
    return workload.run(config), out


def manifest_of(out: Path) -> dict[str, Any]:
    return json.loads((out / "manifest.json").read_text())


def split_table(out: Path, split: str) -> pa.Table:
    manifest = manifest_of(out)
    return pq.read_table(out / manifest["splits"][split])


def write_csv(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


MESSY_CSV = """\
name,email,age,income,city,bought
ann,ann@example.org,34,52000,paris,yes
bob,bob@example.org,41,?,lyon,no
cyd,cyd@example.org,,61000,paris,yes
ann,ann@example.org,34,52000,paris,yes
dan,dan@example.org,29,48000,,no
eve,eve@example.org,52,75000,nice,yes
fay,fay@example.org,38,58000,lyon,
gus,gus@example.org,45,67000,paris,no
hal,hal@example.org,31,50000,nice,yes
ivy,ivy@example.org,27,45000,lyon,no
jon,jon@example.org,60,82000,paris,yes
kim,kim@example.org,33,51000,nice,no
"""


def test_fashion_mnist_is_split_stratified_with_images_stored_as_raw_pixels(tmp_path: Path) -> None:
    result, out = prep(
        tmp_path,
        {
            "source": {"uri": "builtin://fashion-mnist", "format": "idx"},
            "label": "label",
            "transforms": [{"type": "normalize"}],
            "split": {"train": 0.8, "validation": 0.1, "test": 0.1, "stratifyBy": "label", "seed": 42},
        },
    )
    assert result["status"] == "Succeeded", result
    assert result["rows"] == {"train": 56000, "validation": 7000, "test": 7000, "total": 70000}
    manifest = manifest_of(out)
    assert manifest["task"] == "classification"
    assert manifest["classes"] == list(range(10))
    assert manifest["classNames"][0] == "T-shirt/top"
    # Stratified: every class is 7,000 images, split exactly 5,600 / 700 / 700.
    assert set(manifest["classBalance"]["train"].values()) == {5600}
    assert set(manifest["classBalance"]["test"].values()) == {700}
    assert manifest["images"]["height"] == 28 and manifest["images"]["channels"] == 1
    test = split_table(out, "test")
    assert test.schema.field("image").type == pa.binary()
    assert {len(b) for b in test.column("image").to_pylist()[:100]} == {784}
    transform = TransformSpec.from_json(manifest["transform"])
    x = transform.features(test.slice(0, 32))
    assert x.shape == (32, 1, 28, 28) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0 and x.max() > 0.9
    pixels = manifest["profile"]["features"]["image"]
    assert 0.2 < pixels["pixelMean"][0] < 0.4  # Fashion-MNIST's mean intensity is about 0.29
    progress = json.loads((out / "_run" / "progress.json").read_text())
    assert progress["phase"] == "Succeeded" and progress["rowsRead"] == 70000


def test_auto_mpg_fits_transforms_on_the_train_split_only(tmp_path: Path) -> None:
    result, out = prep(
        tmp_path,
        {
            "source": {"uri": "builtin://vega/cars"},
            "label": "Miles_per_Gallon",
            "cleaning": {"missing": {"default": "drop", "columns": {"Horsepower": "median"}}},
            "transforms": [
                {"type": "oneHot", "columns": ["Origin"]},
                {"type": "standardize", "columns": ["Weight_in_lbs", "Horsepower"]},
            ],
            "privacy": {"dropColumns": ["Name"]},
            "split": {"train": 0.7, "validation": 0.15, "test": 0.15, "seed": 7},
        },
    )
    assert result["status"] == "Succeeded", result
    manifest = manifest_of(out)
    assert manifest["task"] == "regression"
    assert manifest["dropped"] == {"missingLabel": 8}  # the 8 cars without a published MPG
    assert result["rows"]["total"] == 398
    train = split_table(out, "train")
    everything = pa.concat_tables([split_table(out, s) for s in ("train", "validation", "test")])
    assert "Name" not in train.column_names
    columns = {c["name"]: c for c in manifest["transform"]["columns"]}
    weight = columns["Weight_in_lbs"]["scale"]
    train_weight = train.column("Weight_in_lbs").to_numpy()
    assert weight["mean"] == pytest.approx(train_weight.mean())
    assert weight["mean"] != pytest.approx(everything.column("Weight_in_lbs").to_numpy().mean())
    hp = np.array(train.column("Horsepower").to_pylist(), dtype=float)
    assert columns["Horsepower"]["fill"] == pytest.approx(np.nanmedian(hp))
    assert columns["Origin"]["encode"]["categories"] == ["USA", "Japan", "Europe"]
    spec = TransformSpec.from_json(manifest["transform"])
    assert spec.feature_names()[-3:] == ["Origin=USA", "Origin=Japan", "Origin=Europe"]
    x = spec.features(split_table(out, "test"))
    assert x.shape == (result["rows"]["test"], 9) and not np.isnan(x).any()
    assert manifest["profile"]["features"]["Origin"]["frequencies"]["USA"] > 0.5


def test_messy_csv_rows_are_dropped_and_counted_by_reason(tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "raw" / "people.csv", MESSY_CSV)
    result, out = prep(
        tmp_path,
        {
            "source": {"uri": csv.as_uri()},
            "label": "bought",
            "cleaning": {"missing": {"default": "drop", "columns": {"age": "median", "city": "mode"}}},
            "privacy": {"dropColumns": ["name", "email"]},
            "split": {"train": 0.6, "validation": 0.2, "test": 0.2, "seed": 1},
        },
    )
    assert result["status"] == "Succeeded", result
    assert result["droppedRows"] == {"duplicate": 1, "invalidValue:income": 1, "missingLabel": 1}
    assert result["rows"]["total"] == 12 - 3
    manifest = manifest_of(out)
    assert [f["name"] for f in manifest["schema"]] == ["age", "income", "city", "bought"]
    assert (
        dict(zip([f["name"] for f in manifest["schema"]], [f["type"] for f in manifest["schema"]], strict=True))[
            "income"
        ]
        == "double"
    )  # "?" made the column text; it is read as numbers


def test_a_folder_of_jsonl_files_is_one_dataset(tmp_path: Path) -> None:
    rows = [{"x": i, "y": i % 3, "group": "ab"[i % 2]} for i in range(60)]
    for part in range(3):
        lines = "\n".join(json.dumps(r) for r in rows[part * 20 : (part + 1) * 20])
        write_csv(tmp_path / "jsonl" / f"part-{part}.jsonl", lines + "\n")
    result, _ = prep(tmp_path, {"source": {"uri": (tmp_path / "jsonl").as_uri()}, "label": "y"})
    assert result["status"] == "Succeeded", result
    assert result["rows"]["total"] == 60


def test_a_glob_of_parquet_files_is_one_dataset(tmp_path: Path) -> None:
    for part in range(2):
        table = pa.table({"x": np.arange(50) + part * 50, "y": np.arange(50) % 2})
        (tmp_path / "pq").mkdir(exist_ok=True)
        pq.write_table(table, tmp_path / "pq" / f"data-{part}.parquet")
    result, _ = prep(tmp_path, {"source": {"uri": (tmp_path / "pq").as_uri() + "/data-*.parquet"}, "label": "y"})
    assert result["status"] == "Succeeded", result
    assert result["rows"]["total"] == 100


def test_image_folder_resizes_and_drops_unreadable_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        folder = tmp_path / "images" / cls
        folder.mkdir(parents=True)
        for i in range(6):
            size = (20, 16) if i % 2 else (24, 24)
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (tmp_path / "images" / "dog" / "broken.jpg").write_bytes(b"not a jpeg at all")
    result, out = prep(
        tmp_path,
        {
            "source": {"uri": (tmp_path / "images").as_uri(), "format": "imagefolder"},
            "transforms": [{"type": "resize", "size": [12, 10]}, {"type": "standardize"}],
            "split": {"train": 0.5, "validation": 0.25, "test": 0.25, "stratifyBy": "label"},
        },
    )
    assert result["status"] == "Succeeded", result
    assert result["droppedRows"] == {"unreadableImage": 1}
    manifest = manifest_of(out)
    assert manifest["classes"] == ["cat", "dog"]
    assert (manifest["images"]["height"], manifest["images"]["width"], manifest["images"]["channels"]) == (12, 10, 3)
    spec = TransformSpec.from_json(manifest["transform"])
    assert spec.image is not None and spec.image.mean is not None and len(spec.image.mean) == 3
    x = spec.features(split_table(out, "train"))
    assert x.shape == (6, 3, 12, 10)
    assert abs(float(x.mean())) < 0.2  # standardized with the train split's own statistics


def test_hashed_columns_use_the_salt_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    csv = write_csv(tmp_path / "raw.csv", MESSY_CSV)
    spec = {
        "source": {"uri": csv.as_uri()},
        "label": "bought",
        "privacy": {"hashColumns": ["email"], "dropColumns": ["name"]},
        "cleaning": {"missing": {"default": "mode"}},
    }
    failed, out = prep(tmp_path, spec, name="nosalt")
    assert failed["status"] == "Failed" and failed["reason"] == "SaltMissing"
    assert "SLIPWAY_HASH_SALT" in failed["message"]
    assert not (out / "manifest.json").exists()
    monkeypatch.setenv("SLIPWAY_HASH_SALT", "pepper")
    result, out = prep(tmp_path, spec, name="salted")
    assert result["status"] == "Succeeded", result
    emails = pa.concat_tables([split_table(out, s) for s in ("train", "validation", "test")]).column("email")
    assert hashlib.sha256(b"pepperann@example.org").hexdigest() in emails.to_pylist()
    assert not any("@" in e for e in emails.to_pylist())
    assert manifest_of(out)["privacy"]["hashedColumns"] == ["email"]


def test_same_data_and_config_give_the_same_fingerprint_and_split(tmp_path: Path) -> None:
    spec = {"source": {"uri": "builtin://sklearn/iris"}, "split": {"stratifyBy": "target", "seed": 3}}
    first, out1 = prep(tmp_path, spec, name="a")
    second, out2 = prep(tmp_path, spec, name="b")
    assert first["fingerprint"] == second["fingerprint"]
    assert split_table(out1, "test").equals(split_table(out2, "test"))
    other_seed, _ = prep(tmp_path, {**spec, "split": {"stratifyBy": "target", "seed": 4}}, name="c")
    assert other_seed["fingerprint"] != first["fingerprint"]


def test_results_do_not_depend_on_the_batch_size(tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "people.csv", MESSY_CSV)
    spec = {
        "source": {"uri": csv.as_uri()},
        "label": "bought",
        "privacy": {"dropColumns": ["name", "email"]},
        "cleaning": {"missing": {"default": "mode"}},
    }
    results = []
    for rows in (2, 5, 1000):  # the duplicate of row 1 (row 4) falls in another batch for 2 and 3
        config = PrepConfig.model_validate(
            {"outputUri": (tmp_path / f"b{rows}").as_uri(), "batchRows": rows, "spec": spec}
        )
        results.append(workload.run(config))
    assert [r["droppedRows"] for r in results] == [{"duplicate": 1, "invalidValue:income": 1, "missingLabel": 1}] * 3
    assert len({r["fingerprint"] for r in results}) == 1


def test_any_change_in_the_data_changes_the_fingerprint(tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "v1.csv", MESSY_CSV)
    changed = write_csv(tmp_path / "v2.csv", MESSY_CSV.replace("82000", "82001"))
    spec = {"label": "bought", "privacy": {"dropColumns": ["name", "email"]}}
    a, _ = prep(tmp_path, {**spec, "source": {"uri": csv.as_uri()}}, name="a")
    b, _ = prep(tmp_path, {**spec, "source": {"uri": changed.as_uri()}}, name="b")
    assert a["status"] == b["status"] == "Succeeded"
    assert a["fingerprint"] != b["fingerprint"]


def test_a_second_run_of_the_same_config_returns_the_first_result(tmp_path: Path) -> None:
    spec = {"source": {"uri": "builtin://sklearn/wine"}}
    first, _ = prep(tmp_path, spec)
    second, _ = prep(tmp_path, spec)
    assert {k: v for k, v in second.items() if k != "reusedAt"} == first and second["reusedAt"] >= first["finishedAt"]
    assert first["task"] == "classification" and first["rows"]["total"] == 178


def test_sklearn_regression_set_keeps_publisher_column_names(tmp_path: Path) -> None:
    result, out = prep(tmp_path, {"source": {"uri": "builtin://sklearn/diabetes"}})
    assert result["status"] == "Succeeded" and result["task"] == "regression"
    names = [f["name"] for f in manifest_of(out)["schema"]]
    assert names[:3] == ["age", "sex", "bmi"] and names[-1] == "target"


def test_the_command_line_follows_the_workload_contract(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps({"outputUri": (tmp_path / "o").as_uri(), "spec": {"source": {"uri": "builtin://sklearn/iris"}}})
    )
    done = subprocess.run(
        [sys.executable, "-m", "slipway_trainer", "prep", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "Succeeded"
    result = json.loads((tmp_path / "o" / "_run" / "result.json").read_text())
    assert result["rows"]["total"] == 149  # iris has one duplicated row
    assert result["droppedRows"] == {"duplicate": 1}


def test_the_prep_process_leaves_pandas_unloaded_uses_the_c_allocator_and_writes_numbers_in_their_encodings(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(0)
    source = tmp_path / "rows.parquet"
    pq.write_table(
        pa.table(
            {
                "x": pa.array(rng.normal(size=3000)),
                "n": pa.array(rng.integers(0, 100, 3000)),
                "city": pa.array(rng.choice(["paris", "lyon", None], 3000)),
                "y": pa.array(rng.integers(0, 2, 3000)),
            }
        ),
        source,
    )
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"outputUri": (tmp_path / "o").as_uri(), "spec": {"source": {"uri": source.as_uri()},
                                  "label": "y", "cleaning": {"missing": {"default": "mode"}}}}))  # fmt: skip
    script = f"""
import json, sys
from slipway_trainer.__main__ import main
code = main(["prep", "--config", {str(config)!r}])
import pyarrow as pa
seen = {{"code": code, "pandas": "pandas" in sys.modules, "pool": pa.default_memory_pool().backend_name}}
table = pa.Table.from_pandas(pa.table({{"a": [1, 2]}}).to_pandas())  # asked for by name, pandas still works
seen["roundTrip"] = table.column("a").to_pylist()
print(json.dumps(seen))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env={
        k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {"code": 0, "pandas": False, "pool": "system", "roundTrip": [1, 2]}
    train = pq.ParquetFile(tmp_path / "o" / manifest_of(tmp_path / "o")["splits"]["train"] / "part-00000.parquet")
    encodings = {train.schema_arrow.names[i]: train.metadata.row_group(0).column(i).encodings for i in range(4)}
    assert "BYTE_STREAM_SPLIT" in encodings["x"] and "DELTA_BINARY_PACKED" in encodings["n"]
    assert "RLE_DICTIONARY" in encodings["city"]
    assert train.read().column("x").type == pa.float64()


def test_a_regression_labels_balance_is_binned_when_it_has_many_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prep_module, "MAX_BALANCE_VALUES", 10)
    result, out = prep(tmp_path, {"source": {"uri": "builtin://sklearn/diabetes"}})
    assert result["status"] == "Succeeded" and result["task"] == "regression"
    balance = manifest_of(out)["classBalance"]
    for split in ("train", "validation", "test"):
        assert 1 < len(balance[split]) <= 10 and sum(balance[split].values()) == result["rows"][split]
        assert all(25 <= float(key) <= 346 for key in balance[split])  # bin middles within the target's range
    _, out = prep(tmp_path, {"source": {"uri": "builtin://sklearn/wine"}}, name="wine")
    assert manifest_of(out)["classBalance"]["train"].keys() == {"0", "1", "2"}  # classes are never binned


BAD_INPUT = [
    (
        "missing-file",
        lambda p: {"source": {"uri": (p / "nope.csv").as_uri()}, "label": "y"},
        "SourceNotFound",
        "no such file or folder",
    ),
    (
        "unreadable-format",
        lambda p: {"source": {"uri": write_csv(p / "bad.parquet", "not parquet").as_uri()}, "label": "y"},
        "UnreadableSource",
        "cannot read as parquet",
    ),
    (
        "label-not-a-column",
        lambda p: {"source": {"uri": write_csv(p / "d.csv", MESSY_CSV).as_uri()}, "label": "price"},
        "LabelNotFound",
        "label 'price' is not a column of",
    ),
    (
        "class-too-small-to-stratify",
        lambda p: {
            "source": {
                "uri": write_csv(p / "s.csv", "x,y\n" + "".join(f"{i},a\n" for i in range(20)) + "99,b\n").as_uri()
            },
            "label": "y",
            "split": {"stratifyBy": "y"},
        },
        "StratifiedSplitEmpty",
        "class 'b' has 1 rows",
    ),
    (
        "dropping-the-label",
        lambda p: {"source": {"uri": "builtin://sklearn/iris"}, "privacy": {"dropColumns": ["target"]}},
        "InvalidPrivacy",
        "the label 'target' cannot be dropped",
    ),
    (
        "unknown-builtin",
        lambda p: {"source": {"uri": "builtin://sklearn/titanic"}},
        "UnknownBuiltin",
        "scikit-learn sets are digits, iris",
    ),
    (
        "transform-on-missing-column",
        lambda p: {
            "source": {"uri": "builtin://sklearn/iris"},
            "transforms": [{"type": "standardize", "columns": ["petal size"]}],
        },
        "InvalidTransform",
        "names column 'petal size'",
    ),
]


@pytest.mark.parametrize(("case", "spec", "reason", "message"), BAD_INPUT, ids=[b[0] for b in BAD_INPUT])
def test_bad_input_fails_clearly_and_leaves_nothing_that_looks_complete(
    tmp_path: Path, case: str, spec: Any, reason: str, message: str
) -> None:
    result, out = prep(tmp_path, spec(tmp_path))
    assert result["status"] == "Failed"
    assert result["reason"] == reason, result
    assert message in result["message"], result["message"]
    assert not (out / "manifest.json").exists()
    assert json.loads((out / "_run" / "result.json").read_text())["status"] == "Failed"


def test_a_corrupt_image_is_counted_not_fatal_but_an_all_corrupt_folder_fails(tmp_path: Path) -> None:
    folder = tmp_path / "imgs" / "only"
    folder.mkdir(parents=True)
    (folder / "a.png").write_bytes(b"\x89PNG garbage")
    result, _ = prep(tmp_path, {"source": {"uri": (tmp_path / "imgs").as_uri(), "format": "imagefolder"}})
    assert result["status"] == "Failed" and result["reason"] == "NoRowsLeft"
    assert "unreadableImage" in result["message"]


def test_idx_files_from_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "idx"
    folder.mkdir()
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (folder / name).write_bytes((Path("/usr/share/datasets/fashion-mnist") / name).read_bytes())
    result, out = prep(tmp_path, {"source": {"uri": folder.as_uri()}, "sample": {"rows": 2000, "seed": 1}})
    assert result["status"] == "Succeeded", result
    assert result["rows"]["total"] == 2000
    assert manifest_of(out)["images"]["height"] == 28


def test_the_transform_spec_refuses_input_it_cannot_turn_into_features(tmp_path: Path) -> None:
    from slipway_trainer.data.transforms import TransformError

    _, out = prep(
        tmp_path,
        {
            "source": {"uri": "builtin://vega/cars"},
            "cleaning": {"missing": {"default": "drop", "columns": {"Horsepower": "median"}}},
            "privacy": {"dropColumns": ["Name"]},
        },
    )
    spec = TransformSpec.from_json(manifest_of(out)["transform"])
    row = {
        "Cylinders": [4],
        "Displacement": [97.0],
        "Horsepower": [None],
        "Weight_in_lbs": [2130],
        "Acceleration": [14.5],
        "Year": pa.array([0], pa.timestamp("s")),
        "Origin": ["Mars"],
    }
    x = spec.features(row)  # Horsepower is imputed; an unseen Origin encodes as zeros
    assert x.shape == (1, len(spec.feature_names())) and not np.isnan(x).any()
    with pytest.raises(TransformError, match="column 'Origin' is missing"):
        spec.features({k: v for k, v in row.items() if k != "Origin"})
    with pytest.raises(TransformError, match="column 'Weight_in_lbs' has a missing value"):
        spec.features({**row, "Weight_in_lbs": [None]})


def test_a_payload_log_joined_with_its_feedback_is_a_source_of_new_training_rows(tmp_path: Path) -> None:
    """What a ModelDeployment's server logged (serve/payloads.py), read back as a source: only the rows that got a
    truth, with the logged inputs and `truth` as the label; the server's own columns are not features."""
    import time

    from slipway_trainer.config.serve import PayloadLog as PayloadLogConfig
    from slipway_trainer.serve.feedback import Row
    from slipway_trainer.serve.payloads import PayloadLog, Privacy

    log_uri = tmp_path / "payloads" / "ml" / "mpg"
    log = PayloadLog(PayloadLogConfig(enabled=True, uri=log_uri.as_uri()), "a1b2c3d4", Privacy(), lambda *_: None)
    rng = np.random.default_rng(0)
    for i in range(60):
        hp = float(rng.uniform(50, 200))
        table = pa.table({"Horsepower": [hp], "Origin": ["USA" if i % 2 else "Japan"]})
        log.log_request(f"r{i}", table, [40 - hp / 10], time.time())
        if i % 3:  # a third of the requests never got feedback
            log.log_feedback([Row(f"r{i}", 0, 40 - hp / 10, 42 - hp / 10)], time.time())
    log.close()
    result, out = prep(tmp_path, {"source": {"uri": log_uri.as_uri(), "format": "payloads"}, "label": "truth"})
    assert result["status"] == "Succeeded", result
    assert sum(result["rows"][s] for s in ("train", "validation", "test")) == 40
    train = split_table(out, "train")
    assert set(train.column_names) == {"Horsepower", "Origin", "truth"}
    empty = tmp_path / "no-feedback"
    PayloadLog(PayloadLogConfig(enabled=True, uri=empty.as_uri()), "1", Privacy(), lambda *_: None).close()
    (empty / "payloads").mkdir(parents=True)
    failed, _ = prep(tmp_path, {"source": {"uri": empty.as_uri(), "format": "payloads"}, "label": "truth"}, "out2")
    assert failed["status"] == "Failed" and "payloadLog enabled" in failed["message"], failed


def test_payloads_added_to_the_original_source_join_its_rows_with_the_privacy_rules_applied_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The original CSV plus a deployment's payload log (`extraSources`): the log's truth fills the label column,
    its inputs take the CSV's types, a column it lacks is missing; the column the server hashed with the dataset's
    salt is not hashed again, so a value has one hash whichever source it came from."""
    import time

    from slipway_trainer.config.serve import PayloadLog as PayloadLogConfig
    from slipway_trainer.privacy import hash_values
    from slipway_trainer.serve.feedback import Row
    from slipway_trainer.serve.payloads import PayloadLog, Privacy

    monkeypatch.setenv("SLIPWAY_HASH_SALT", "pepper")
    lines = ["Name,Horsepower,Weight,Origin,mpg"]
    lines += [f"car{i},{60 + i},{2000 + 10 * i},{'USA' if i % 2 else 'Japan'},{40 - i / 5}" for i in range(50)]
    source = write_csv(tmp_path / "cars" / "cars.csv", "\n".join(lines) + "\n")
    log_uri = tmp_path / "payloads"
    privacy = Privacy(dropped=("Name",), hashed=("Origin",), salt=b"pepper")
    log = PayloadLog(PayloadLogConfig(enabled=True, uri=log_uri.as_uri()), "r1", privacy, lambda *_: None)
    for i in range(20):  # what clients sent (no Weight: the log has only what the model takes), as the server logs it
        sent = privacy.apply(
            pa.table({"Name": ["x"], "Horsepower": [100 + i], "Origin": ["USA" if i % 2 else "Japan"]})
        )
        log.log_request(f"q{i}", sent, [30.0], time.time())
        log.log_feedback([Row(f"q{i}", 0, 30.0, 20 + i / 4)], time.time())
    log.close()
    spec = {
        "source": {"uri": source.as_uri(), "format": "csv"},
        "extraSources": [{"uri": log_uri.as_uri(), "format": "payloads"}],
        "label": "mpg",
        "cleaning": {"missing": {"columns": {"Weight": "median"}}},
        "privacy": {"dropColumns": ["Name"], "hashColumns": ["Origin"]},
    }
    result, out = prep(tmp_path, spec)
    assert result["status"] == "Succeeded", result
    assert result["rows"]["total"] == 70
    rows = pa.concat_tables([split_table(out, s) for s in ("train", "validation", "test")])
    assert set(rows.column_names) == {"Horsepower", "Weight", "Origin", "mpg"}
    expected = set(hash_values(pa.array(["USA", "Japan"]), b"pepper").to_pylist())
    assert set(rows.column("Origin").to_pylist()) == expected  # one hash per value: none hashed twice
    assert sorted(v for v in rows.column("mpg").to_pylist() if v < 25.0)[:2] == [20.0, 20.25]  # truths as labels

    only_csv, _ = prep(tmp_path, {k: v for k, v in spec.items() if k != "extraSources"}, "plain")
    assert only_csv["rows"]["total"] == 50 and only_csv["fingerprint"] != result["fingerprint"]


def _image_log(folder: Path, requests: int, seed: int) -> None:
    """What the server of a 28x28 grayscale classifier logs: pixels, predictions, and the truth sent later."""
    import time

    from slipway_trainer.artifacts import PAYLOAD_CLASS_NAMES, PAYLOAD_IMAGE
    from slipway_trainer.config.serve import PayloadLog as PayloadLogConfig
    from slipway_trainer.serve.feedback import Row
    from slipway_trainer.serve.payloads import PayloadLog, Privacy

    layout = {PAYLOAD_IMAGE: "image:28,28,1", PAYLOAD_CLASS_NAMES: json.dumps(["Shirt", "Sneaker", "Bag"])}
    log = PayloadLog(PayloadLogConfig(enabled=True, uri=folder.as_uri()), "r1", Privacy(), lambda *_: None, layout)
    rng = np.random.default_rng(seed)
    for i in range(requests):
        pixels = rng.integers(0, 255, (2, 784), dtype=np.uint8)
        log.log_request(f"q{seed}-{i}", pa.table({"image": [row.tobytes() for row in pixels]}), [0, 1], time.time())
        log.log_feedback([Row(f"q{seed}-{i}", 0, 0, i % 3), Row(f"q{seed}-{i}", 1, 1, (i + 1) % 3)], time.time())
    log.close()


def test_an_image_models_payloads_are_a_source_of_images_with_their_shape_and_class_names(tmp_path: Path) -> None:
    first, second = tmp_path / "log-a", tmp_path / "log-b"
    _image_log(first, 30, seed=1)
    _image_log(second, 15, seed=2)
    spec = {"source": {"uri": first.as_uri(), "format": "payloads"}, "label": "truth",
            "extraSources": [{"uri": second.as_uri(), "format": "payloads"}]}  # fmt: skip
    result, out = prep(tmp_path, spec)
    assert result["status"] == "Succeeded", result
    assert result["rows"]["total"] == 90  # 45 requests of 2 images, every one with its truth
    manifest = manifest_of(out)
    assert manifest["images"]["height"] == 28 and manifest["images"]["channels"] == 1
    assert manifest["classNames"] == ["Shirt", "Sneaker", "Bag"] and manifest["task"] == "classification"
    assert len(split_table(out, "train").column("image")[0].as_py()) == 784

    cars = write_csv(tmp_path / "cars.csv", "hp,mpg\n90,30\n150,18\n")
    mixed = {"source": {"uri": cars.as_uri()}, "label": "mpg", "extraSources": [spec["source"]]}
    failed, _ = prep(tmp_path, mixed, "mixed")
    assert failed["status"] == "Failed" and "its rows are (28, 28, 1), the source's are tabular rows" in failed[
        "message"], failed  # fmt: skip


def test_a_refresh_writes_a_new_version_only_when_the_sources_content_changed(tmp_path: Path) -> None:
    source = write_csv(tmp_path / "src" / "people.csv", MESSY_CSV)
    spec = {"source": {"uri": source.parent.as_uri(), "format": "csv"}, "label": "bought"}
    out = tmp_path / "out"

    def refresh(round_: int) -> dict[str, Any]:
        config = PrepConfig.model_validate(
            {
                "name": "people",
                "outputUri": out.as_uri(),
                "artifactUri": (out / "_run" / f"r{round_}").as_uri(),
                "spec": spec,
                "refresh": round_ > 0,
            }
        )
        return workload.run(config)

    first = refresh(0)
    assert first["status"] == "Succeeded" and first["changed"] is True
    assert manifest_of(out)["source"]["digest"].startswith("sha256:")

    # The same bytes, touched and rewritten: nothing is read again, the version stays.
    source.write_text(MESSY_CSV)
    same = refresh(1)
    assert same["changed"] is False and same["fingerprint"] == first["fingerprint"]
    assert same["version"] == first["version"] and same["rows"] == first["rows"]
    progress = json.loads((out / "_run" / "r1" / "progress.json").read_text())
    assert "rowsRead" not in progress, progress  # the source was not read again

    # New rows appended (a second file in the folder, as a nightly export would add): a new version beside the old.
    write_csv(
        source.parent / "more.csv",
        "name,email,age,income,city,bought\nlea,lea@x.org,44,61000,lyon,yes\nmax,max@x.org,39,57000,nice,no\n",
    )
    grown = refresh(2)
    assert grown.get("changed") is True, (grown.get("reason"), grown.get("message"))
    assert grown["fingerprint"] != first["fingerprint"]
    assert grown["rows"]["total"] == first["rows"]["total"] + 2
    assert (out / first["version"] / "manifest.json").exists() and (out / grown["version"] / "manifest.json").exists()
    assert manifest_of(out)["version"] == grown["version"]
