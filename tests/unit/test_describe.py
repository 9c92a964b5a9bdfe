"""`slipway describe` and `slipway logs` of a resource, from its status and Events as the API serves them."""

from __future__ import annotations

import io

from slipway_operator.describe import describe_text, follow, log_text, worker_lines
from slipway_trainer.logship import cut_header

FAILED = {
    "apiVersion": "slipway.dev/v1alpha1",
    "kind": "TrainingRun",
    "metadata": {"name": "mpg-greedy", "namespace": "ml", "creationTimestamp": "2026-12-04T10:00:00Z"},
    "status": {
        "phase": "Failed",
        "message": "pod mpg-greedy-train-x-worker cannot be scheduled",
        "rayJobName": "mpg-greedy-train",
        "logUri": "s3://slipway/runs/ml/mpg-greedy/logs/driver.log",
        "startTime": "2026-12-04T10:00:05Z",
        "completionTime": "2026-12-04T10:05:07Z",
        "conditions": [
            {"type": "Ready", "status": "False", "reason": "Unschedulable", "message": "..."},
            {
                "type": "Failed",
                "status": "True",
                "reason": "Unschedulable",
                "message": "pod mpg-greedy-train-x-worker cannot be scheduled: 0/3 nodes are available: "
                "3 Insufficient nvidia.com/gpu; it asks for nvidia.com/gpu 16: lower spec.resources",
            },
        ],
    },
}
EVENTS = [
    {"lastTimestamp": "2026-12-04T10:05:07Z", "type": "Warning", "reason": "Failed", "message": "cannot be scheduled"},
    {"lastTimestamp": "2026-12-04T10:00:01Z", "type": "Normal", "reason": "Pending", "message": "creating"},
    {"lastTimestamp": "2026-12-04T10:00:02Z", "type": "Normal", "reason": "Created", "message": "RayJob created"},
]


def test_describe_puts_the_diagnosis_first_then_the_timeline_of_phases_and_the_events_in_order() -> None:
    text = describe_text(FAILED, EVENTS)
    assert text.index("Diagnosis:  Unschedulable") < text.index("Timeline:") < text.index("Events:")
    assert "3 Insufficient nvidia.com/gpu" in text and "lower spec.resources" in text
    timeline = text[text.index("Timeline:") : text.index("Status:")]
    assert timeline.index("Pending") < timeline.index("Failed") and "Created" not in timeline  # phases only
    events = text[text.index("Events:") :]
    assert events.index("RayJob created") < events.index("cannot be scheduled")  # the latest last
    assert "Log:        s3://slipway/runs/ml/mpg-greedy/logs/driver.log" in text
    assert len(text.splitlines()) < 50  # one screen


def test_logs_of_one_worker_and_following_a_log_until_the_run_finishes() -> None:
    log = "driver starts\n(RayTrainWorker pid=7) [worker 0] epoch 1/2\n(RayTrainWorker pid=8) [worker 1] epoch 1/2\n"
    assert worker_lines(log, 1) == "(RayTrainWorker pid=8) [worker 1] epoch 1/2\n"
    assert worker_lines(log, None) == log
    chunks = iter([b"a\n", b"a\nb\n", b"a\nb\nc\n"])
    states = iter([False, False, True])
    out = io.StringIO()
    follow(lambda: next(chunks), lambda: next(states), out, None, 0.0)
    assert out.getvalue() == "a\nb\nc\n"  # each line once, the last read after the run finished


def test_following_a_log_whose_copy_is_cut_at_the_front_keeps_its_place() -> None:
    """The copy in the store keeps the last 8 MiB and says how many bytes came before: a follower prints only what
    is new, and says what it never saw."""
    copies = iter([b"a\nb\n", cut_header(2) + b"b\nc\n", cut_header(8) + b"e\nf\n"])
    states = iter([False, False, True])
    out = io.StringIO()
    follow(lambda: next(copies), lambda: next(states), out, None, 0.0)
    assert out.getvalue() == "a\nb\nc\n[... 2 bytes of the log not kept ...]\ne\nf\n"
    assert log_text(cut_header(8) + b"e\n") == "[... the first 8 bytes of the log are not kept ...]\ne\n"
