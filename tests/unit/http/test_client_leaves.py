"""A batched request whose client disconnects is dropped from its batch (not computed for
nobody), and nothing else is: a normal answer, the server's own cancellation. Both ways
of noticing: the connection's flag the scope carries (``CLIENT_GONE_KEY``), read by the
batcher, and a watcher task otherwise."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest

from service.batching.gatherer import BatchingConfig
from service.batching.micro_batcher import MicroBatcher
from service.http.client_gone import CLIENT_LEFT, unless_client_leaves

TABLE = np.arange(40, dtype=np.float32).reshape(10, 4)


class Client:
    """``receive`` of an ASGI request whose body was read: waits until told to disconnect."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}


class Cycle(Client):
    """A client whose server offers a ``client_gone`` flag (our protocol puts the connection's
    in the scope)."""

    disconnected = False

    def client_gone(self) -> bool:
        return self.disconnected


def _flag(client: Client) -> Any:
    """What the scope would carry under ``CLIENT_GONE_KEY`` for ``client``."""
    return client.client_gone if isinstance(client, Cycle) else None


class Backend:
    name, device, inline_safe = "fake", "cpu", False

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.gate = threading.Event()

    def gather(self, ids: np.ndarray) -> np.ndarray:
        self.calls.append(ids.tolist())
        assert self.gate.wait(60)
        return TABLE[ids]

    def close(self) -> None:
        pass


def _run(scenario: Any) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 60))


@pytest.mark.parametrize("client_type", [Client, Cycle])
def test_an_answer_comes_back_and_the_task_is_clean(client_type: type[Client]) -> None:
    async def scenario() -> None:
        client = client_type()
        rows = asyncio.sleep(0, "rows")
        assert await unless_client_leaves(rows, client.receive, _flag(client)) == "rows"
        client.gone.set()  # after the answer: changes nothing
        await asyncio.sleep(0)
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0

    _run(scenario)


def test_a_disconnect_stops_the_work_and_answers_client_left() -> None:
    async def scenario() -> None:
        client = Client()
        pending: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(client.gone.set)
        assert await unless_client_leaves(pending, client.receive) is CLIENT_LEFT
        assert pending.cancelled()  # the batcher skips a cancelled entry
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0  # later awaits run normally
        await asyncio.sleep(0)

    _run(scenario)


def test_the_flag_drops_a_queued_request_from_its_batch() -> None:
    async def scenario() -> None:
        backend = Backend()
        batcher = MicroBatcher(backend, BatchingConfig(enabled=True, timeout_ms=30_000), "t")
        batcher.start()
        try:
            first = asyncio.ensure_future(batcher.gather(np.array([1])))  # holds the worker
            while not backend.calls:
                await asyncio.sleep(0.001)
            cycle = Cycle()
            left = asyncio.ensure_future(
                unless_client_leaves(batcher.gather(np.array([2])), cycle.receive, _flag(cycle))
            )
            other = Cycle()
            stays = asyncio.ensure_future(
                unless_client_leaves(batcher.gather(np.array([3])), other.receive, _flag(other))
            )
            await asyncio.sleep(0.01)  # both queued behind the first batch
            cycle.disconnected = True
            backend.gate.set()
            assert (await first).rows.tolist() == TABLE[[1]].tolist()
            assert await left is CLIENT_LEFT
            assert (await stays).rows.tolist() == TABLE[[3]].tolist()
            assert [2] not in backend.calls and [3] in backend.calls
        finally:
            backend.gate.set()
            await batcher.close()

    _run(scenario)


@pytest.mark.parametrize("client_type", [Client, Cycle])
def test_the_servers_own_cancellation_still_cancels(client_type: type[Client]) -> None:
    async def request(client: Client) -> Any:
        return await unless_client_leaves(asyncio.sleep(60), client.receive, _flag(client))

    async def scenario() -> None:
        task = asyncio.create_task(request(client_type()))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    _run(scenario)
