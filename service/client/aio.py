"""``AsyncEmbeddingClient``: the asyncio client."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

import httpx

from service.client import routes
from service.client.transport import Answer, Call, ClientBase, described, retry_delay

P = ParamSpec("P")
T = TypeVar("T")


def _awaited(
    build: Callable[Concatenate[routes.Client, P], Call[T]],
) -> Callable[Concatenate[AsyncEmbeddingClient, P], Coroutine[Any, Any, T]]:
    """A coroutine method that sends what ``build`` makes and returns the answer."""

    async def method(self: AsyncEmbeddingClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._send(build(self, *args, **kwargs))

    return described(method, build)


class AsyncEmbeddingClient(ClientBase[httpx.AsyncBaseTransport, httpx.AsyncClient]):
    """asyncio client with the same methods as ``EmbeddingClient``, awaited."""

    def _open(
        self, timeout: float, transport: httpx.AsyncBaseTransport | None
    ) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url, headers=self.headers, timeout=timeout, transport=transport
        )

    async def _send(self, call: Call[Answer]) -> Answer:
        attempt = 0
        while self.retrying(response := await self._http.request(**call.request()), attempt):
            await asyncio.sleep(retry_delay(response, attempt, self.backoff))
            attempt += 1
        return call.finish(response)

    tables = _awaited(routes.tables)
    table = _awaited(routes.table)
    lookup = _awaited(routes.lookup)
    lookup_versioned = _awaited(routes.lookup_versioned)
    sequences = _awaited(routes.sequences)
    bags = _awaited(routes.bags)
    neighbors = _awaited(routes.neighbors)
    group_lookup = _awaited(routes.group_lookup)
    groups = _awaited(routes.groups)
    group = _awaited(routes.group)
    update_rows = _awaited(routes.update_rows)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncEmbeddingClient:
        return self

    async def __aexit__(self, *_: Any) -> None:
        await self.aclose()
