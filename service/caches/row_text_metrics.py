"""The row-text cache's event counters, and their publication as Prometheus metrics."""

from __future__ import annotations

from typing import Any

from service import metrics

EVENTS = ("hits", "misses", "admissions", "evictions", "bypassed")


class CacheEvents:
    """Counters of one table's row-text cache (plain ints in :attr:`counts`, bumped on the
    request path) moved into the Prometheus metrics by :meth:`publish`."""

    def __init__(self, table: str) -> None:
        self.counts = dict.fromkeys(EVENTS, 0)
        """Events since start, by name."""
        self._published = dict.fromkeys(EVENTS, 0)
        self._table = table
        self._children: dict[str, Any] | None = None

    def publish(self, size_bytes: int, entries: int) -> None:
        """Move counts gathered since the last call into the metrics, with the cache's size.

        Called per window of ids and at scrape time, not per request: a counter increment
        costs about as much as a W1 request's cache lookup.
        """
        children = self._children
        if children is None:
            children = self._children = {
                **{e: metrics.ROW_CACHE_EVENTS.labels(self._table, e) for e in EVENTS},
                "bytes": metrics.ROW_CACHE_BYTES.labels(self._table),
                "entries": metrics.ROW_CACHE_ENTRIES.labels(self._table),
            }
        for event, value in self.counts.items():
            delta = value - self._published[event]
            if delta:
                children[event].inc(delta)
                self._published[event] = value
        children["bytes"].set(size_bytes)
        children["entries"].set(entries)
