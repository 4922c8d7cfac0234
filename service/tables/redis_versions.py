"""Versions of Redis tables other than the current one, for requests that pin them.

``?version=`` of a Redis table may name any complete version still in Redis (pushed, not
dropped). Each poll the registry reads the versions hash of every Redis table (``refresh``:
one ``HGETALL`` each); a pinned request naming a version other than the current one gets a
table built from that meta on its first request (no await: the meta is known), kept for the
next ones. At most ``REDIS_PINNED_VERSIONS`` such versions per table are held per worker, the
least recently built released first, and one dropped from Redis is released at the next poll.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable

from service.backends.redis_gather import RedisGatherBackend
from service.backends.redis_store import STORE_ERRORS, RedisTableMeta
from service.errors import VersionNotFound
from service.tables.served_table import ServedTable
from service.tables.version_sets import sorted_versions

log = logging.getLogger(__name__)

REDIS_PINNED_VERSIONS = 2
"""Non-current versions of one Redis table held per worker (each has its own hot rows)."""

Build = Callable[[ServedTable, RedisTableMeta], ServedTable]
Retire = Callable[[ServedTable], None]


class RedisVersions:
    """The complete versions of every Redis table, and the pinned ones built."""

    def __init__(self, build: Build, retire: Retire) -> None:
        self._build = build
        self._retire = retire
        self._metas: dict[str, dict[str, RedisTableMeta]] = {}
        self._built: dict[str, OrderedDict[str, ServedTable]] = {}

    def versions(self, current: ServedTable) -> list[str]:
        """The versions ``current``'s table may be pinned to (the current one included)."""
        return sorted_versions({**self._metas.get(current.name, {}), current.served_version: 1})

    def pick(self, current: ServedTable, version: str) -> ServedTable:
        """The table at ``version`` (``current`` itself when it is the current version)."""
        if version == current.served_version:
            return current
        built = self._built.setdefault(current.name, OrderedDict())
        table = built.get(version)
        if table is not None and table.weights is not current.weights:
            built.move_to_end(version)  # least recently asked for is released first
            return table
        meta = self._metas.get(current.name, {}).get(version)
        if meta is None:
            raise VersionNotFound(
                f"table {current.name!r} has no complete version {version!r} in Redis",
                {"table": current.name, "versions": self.versions(current), "labels": {}},
            )
        table = self._build(current, meta)
        table.batcher.start()
        built[version] = table
        while len(built) > REDIS_PINNED_VERSIONS:
            self._retire(built.popitem(last=False)[1])
        return table

    async def refresh(self, tables: list[ServedTable]) -> None:
        """Read the versions hash of every Redis table in ``tables``; release pinned versions
        dropped from Redis (a store error keeps what was known)."""
        for table in tables:
            if not isinstance(table.backend, RedisGatherBackend):
                continue
            try:
                metas = await table.backend.versions()
            except STORE_ERRORS as exc:
                log.debug("versions of Redis table %s not read this poll: %r", table.name, exc)
                continue
            self._metas[table.name] = metas
            built = self._built.get(table.name, OrderedDict())
            for version in [v for v in built if v not in metas]:
                self._retire(built.pop(version))

    def tables(self) -> list[ServedTable]:
        """Every pinned version built (the registry closes them at exit)."""
        return [table for built in self._built.values() for table in built.values()]
