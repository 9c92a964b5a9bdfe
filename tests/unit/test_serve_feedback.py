"""Ground-truth feedback, live quality and the payload log, without HTTP (the server's use of them is tested in
tests/integration/test_serve.py)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from slipway_trainer.config.serve import PayloadLog as PayloadLogConfig
from slipway_trainer.data.transforms import LabelSpec, TransformSpec
from slipway_trainer.privacy import hash_values
from slipway_trainer.serve import feedback
from slipway_trainer.serve.payloads import PayloadLog, Privacy
from slipway_trainer.serve.shadow import compare, difference

SHOES = TransformSpec(1, "tabular", LabelSpec("kind", "classification", [0, 1, 2], ["Sandal", "Sneaker", "Boot"]))
MPG = TransformSpec(1, "tabular", LabelSpec("mpg", "regression"))


def remembered(*requests: tuple[str, list[Any]]) -> feedback.Predictions:
    predictions = feedback.Predictions(capacity=100)
    for request_id, values in requests:
        predictions.remember(request_id, values, time.time())
    return predictions


def test_feedback_joins_predictions_by_request_id_and_accepts_class_names_or_labels() -> None:
    predictions = remembered(("r1", [0, 1]), ("r2", [2]))
    body = {"feedback": [{"id": "r1", "truth": ["Sandal", 2]}, {"id": "r2", "truth": "2"}]}
    rows = feedback.parse(body, predictions, SHOES, max_rows=10)
    assert [(r.request_id, r.row, r.prediction, r.truth) for r in rows] == [
        ("r1", 0, 0, 0),
        ("r1", 1, 1, 2),
        ("r2", 0, 2, 2),
    ]
    quality = feedback.LiveQuality("classification", window_size=10)
    quality.add(rows)
    metrics = quality.metrics()
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    # class 0: F1 1; class 1: predicted once, never true: 0; class 2: tp 1, fn 1: 2/3
    assert metrics["macro_f1"] == pytest.approx((1 + 0 + 2 / 3) / 3)


@pytest.mark.parametrize(
    ("body", "status", "words", "outcome"),
    [
        ({"id": "nope", "truth": [1]}, 404, "no recent prediction has request id 'nope'", "unknown_id"),
        ({"id": "r1", "truth": [1]}, 400, "had 2 rows but `truth` has 1", "invalid"),
        ({"id": "r1", "truth": [1, "Clog"]}, 400, "truth[1]: 'Clog' is not one of the model's classes", "invalid"),
        ({"id": "r1", "truth": [1, 2], "segment": "a"}, 400, "unknown fields segment", "invalid"),
        (
            {"id": "r1", "truth": [1, 2], "group": ["a", "b", "c"]},
            400,
            "one group for the request or one per row",
            "invalid",
        ),
        ({"id": "r1", "truth": [1, 2], "group": {"sex": "f"}}, 400, "is not a group name", "invalid"),
        ({"feedback": []}, 400, "non-empty list", "invalid"),
        ([1, 2], 400, "must be a JSON object", "invalid"),
        (
            {"feedback": [{"id": "r2", "truth": [1]}, {"id": "r2", "truth": [1]}]},
            409,
            "already has feedback",
            "duplicate",
        ),
    ],
)
def test_bad_feedback_is_refused_whole_with_a_message_naming_the_problem(
    body: Any, status: int, words: str, outcome: str
) -> None:
    predictions = remembered(("r1", [0, 1]), ("r2", [2]))
    with pytest.raises(feedback.FeedbackError) as caught:
        feedback.parse(body, predictions, SHOES, max_rows=10)
    assert (caught.value.status, caught.value.outcome) == (status, outcome)
    assert words in caught.value.message
    # nothing was taken: the same requests still accept good feedback
    assert len(feedback.parse({"id": "r2", "truth": [2]}, predictions, SHOES, max_rows=10)) == 1


def test_feedback_is_taken_once_and_old_predictions_are_forgotten_first() -> None:
    predictions = feedback.Predictions(capacity=2)
    for i in range(3):
        predictions.remember(f"r{i}", [1.0], time.time())
    assert predictions.get("r0") is None and len(predictions) == 2
    feedback.parse({"id": "r2", "truth": 1.5}, predictions, MPG, max_rows=10)
    with pytest.raises(feedback.FeedbackError, match="already has feedback"):
        feedback.parse({"id": "r2", "truth": 1.5}, predictions, MPG, max_rows=10)
    with pytest.raises(feedback.FeedbackError, match="is not a number"):
        feedback.parse({"id": "r1", "truth": "fast"}, predictions, MPG, max_rows=10)


def test_regression_quality_is_mae_and_rmse_over_the_latest_window() -> None:
    quality = feedback.LiveQuality("regression", window_size=3)
    rows = [feedback.Row(f"r{i}", 0, p, t) for i, (p, t) in enumerate([(100, 0), (10, 12), (20, 17), (30, 30)])]
    quality.add(rows)
    assert quality.metrics() == pytest.approx({"mae": 5 / 3, "rmse": math.sqrt(13 / 3)})  # the first row slid out
    assert quality.report()["feedbackRows"] == 4 and quality.report()["rows"] == 3


def test_feedback_naming_a_group_measures_each_group_and_the_most_frequent_ones_only() -> None:
    predictions = remembered(("r1", [0, 1]), ("r2", [2, 2]), ("r3", [1]))
    items = [
        {"id": "r1", "truth": [0, 1], "group": "f"},
        {"id": "r2", "truth": [2, 0], "group": ["m", "f"]},
        {"id": "r3", "truth": [0]},
    ]
    body = {"feedback": items}
    rows = feedback.parse(body, predictions, SHOES, max_rows=10)
    assert [r.group for r in rows] == ["f", "f", "m", "f", None]
    quality = feedback.LiveQuality("classification", window_size=100)
    quality.add(rows)
    groups = quality.groups()
    assert groups["f"]["rows"] == 3 and groups["f"]["metrics"]["accuracy"] == pytest.approx(2 / 3)
    assert groups["m"] == {"rows": 1, "metrics": {"accuracy": 1.0, "macro_f1": 1.0}}
    assert quality.report()["groups"]["f"]["rows"] == 3 and quality.metrics()["accuracy"] == pytest.approx(3 / 5)
    many = feedback.LiveQuality("regression", window_size=1000)
    many.add([feedback.Row(f"r{i}", 0, 1.0, 2.0, f"g{i % 30}") for i in range(30 * 2)] +
             [feedback.Row("x", 0, 1.0, 1.0, "g0")])  # fmt: skip
    assert len(many.groups()) == feedback.MAX_GROUPS and "g0" in many.groups()  # a bounded number of series


def test_the_payload_log_writes_parts_by_date_hashes_and_never_holds_more_than_its_buffer(tmp_path: Path) -> None:
    counted: dict[tuple[str, str], int] = {}

    def count(kind: str, outcome: str, rows: int) -> None:
        counted[kind, outcome] = counted.get((kind, outcome), 0) + rows

    config = PayloadLogConfig(enabled=True, uri=tmp_path.as_uri(), max_buffer_rows=3, flush_interval_seconds=3600)
    privacy = Privacy(dropped=("name",), hashed=("owner",), salt=b"pepper")
    log = PayloadLog(config, "7", privacy, count)
    table = privacy.apply(pa.table({"name": ["ann", "bob"], "owner": ["ann", "bob"], "hp": [90.0, 150.0]}))
    log.log_request("r1", table, [31.5, 18.0], time.time())
    log.log_request("r2", table, [31.5, 18.0], time.time())  # 4 rows > 3: dropped, counted
    log.log_feedback([feedback.Row("r1", 0, 31.5, 30.0, "north")], time.time())
    log.close()  # never started: close flushes
    assert counted == {("payload", "dropped"): 2, ("payload", "written"): 2, ("feedback", "written"): 1}
    payloads = pq.read_table(next((tmp_path / "payloads").glob("date=*/part-*.parquet"))).to_pylist()
    assert [p["request_id"] for p in payloads] == ["r1", "r1"] and payloads[1]["prediction"] == 18.0
    assert "name" not in payloads[0] and payloads[0]["model_version"] == "7"
    assert payloads[0]["owner"] == hash_values(pa.array(["ann"]), b"pepper")[0].as_py() != "ann"
    truth = pq.read_table(next((tmp_path / "feedback").glob("date=*/part-*.parquet"))).to_pylist()
    assert truth[0] | {"time": None} == {
        "request_id": "r1",
        "row": 0,
        "time": None,
        "model_version": "7",
        "prediction": 31.5,
        "truth": 30.0,
        "group": "north",
    }


def test_a_hashed_column_the_server_cannot_hash_is_left_out_of_the_log(tmp_path: Path) -> None:
    config = PayloadLogConfig(enabled=True, uri=tmp_path.as_uri())
    privacy = Privacy(hashed=("owner",), salt=None)
    log = PayloadLog(config, "1", privacy, lambda *_: None)
    log.log_request("r1", privacy.apply(pa.table({"owner": ["ann"], "hp": [90.0]})), [1.0], time.time())
    log.close()
    written = pq.read_table(next(tmp_path.glob("payloads/date=*/part-*.parquet")))
    assert written.column_names == ["request_id", "row", "time", "model_version", "hp", "prediction"]


def test_a_store_that_refuses_writes_is_counted_and_the_log_goes_on(tmp_path: Path) -> None:
    counted: list[tuple[str, str, int]] = []
    blocked = tmp_path / "file"
    blocked.write_text("a file where a folder should be")
    config = PayloadLogConfig(enabled=True, uri=blocked.as_uri())
    log = PayloadLog(config, "1", Privacy(), lambda *a: counted.append(a))
    log.log_request("r1", pa.table({"hp": [90.0]}), [1.0], time.time())
    log.flush()
    log.log_request("r2", pa.table({"hp": [91.0]}), [1.0], time.time())
    log.close()
    assert counted == [("payload", "failed", 1), ("payload", "failed", 1)]


def test_a_shadows_answers_are_compared_row_by_row() -> None:
    assert compare("classification", [1, 2, "a"], [1, 3, "a"]) == (3, 2, 0.0)
    rows, agreed, summed = compare("regression", [10.0, 0.0, -2.0], [12.0, 0.0, 2.0])
    assert (rows, agreed) == (3, 0) and summed == pytest.approx(2 / 11 + 0 + 2)  # symmetric: at most 2 per row
    assert difference(0.0, 0.0) == 0.0 and difference(1.0, 1.0) == 0.0
