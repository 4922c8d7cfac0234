"""A batched request whose client disconnects is stopped (its batch entry then skipped),
and nothing else is: a normal answer, a late disconnect, the server's own cancellation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from service.http.dispatcher import _unless_client_leaves


class Client:
    """``receive`` of an ASGI request whose body was read: waits until told to disconnect."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}


def test_an_answer_comes_back_and_the_task_is_clean() -> None:
    async def scenario() -> None:
        client = Client()
        assert await _unless_client_leaves(asyncio.sleep(0, "rows"), client.receive) == "rows"
        client.gone.set()  # after the answer: changes nothing
        await asyncio.sleep(0)
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0

    asyncio.run(scenario())


def test_a_disconnect_stops_the_work_and_answers_none() -> None:
    async def scenario() -> None:
        client = Client()
        pending: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(client.gone.set)
        assert await _unless_client_leaves(pending, client.receive) is None
        assert pending.cancelled()  # the batcher skips a cancelled entry
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0  # later awaits run normally
        await asyncio.sleep(0)

    asyncio.run(scenario())


def test_the_servers_own_cancellation_still_cancels() -> None:
    async def request(client: Client) -> Any:
        return await _unless_client_leaves(asyncio.sleep(60), client.receive)

    async def scenario() -> None:
        task = asyncio.create_task(request(Client()))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
