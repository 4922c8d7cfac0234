"""A row update's ``WAIT`` for a replica answers within the client's reply timeout."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from service.backends.redis_internals import reply_timeout_s
from service.updates.redis_writer import REPLICA_WAIT_MS, RedisRowUpdates, replica_wait_ms


def test_wait_stays_inside_the_reply_timeout() -> None:
    assert replica_wait_ms(1.0) == 750  # the default redis_timeout_ms: WAIT 750 ms
    assert replica_wait_ms(0.001) == 1  # never WAIT 0 (that blocks forever)
    assert replica_wait_ms(30.0) == REPLICA_WAIT_MS  # the offline command's client
    assert replica_wait_ms(None) == REPLICA_WAIT_MS  # a client that waits forever
    for timeout_s in (0.002, 0.05, 0.2, 1.0, 5.0, 13.3, 60.0):
        assert 0 < replica_wait_ms(timeout_s) < timeout_s * 1000


def test_the_writer_takes_its_client_s_timeout() -> None:
    # Built without a server: nothing here connects.
    server = aioredis.Redis.from_url("redis://127.0.0.1:1", socket_timeout=0.4)
    cluster = RedisCluster(host="127.0.0.1", port=1, socket_timeout=2.0)
    forever = aioredis.Redis.from_url("redis://127.0.0.1:1")
    assert (reply_timeout_s(server), reply_timeout_s(cluster), reply_timeout_s(forever)) == (
        0.4,
        2.0,
        None,
    )
    assert RedisRowUpdates(server, "t").replica_wait_ms == 300
    assert RedisRowUpdates(cluster, "t").replica_wait_ms == 1500
    assert RedisRowUpdates(forever, "t").replica_wait_ms == REPLICA_WAIT_MS
