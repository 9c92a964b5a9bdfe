"""Ground-truth feedback and live quality, without HTTP.

The server remembers the predictions of its latest requests by request id (`Predictions`, bounded: the oldest
are forgotten first). A client that learns the truth later sends it back (`POST /v2/models/<name>/feedback`,
a Slipway extension of the Open Inference Protocol v2):

    {"id": "<request id>", "truth": [<one label or value per row of that request>]}
    {"feedback": [{"id": "r1", "truth": ["Sneaker"]}, {"id": "r2", "truth": [3, 7]}]}
    {"id": "r3", "truth": [24.5], "group": "female"}      (or one group per row: "group": ["a", "b"])

A `group` names the sensitive group the request's rows belong to (a value the model may never see): live quality
is then also measured per group, and the largest gap between groups is a rollout gate.

`parse` checks a body against what is remembered and refuses it whole (`FeedbackError`: an HTTP status and a
message naming the problem) or returns the rows to count; `LiveQuality` keeps a sliding window of (prediction,
truth) rows and measures accuracy and macro F1 (classification) or MAE and RMSE (regression).
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from slipway_trainer.data.transforms import TransformSpec

MAX_IDS_SHOWN = 5
MAX_GROUP_CHARS = 64
MAX_GROUPS = 20  # groups measured (the most frequent in the window): a bounded number of metric series


class FeedbackError(Exception):
    def __init__(self, status: int, message: str, outcome: str, none_known: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.outcome = outcome  # the label of slipway_feedback_total it is counted under
        self.none_known = none_known  # no request the body names was answered here: another replica may know them


@dataclass
class Remembered:
    predictions: list[Any]  # one label (classification) or value (regression) per row
    at: float
    answered: bool = False  # feedback already received


class Predictions:
    """The predictions of the latest `capacity` requests, by request id."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._by_id: OrderedDict[str, Remembered] = OrderedDict()

    def remember(self, request_id: str, predictions: list[Any], at: float) -> None:
        self._by_id[request_id] = Remembered(list(predictions), at)
        self._by_id.move_to_end(request_id)
        while len(self._by_id) > self.capacity:
            self._by_id.popitem(last=False)

    def get(self, request_id: str) -> Remembered | None:
        return self._by_id.get(request_id)

    def __len__(self) -> int:
        return len(self._by_id)


@dataclass(frozen=True)
class Row:
    request_id: str
    row: int
    prediction: Any
    truth: Any
    group: str | None = None


def parse(body: Any, predictions: Predictions, transform: TransformSpec, max_rows: int) -> list[Row]:
    """The feedback rows of one body, every item checked before any is counted (a bad item refuses the body)."""
    if not isinstance(body, dict):
        raise FeedbackError(400, 'feedback must be a JSON object: {"id": ..., "truth": [...]}', "invalid")
    items = body.get("feedback") if "feedback" in body else [body]
    if not isinstance(items, list) or not items:
        raise FeedbackError(400, "`feedback` must be a non-empty list of {id, truth}", "invalid")
    rows: list[Row] = []
    unknown: list[str] = []
    for index, item in enumerate(items):
        where = f"feedback[{index}]" if "feedback" in body else "the feedback"
        request_id, truth, groups = _item(item, where)
        remembered = predictions.get(request_id)
        if remembered is None:
            unknown.append(request_id)
            continue
        if remembered.answered or any(r.request_id == request_id for r in rows):
            raise FeedbackError(409, f"{where}: request {request_id!r} already has feedback", "duplicate")
        if len(truth) != len(remembered.predictions):
            raise FeedbackError(
                400,
                f"{where}: request {request_id!r} had {len(remembered.predictions)} rows but `truth` has {len(truth)}",
                "invalid",
            )
        if groups is not None and len(groups) not in (1, len(truth)):
            raise FeedbackError(
                400, f"{where}.group: one group for the request or one per row ({len(truth)}), not {len(groups)}",
                "invalid",
            )  # fmt: skip
        values = [_truth(v, transform, f"{where}.truth[{i}]") for i, v in enumerate(truth)]
        named = (groups * len(values) if len(groups) == 1 else groups) if groups is not None else [None] * len(values)
        triples = zip(remembered.predictions, values, named, strict=True)
        rows.extend(Row(request_id, i, p, t, g) for i, (p, t, g) in enumerate(triples))
        if len(rows) > max_rows:
            raise FeedbackError(
                413, f"more than {max_rows} feedback rows in one body (server.limits.maxRowsPerRequest)", "invalid"
            )
    if unknown:
        shown = ", ".join(repr(i) for i in unknown[:MAX_IDS_SHOWN]) + (" ..." if len(unknown) > MAX_IDS_SHOWN else "")
        raise FeedbackError(
            404,
            f"no recent prediction has request id {shown}: feedback must name the `id` of an infer request or "
            f"of its answer, among the last {predictions.capacity} requests (monitoring.quality.maxPredictions)",
            "unknown_id",
            none_known=not rows,
        )
    for request_id in {r.request_id for r in rows}:
        remembered = predictions.get(request_id)
        assert remembered is not None
        remembered.answered = True
    return rows


