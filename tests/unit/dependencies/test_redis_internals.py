"""Canary: every undocumented name of redis-py the service relies on is still there.

``service.backends.redis_internals.RELIED_ON`` lists them (with the arguments passed);
each case below checks one on a real instance of the installed redis-py and fails naming
it. When one fails after a bump of the redis pin, follow docs/upgrading.md.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection, ConnectionPool

from service.backends import redis_internals
from service.backends.redis_internals import RELIED_ON
from tests.unit.dependencies.relied_on import (
    UPGRADING,
    call_refused,
    resolve,
    uses_elsewhere,
    where,
)

# An instance of each class named in RELIED_ON, built without a server (nothing connects).
INSTANCES: dict[str, Callable[[], object]] = {
    "redis.asyncio.cluster.RedisCluster": lambda: RedisCluster(host="127.0.0.1", port=1),
    "redis.asyncio.cluster.NodesManager": lambda: (
        RedisCluster(host="127.0.0.1", port=1).nodes_manager
    ),
    "redis.asyncio.cluster.ClusterNode": lambda: ClusterNode("127.0.0.1", 1),
    "redis.asyncio.connection.ConnectionPool": ConnectionPool,
    "redis.asyncio.connection.Connection": Connection,
}


@pytest.mark.parametrize(
    ("owner", "name", "arguments"), RELIED_ON, ids=[f"{o}.{n}" for o, n, _ in RELIED_ON]
)
def test_redis_py_still_has(owner: str, name: str, arguments: str | None) -> None:
    named = where("redis", owner, name)
    assert owner in INSTANCES, f"{named}: add a way to build a {owner} to INSTANCES"
    instance = INSTANCES[owner]()
    assert isinstance(instance, resolve(owner)), f"{named}: built a {type(instance)}"
    assert hasattr(instance, name), f"{named} is gone; see {UPGRADING}"
    if arguments is not None:
        attribute = getattr(instance, name)
        assert callable(attribute), f"{named} is no longer callable; see {UPGRADING}"
        refused = call_refused(attribute, arguments)
        assert refused is None, f"{named} no longer takes ({arguments}): {refused}; see {UPGRADING}"


# Names in RELIED_ON that are also ordinary words of public APIs (ours, redis-py's pipeline,
# locks, ...): the containment check below looks for the others only.
COMMON_WORDS = {"name", "release", "initialize", "disconnect", "execute_command"}


def test_no_other_module_reaches_into_redis_py() -> None:
    """Containment: the undocumented names are used in redis_internals and nowhere else."""
    names = {name for _, name, _ in RELIED_ON} - COMMON_WORDS
    home = Path(redis_internals.__file__).resolve()
    assert uses_elsewhere(names, home) == [], f"use them through {home.name}"
