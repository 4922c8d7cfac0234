"""DirectGatherer: tables with batching off, gathered per request (inline or on a thread)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service.batching.direct_gatherer import DirectGatherer
from service.batching.gatherer import BatchingConfig
from service.errors import BackendUnavailable, InternalError, Overloaded
from tests.unit.batching.fake_backends import TABLE, GatedBackend, InlineBackend, run

OFF = BatchingConfig(enabled=False)


def test_batching_off_calls_backend_per_request() -> None:
    async def scenario() -> None:
        backend = GatedBackend()
        backend.gate.set()
        batcher = DirectGatherer(backend, OFF, "t")
        results = await asyncio.gather(*(batcher.gather(np.array([i])) for i in range(5)))
        assert len(backend.calls) == 5
        for i, result in enumerate(results):
            np.testing.assert_array_equal(result.rows, TABLE[[i]])
        await batcher.close()

    run(scenario())


def test_unbatched_inline_backend_answers_without_awaiting_and_refuses_when_closed() -> None:
    async def scenario() -> None:
        backend = InlineBackend()
        batcher = DirectGatherer(backend, OFF, "t")
        assert batcher.inline
        result = batcher.gather_inline(np.array([3, 1, 3]))
        np.testing.assert_array_equal(result.rows, TABLE[[3, 1, 3]])
        assert result.queue_seconds == 0.0
        awaited = await batcher.gather(np.array([2]))  # the awaitable form takes the same path
        np.testing.assert_array_equal(awaited.rows, TABLE[[2]])
        assert backend.calls == 2
        await batcher.close()
        with pytest.raises(Overloaded):
            batcher.gather_inline(np.array([1]))
        assert backend.calls == 2

    run(scenario())


def test_executor_backends_are_not_inline_and_batched_tables_are_refused() -> None:
    assert not DirectGatherer(GatedBackend(), OFF, "t").inline
    with pytest.raises(ValueError):
        DirectGatherer(InlineBackend(), BatchingConfig(enabled=True), "t")


def test_backend_failure_is_a_500_and_a_backend_answer_passes_as_it_is() -> None:
    class FailingBackend(GatedBackend):
        def gather(self, ids: np.ndarray) -> np.ndarray:
            if 7 in ids:
                raise BackendUnavailable("the store is down")
            return super().gather(ids)

    async def scenario() -> None:
        backend = FailingBackend(fail_on=666)
        backend.gate.set()
        gatherer = DirectGatherer(backend, OFF, "t")
        with pytest.raises(InternalError) as failed:
            await gatherer.gather(np.array([666]))
        assert failed.value.detail["request_id"]  # the incident id, also in the log
        with pytest.raises(BackendUnavailable):
            await gatherer.gather(np.array([7]))
        ok = await gatherer.gather(np.array([1]))  # the next request is not affected
        np.testing.assert_array_equal(ok.rows, TABLE[[1]])
        assert gatherer.healthy
        assert await gatherer.drain(1)
        await gatherer.close()
        with pytest.raises(Overloaded):
            await gatherer.gather(np.array([1]))

    run(scenario())
