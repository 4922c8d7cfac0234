"""MicroBatcher behaviour with a gated fake backend and a fake clock (no timing by sleeps)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service.batching.gatherer import BatchingConfig
from service.batching.micro_batcher import MicroBatcher
from service.errors import InternalError, Overloaded, Timeout
from tests.support.polling import until
from tests.unit.batching.fake_backends import TABLE, GatedBackend, InlineBackend, run, wait_entered


def config(**kwargs) -> BatchingConfig:
    return BatchingConfig(enabled=True, **{"timeout_ms": 5000, **kwargs})


def test_fills_to_max_and_preserves_each_requests_rows() -> None:
    async def scenario() -> None:
        backend = GatedBackend()
        batcher = MicroBatcher(backend, config(max_batch_ids=10), "t")
        batcher.start()
        first = asyncio.ensure_future(batcher.gather(np.array([1])))
        await wait_entered(backend)  # the backend is busy with request 1
        requests = [np.array([i, i + 1, i + 2]) for i in range(10, 40, 3)]  # 10 requests x 3 ids
        tasks = [asyncio.ensure_future(batcher.gather(ids)) for ids in requests]
        await asyncio.sleep(0)
        backend.gate.set()
        results = await asyncio.gather(first, *tasks)
        # Natural batching: what queued while busy goes together, 3 requests (9 ids) per batch,
        # never splitting a request across batches.
        assert [len(c) for c in backend.calls] == [1, 9, 9, 9, 3]
        for ids, result in zip([np.array([1]), *requests], results, strict=True):
            np.testing.assert_array_equal(result.rows, TABLE[ids])
        await batcher.close()

    run(scenario())


def test_delay_counts_from_first_arrival_not_from_wakeup(monkeypatch) -> None:
    async def scenario() -> None:
        now = [100.0]
        monkeypatch.setattr(MicroBatcher, "clock", staticmethod(lambda: now[0]))
        backend = GatedBackend()
        backend.gate.set()
        batcher = MicroBatcher(backend, config(max_delay_us=500_000), "t")
        task = asyncio.ensure_future(batcher.gather(np.array([1, 2])))
        await asyncio.sleep(0)  # enqueued at t=100.0
        now[0] = 101.0  # the worker wakes 1 s after that arrival: the 0.5 s delay is over
        batcher.start()
        result = await asyncio.wait_for(task, 1.0)  # must not wait another 0.5 s
        np.testing.assert_array_equal(result.rows, TABLE[[1, 2]])
        await batcher.close()

    run(scenario())


def test_delay_collects_requests_arriving_within_it(monkeypatch) -> None:
    async def scenario() -> None:
        now = [0.0]
        monkeypatch.setattr(MicroBatcher, "clock", staticmethod(lambda: now[0]))
        backend = GatedBackend()
        backend.gate.set()
        batcher = MicroBatcher(backend, config(max_delay_us=1_000_000, max_batch_ids=4), "t")
        batcher.start()
        a = asyncio.ensure_future(batcher.gather(np.array([1, 2])))
        # The worker has taken `a` into its batch and waits for more (fake time stands still):
        # `b` must join that batch, not merely share the queue with `a`.
        await until(lambda: batcher.filling_requests == 1, "the worker to be filling a batch")
        assert not backend.calls
        b = asyncio.ensure_future(batcher.gather(np.array([3, 4])))  # fills the batch to max
        await asyncio.gather(a, b)
        assert [c.tolist() for c in backend.calls] == [[1, 2, 3, 4]]
        await batcher.close()

    run(scenario())


def test_skips_cancelled_requests() -> None:
    async def scenario() -> None:
        backend = GatedBackend()
        batcher = MicroBatcher(backend, config(), "t")
        batcher.start()
        first = asyncio.ensure_future(batcher.gather(np.array([1])))
        await wait_entered(backend)
        gone = asyncio.ensure_future(batcher.gather(np.array([500, 501])))
        kept = asyncio.ensure_future(batcher.gather(np.array([7])))
        await asyncio.sleep(0)
        gone.cancel()  # the client went away while queued
        backend.gate.set()
        await asyncio.gather(first, kept)
        assert [c.tolist() for c in backend.calls] == [[1], [7]]
        assert batcher.queued_ids == 0
        await batcher.close()

    run(scenario())


def test_backend_failure_fails_only_its_batch() -> None:
    async def scenario() -> None:
        backend = GatedBackend(fail_on=666)
        batcher = MicroBatcher(backend, config(), "t")
        batcher.start()
        first = asyncio.ensure_future(batcher.gather(np.array([1])))
        await wait_entered(backend)
        bad = asyncio.ensure_future(batcher.gather(np.array([666])))
        neighbour = asyncio.ensure_future(batcher.gather(np.array([2])))
        await asyncio.sleep(0)
        backend.gate.set()
        assert (await first).rows.shape == (1, 4)
        with pytest.raises(InternalError):
            await bad
        with pytest.raises(InternalError):  # same batch as the failing one
            await neighbour
        after = await batcher.gather(np.array([3]))  # the next batch succeeds
        np.testing.assert_array_equal(after.rows, TABLE[[3]])
        assert batcher.healthy
        await batcher.close()

    run(scenario())


def test_rejects_when_queue_full_with_retry_after() -> None:
    async def scenario() -> None:
        backend = GatedBackend()
        batcher = MicroBatcher(backend, config(max_queue_ids=4), "t")
        batcher.start()
        first = asyncio.ensure_future(batcher.gather(np.array([1])))
        await wait_entered(backend)
        queued = asyncio.ensure_future(batcher.gather(np.array([1, 2, 3])))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded) as rejected:
            await batcher.gather(np.array([4, 5]))
        assert rejected.value.headers["Retry-After"]
        backend.gate.set()
        await asyncio.gather(first, queued)
        await batcher.close()

    run(scenario())


def test_deadline_gives_timeout_and_is_not_computed() -> None:
    async def scenario() -> None:
        backend = GatedBackend()
        batcher = MicroBatcher(backend, config(timeout_ms=1), "t")
        batcher.start()
        first = asyncio.ensure_future(batcher.gather(np.array([1])))
        await wait_entered(backend)
        late = asyncio.ensure_future(batcher.gather(np.array([9])))
        with pytest.raises(Timeout):
            await late
        backend.gate.set()
        with pytest.raises(Timeout):  # the first waited past its deadline too
            await first
        # The worker has been through the queue (9 is off it) and nothing is running.
        assert await batcher.drain(30)
        assert batcher.queued_ids == 0
        assert [c.tolist() for c in backend.calls] == [[1]]  # 9 was never computed
        await batcher.close()

    run(scenario())


def test_dead_worker_fails_pending_and_turns_unhealthy(monkeypatch) -> None:
    async def scenario() -> None:
        backend = GatedBackend()
        backend.gate.set()
        batcher = MicroBatcher(backend, config(), "t")

        def broken(*_):
            raise RuntimeError("worker bug")

        monkeypatch.setattr(batcher, "_pop_ready", broken)
        pending = asyncio.ensure_future(batcher.gather(np.array([1])))
        await asyncio.sleep(0)
        batcher.start()
        with pytest.raises(InternalError):
            await pending
        assert not batcher.healthy
        with pytest.raises(InternalError):
            await batcher.gather(np.array([2]))

    run(scenario())


def test_close_during_a_running_batch_answers_it_and_drain_waits_for_it() -> None:
    async def scenario() -> None:
        backend = GatedBackend()
        batcher = MicroBatcher(backend, config(), "t")
        batcher.start()
        running = asyncio.ensure_future(batcher.gather(np.array([1])))
        await wait_entered(backend)
        assert not await batcher.drain(0.05)  # a batch is still being gathered
        closing = asyncio.ensure_future(batcher.close())
        with pytest.raises(Overloaded):  # answered at once, not left hanging
            await asyncio.wait_for(running, 2)
        backend.gate.set()
        await closing

    run(scenario())


async def filling_batch(batcher: MicroBatcher, ids: np.ndarray) -> asyncio.Future:
    """A request the worker has taken off the queue into the batch it is still filling."""
    task = asyncio.ensure_future(batcher.gather(ids))
    await until(lambda: batcher.queued_ids == ids.size, "the request to be queued")
    batcher.start()
    await until(lambda: batcher.queued_ids == 0, "the worker to take the request into its batch")
    assert not task.done()
    return task


def test_drain_waits_for_the_batch_being_filled() -> None:
    async def scenario() -> None:
        backend = GatedBackend()
        backend.gate.set()
        # The batch would stay open a minute: the drain must neither miss it nor wait that long.
        batcher = MicroBatcher(backend, config(max_delay_us=60_000_000, timeout_ms=30_000), "t")
        task = await filling_batch(batcher, np.array([1, 2]))
        assert await batcher.drain(30)
        await batcher.close()
        result = await task  # answered with its rows, not lost until its 504
        np.testing.assert_array_equal(result.rows, TABLE[[1, 2]])

    run(scenario())


def test_close_while_filling_answers_the_batch_with_503() -> None:
    async def scenario() -> None:
        backend = GatedBackend()
        backend.gate.set()
        batcher = MicroBatcher(backend, config(max_delay_us=60_000_000, timeout_ms=30_000), "t")
        task = await filling_batch(batcher, np.array([1, 2]))
        await batcher.close()  # no drain: the worker is cancelled inside its wait
        with pytest.raises(Overloaded) as unloading:
            await asyncio.wait_for(task, 1)  # at once, not after timeout_ms
        assert unloading.value.headers["Retry-After"]
        assert not backend.calls

    run(scenario())


def test_gather_on_a_closed_batcher_is_503_with_retry_after() -> None:
    async def scenario() -> None:
        backend = GatedBackend()
        backend.gate.set()
        batcher = MicroBatcher(backend, config(), "t")
        batcher.start()
        await batcher.close()
        with pytest.raises(Overloaded) as unloading:  # the table is being replaced: retry
            await batcher.gather(np.array([1]))
        assert unloading.value.headers["Retry-After"]

    run(scenario())


def test_a_batcher_is_never_inline_and_only_serves_batched_tables() -> None:
    assert not MicroBatcher(InlineBackend(), config(), "t").inline  # batching on: queued
    with pytest.raises(ValueError):
        MicroBatcher(InlineBackend(), BatchingConfig(enabled=False), "t")
