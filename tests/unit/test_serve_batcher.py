"""Dynamic batching without a socket: merges, limits, deadlines, and every caller gets its own rows."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from slipway_trainer.serve.batcher import Batcher


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_concurrent_requests_are_merged_and_answered_with_their_own_rows() -> None:
    calls: list[int] = []

    def infer(x: np.ndarray) -> np.ndarray:
        calls.append(x.shape[0])
        return x * 10

    async def scenario() -> list[np.ndarray]:
        batcher = Batcher(infer, max_batch_size=64, max_latency_ms=50)
        batcher.start()
        requests = [np.full((i % 3 + 1, 2), i, dtype=np.float32) for i in range(20)]
        answers = await asyncio.gather(*(batcher.submit(r) for r in requests))
        await batcher.close()
        for request, answer in zip(requests, answers, strict=True):
            assert np.array_equal(answer, request * 10)
        return answers

    run(scenario())
    assert sum(calls) == sum(i % 3 + 1 for i in range(20))
    assert len(calls) < 20 and max(calls) > 3  # merged into fewer, larger model calls


def test_a_batch_never_exceeds_max_batch_size_unless_one_request_does() -> None:
    calls: list[int] = []

    async def scenario() -> None:
        batcher = Batcher(lambda x: (calls.append(x.shape[0]), x)[1], max_batch_size=4, max_latency_ms=100)
        batcher.start()
        await asyncio.gather(*(batcher.submit(np.zeros((1, 1))) for _ in range(10)), batcher.submit(np.zeros((9, 1))))
        await batcher.close()

    run(scenario())
    assert sum(calls) == 19
    assert sorted(c for c in calls if c > 4) == [9]  # the 9-row request goes alone; no batch merges past 4 rows


def test_a_lone_request_is_sent_when_the_latency_budget_runs_out() -> None:
    """Liveness, not speed: with nobody else coming, the batch still goes (here after 50 ms, not never)."""

    async def scenario() -> np.ndarray:
        batcher = Batcher(lambda x: x + 1, max_batch_size=1000, max_latency_ms=50)
        batcher.start()
        answer = await asyncio.wait_for(batcher.submit(np.zeros((1, 3))), timeout=30)
        await batcher.close()
        return answer

    assert np.array_equal(run(scenario()), np.ones((1, 3)))


def test_a_failing_model_call_fails_its_callers_and_the_batcher_keeps_serving() -> None:
    def infer(x: np.ndarray) -> np.ndarray:
        if (x < 0).any():
            raise ValueError("negative input")
        return x

    async def scenario() -> None:
        batcher = Batcher(infer, max_batch_size=1, max_latency_ms=0)
        batcher.start()
        with pytest.raises(ValueError, match="negative input"):
            await batcher.submit(-np.ones((1, 1)))
        assert np.array_equal(await batcher.submit(np.ones((1, 1))), np.ones((1, 1)))
        await batcher.close()

    run(scenario())


def test_a_lone_request_does_not_wait_for_company_that_is_not_coming() -> None:
    """With the server reporting no other request in flight, a 10-minute budget is not waited out."""

    async def scenario() -> None:
        batcher = Batcher(lambda x: x, max_batch_size=1000, max_latency_ms=600_000, in_flight=lambda: 1)
        batcher.start()
        await asyncio.wait_for(batcher.submit(np.zeros((1, 3))), timeout=30)
        await batcher.close()

    run(scenario())
