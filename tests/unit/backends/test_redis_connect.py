"""``connect``: a cluster client whose start fails is closed, not leaked (fakes for redis-py)."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest
from redis.exceptions import ClusterDownError

from service.backends import redis_store


class FakeProbe:
    async def info(self, section: str) -> dict[str, Any]:
        return {"cluster_enabled": 1}

    async def aclose(self) -> None:
        pass


class FailingCluster:
    """A cluster client whose ``initialize`` fails (the cluster is down)."""

    made: ClassVar[list[FailingCluster]] = []

    def __init__(self) -> None:
        self.closed = False
        FailingCluster.made.append(self)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> FailingCluster:
        return cls()

    async def initialize(self) -> None:
        raise ClusterDownError("CLUSTERDOWN The cluster is down")

    async def aclose(self) -> None:
        self.closed = True


def test_a_cluster_client_that_fails_to_start_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_store.aioredis.Redis, "from_url", lambda url, **o: FakeProbe())
    monkeypatch.setattr(redis_store, "RedisCluster", FailingCluster)
    FailingCluster.made.clear()
    for _ in range(3):  # retries during an outage
        with pytest.raises(ClusterDownError):
            asyncio.run(redis_store.connect("redis://fake:7000", 1.0))
    assert len(FailingCluster.made) == 3 and all(c.closed for c in FailingCluster.made)