def _item(item: Any, where: str) -> tuple[str, list[Any], list[str] | None]:
    if not isinstance(item, dict):
        raise FeedbackError(400, f"{where} must be an object {{id, truth}}", "invalid")
    extra = sorted(set(item) - {"id", "truth", "group"})
    if extra:
        raise FeedbackError(
            400, f"{where} has unknown fields {', '.join(extra)} (it takes id, truth and group)", "invalid"
        )
    request_id, truth = item.get("id"), item.get("truth")
    if not isinstance(request_id, str | int) or isinstance(request_id, bool) or str(request_id) == "":
        raise FeedbackError(400, f"{where}.id must be the request id (a non-empty string)", "invalid")
    if not isinstance(truth, list):
        truth = [truth]
    if not truth:
        raise FeedbackError(400, f"{where}.truth must hold one true label or value per row of the request", "invalid")
    return str(request_id), truth, _groups(item.get("group"), where)


def _groups(group: Any, where: str) -> list[str] | None:
    """The `group` of a feedback item: None, or one group name (a short string or number) per item or per row."""
    if group is None:
        return None
    names = group if isinstance(group, list) else [group]
    for name in names:
        if isinstance(name, bool) or not isinstance(name, str | int) or not 0 < len(str(name)) <= MAX_GROUP_CHARS:
            raise FeedbackError(
                400, f"{where}.group: {name!r} is not a group name (a string of 1 to {MAX_GROUP_CHARS} characters)",
                "invalid",
            )  # fmt: skip
    return [str(n) for n in names] or None


def _truth(value: Any, transform: TransformSpec, where: str) -> Any:
    label = transform.label
    if label is not None and label.task == "classification":
        if value in label.classes and not isinstance(value, bool):
            return label.classes[label.classes.index(value)]  # as the model names it (3.0 -> 3)
        if isinstance(value, str) and value in label.class_names:
            return label.classes[label.class_names.index(value)]
        if isinstance(value, str) and value.lstrip("-").isdigit() and int(value) in label.classes:
            return int(value)
        known = ", ".join(repr(c) for c in (label.class_names or label.classes)[:20])
        raise FeedbackError(400, f"{where}: {value!r} is not one of the model's classes ({known})", "invalid")
    if isinstance(value, bool) or not isinstance(value, int | float) or not _finite(value):
        shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:40]}..."
        message = f"{where}: {shown} is not a number, or not a finite one (this model predicts values)"
        raise FeedbackError(400, message, "invalid")
    return float(value)


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond any float
        return False


class LiveQuality:
    """A sliding window of the latest (prediction, truth) rows and the metrics over it."""

    def __init__(self, task: str, window_size: int) -> None:
        self.task = task
        self.window: deque[tuple[Any, Any, str | None]] = deque(maxlen=window_size)
        self.total = 0  # rows ever received

    def add(self, rows: list[Row]) -> None:
        self.window.extend((r.prediction, r.truth, r.group) for r in rows)
        self.total += len(rows)

    def metrics(self) -> dict[str, float]:
        return self._measure([(p, t) for p, t, _ in self.window])

    def groups(self) -> dict[str, dict[str, Any]]:
        """Rows and metrics of each group feedback named, for the `MAX_GROUPS` most frequent in the window."""
        by_group: dict[str, list[tuple[Any, Any]]] = {}
        for p, t, g in self.window:
            if g is not None:
                by_group.setdefault(g, []).append((p, t))
        largest = sorted(by_group, key=lambda g: (-len(by_group[g]), g))[:MAX_GROUPS]
        return {g: {"rows": len(by_group[g]), "metrics": self._measure(by_group[g])} for g in sorted(largest)}

    def _measure(self, pairs: list[tuple[Any, Any]]) -> dict[str, float]:
        if not pairs:
            return {}
        if self.task == "classification":
            return classification(pairs)
        errors = [float(p) - float(t) for p, t in pairs]
        return {
            "mae": sum(abs(e) for e in errors) / len(errors),
            "rmse": math.sqrt(sum(e * e for e in errors) / len(errors)),
        }

    def report(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "rows": len(self.window),
            "windowSize": self.window.maxlen,
            "feedbackRows": self.total,
            "metrics": {k: round(v, 6) for k, v in self.metrics().items()},
            "groups": {
                g: {"rows": v["rows"], "metrics": {k: round(x, 6) for k, x in v["metrics"].items()}}
                for g, v in self.groups().items()
            },
        }


def classification(pairs: list[tuple[Any, Any]]) -> dict[str, float]:
    """Accuracy and macro F1 (the mean over the classes present as truth or prediction) of (prediction, truth)."""
    classes = {t for _, t in pairs} | {p for p, _ in pairs}
    f1s = []
    for c in classes:
        tp = sum(1 for p, t in pairs if p == c and t == c)
        fp = sum(1 for p, t in pairs if p == c and t != c)
        fn = sum(1 for p, t in pairs if p != c and t == c)
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return {
        "accuracy": sum(1 for p, t in pairs if p == t) / len(pairs),
        "macro_f1": sum(f1s) / len(f1s),
    }
