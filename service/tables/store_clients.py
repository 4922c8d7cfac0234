"""The Redis clients of the tables whose rows live in a store, one per URL and timeout."""

from __future__ import annotations

import asyncio
import logging

from service.backends.redis_store import RedisClient, connect

log = logging.getLogger(__name__)


def redacted(url: str) -> str:
    """``url`` without its password, for logs and /readyz."""
    scheme, _, rest = url.partition("://")
    if "@" not in rest:
        return url
    return f"{scheme}://***@{rest.rpartition('@')[2]}"


class StoreClients:
    """One client (and connection pool) per store URL and timeout, shared by its tables and
    kept across reloads; closed with the registry."""

    def __init__(self) -> None:
        self._clients: dict[tuple[str, int], RedisClient] = {}
        self._connecting: dict[tuple[str, int], asyncio.Lock] = {}

    async def client(self, url: str, timeout_ms: int) -> RedisClient:
        """The client for ``url`` with ``timeout_ms``, connected on first use."""
        key = (url, timeout_ms)
        client = self._clients.get(key)
        if client is not None:
            return client
        # One connect per key at a time: two tables (or a load and the watcher) asking at
        # once would each make a client and the first stored would leak.
        async with self._connecting.setdefault(key, asyncio.Lock()):
            client = self._clients.get(key)
            if client is None:
                client = await connect(url, timeout_ms / 1000)
                self._clients[key] = client
        return client

    async def close(self) -> None:
        """Close every client; a connection already dead does not stop the others."""
        for client in self._clients.values():
            try:
                await client.aclose()
            except Exception as exc:  # closing a dead connection must not stop the shutdown
                log.debug("closing a Redis client: %r", exc)
        self._clients.clear()
