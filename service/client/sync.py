"""``EmbeddingClient``: the blocking client."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

import httpx

from service.client import routes
from service.client.transport import Answer, Call, ClientBase, described, retry_delay

P = ParamSpec("P")
T = TypeVar("T")


def _sent(
    build: Callable[Concatenate[routes.Client, P], Call[T]],
) -> Callable[Concatenate[EmbeddingClient, P], T]:
    """A method that sends what ``build`` makes and returns the answer."""

    def method(self: EmbeddingClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._send(build(self, *args, **kwargs))

    return described(method, build)


class EmbeddingClient(ClientBase[httpx.BaseTransport, httpx.Client]):
    """Blocking client; one pooled httpx connection pool per instance.

    Every table method takes ``version`` (a number or a label; None: the table's default).
    """

    def _open(self, timeout: float, transport: httpx.BaseTransport | None) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url, headers=self.headers, timeout=timeout, transport=transport
        )

    def _send(self, call: Call[Answer]) -> Answer:
        attempt = 0
        while self.retrying(response := self._http.request(**call.request()), attempt):
            time.sleep(retry_delay(response, attempt, self.backoff))
            attempt += 1
        return call.finish(response)

    tables = _sent(routes.tables)
    table = _sent(routes.table)
    lookup = _sent(routes.lookup)
    lookup_versioned = _sent(routes.lookup_versioned)
    sequences = _sent(routes.sequences)
    bags = _sent(routes.bags)
    neighbors = _sent(routes.neighbors)
    group_lookup = _sent(routes.group_lookup)
    groups = _sent(routes.groups)
    group = _sent(routes.group)
    update_rows = _sent(routes.update_rows)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> EmbeddingClient:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()
