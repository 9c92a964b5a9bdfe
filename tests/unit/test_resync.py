"""The operator's resync schedule (operator/slipway_operator/resync.py): when each resource's next pass is due."""

from __future__ import annotations

import threading
import time

from slipway_operator import resync as resync_module
from slipway_operator.resync import Key, Resync

A: Key = ("TrainingRun", "ns", "a")
B: Key = ("ModelDeployment", "ns", "b")


def test_a_resource_is_due_its_interval_after_its_last_pass_and_never_twice_at_once() -> None:
    clock = [0.0]
    done: list[Key] = []
    schedule = Resync(done.append, workers=1, clock=lambda: clock[0])
    schedule.passed(A, 10.0)
    schedule.passed(B, 5.0)
    assert schedule.due() == []
    clock[0] = 5.0
    assert schedule.due() == [B]
    assert schedule.due() == []  # under way: not handed out again
    schedule.pass_of(B)
    assert done == [B]
    clock[0] = 10.0
    assert schedule.due() == [A, B]  # B's next was its interval after its pass at 5
    schedule.pass_of(A)
    schedule.pass_of(B)
    clock[0] = 15.0
    assert schedule.due() == [B]
    schedule.forget(A)
    schedule.pass_of(B)
    clock[0] = 100.0
    assert schedule.due() == [B]  # A was deleted: never again


def test_a_pass_that_fails_is_tried_again_at_its_next_tick() -> None:
    clock = [0.0]
    calls: list[Key] = []

    def run(key: Key) -> None:
        calls.append(key)
        raise RuntimeError("the API server is away")

    schedule = Resync(run, workers=1, clock=lambda: clock[0])
    schedule.passed(A, 10.0)
    clock[0] = 10.0
    assert schedule.due() == [A]
    schedule.pass_of(A)  # logged, not raised
    assert schedule.due() == []
    clock[0] = 20.0
    assert schedule.due() == [A]
    assert calls == [A]


def test_only_news_of_the_spec_or_annotations_brings_a_pass_at_once() -> None:
    schedule = Resync(lambda key: None, workers=1)
    assert schedule.changed(A, "gen 1")  # first seen
    assert not schedule.changed(A, "gen 1")  # its own status patch came back
    assert schedule.changed(A, "gen 2")
    schedule.forget(A)
    assert schedule.changed(A, "gen 2")  # the same name again: a new resource


def test_the_scheduler_runs_due_passes_on_its_threads_one_at_a_time_per_resource(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(resync_module, "TICK_SECONDS", 0.01)
    running: dict[Key, int] = {A: 0, B: 0}
    most: dict[Key, int] = {A: 0, B: 0}
    passes: list[Key] = []
    guard = threading.Lock()

    def run(key: Key) -> None:
        with guard:
            running[key] += 1
            most[key] = max(most[key], running[key])
        time.sleep(0.03)
        with guard:
            running[key] -= 1
            passes.append(key)

    schedule = Resync(run, workers=4)
    schedule.passed(A, 0.0)
    schedule.passed(B, 0.0)
    schedule.start_once()
    schedule.start_once()  # one scheduler thread however often it is asked
    with schedule.lock(A):  # a pass at the watch's news holds the resource: the periodic one waits for it
        time.sleep(0.1)
        assert A not in passes
    deadline = time.monotonic() + 10
    while (passes.count(A) < 3 or passes.count(B) < 3) and time.monotonic() < deadline:
        time.sleep(0.01)
    schedule.stop()
    assert passes.count(A) >= 3 and passes.count(B) >= 3
    assert most == {A: 1, B: 1}
