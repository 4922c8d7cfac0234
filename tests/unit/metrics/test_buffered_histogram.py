"""``BufferedHistogram`` writes exactly what ``Histogram.observe`` would, only later."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from service import metrics

BUCKETS = (0.001, 0.01, 0.1, 1.0)


def _pair(registry: CollectorRegistry, prefix: str) -> tuple[Histogram, Counter]:
    histogram = Histogram(f"{prefix}_seconds", "h", ["t"], buckets=BUCKETS, registry=registry)
    return histogram, Counter(f"{prefix}_events", "c", ["t"], registry=registry)


def _samples(registry: CollectorRegistry, prefix: str) -> list[str]:
    text = generate_latest(registry).decode()
    return [
        line.replace(prefix, "x")
        for line in text.splitlines()
        if line.startswith(prefix) and "_created" not in line
    ]


def test_flush_equals_observing_one_by_one() -> None:
    registry = CollectorRegistry()
    direct, direct_count = _pair(registry, "direct")
    later, later_count = _pair(registry, "later")
    buffer = metrics.BufferedHistogram(later.labels("a"), later_count.labels("a"))
    rng = random.Random(7)
    # Values on the bounds too: a bound's own value belongs to its bucket (le).
    values = [rng.choice([*BUCKETS, 0.0, 5.0, rng.random() * 2]) for _ in range(3000)]
    for value in values:
        direct.labels("a").observe(value)
        direct_count.labels("a").inc()
        buffer.observe(value)
    buffer.flush()
    direct_lines, later_lines = _samples(registry, "direct"), _samples(registry, "later")
    # Bucket counts and event counts exactly; the sum is added in another order.
    assert [s for s in direct_lines if "_sum" not in s] == [
        s for s in later_lines if "_sum" not in s
    ]
    sums = [float(s.split()[-1]) for s in direct_lines + later_lines if "_sum" in s]
    assert sums[0] == pytest.approx(sums[1], rel=1e-12)


def test_nothing_is_written_until_a_flush_and_flush_pending_reaches_every_buffer() -> None:
    registry = CollectorRegistry()
    histogram, counter = _pair(registry, "held")
    buffer = metrics.BufferedHistogram(histogram.labels("a"), counter.labels("a"))
    buffer.observe(0.5)
    assert registry.get_sample_value("held_events_total", {"t": "a"}) == 0
    metrics.flush_pending()
    assert registry.get_sample_value("held_events_total", {"t": "a"}) == 1
    assert registry.get_sample_value("held_seconds_bucket", {"t": "a", "le": "1.0"}) == 1
    assert registry.get_sample_value("held_seconds_sum", {"t": "a"}) == 0.5


def test_a_full_buffer_writes_itself() -> None:
    registry = CollectorRegistry()
    histogram, _ = _pair(registry, "full")
    buffer = metrics.buffered(histogram.labels("a"))
    assert metrics.buffered(histogram.labels("a")) is buffer  # one buffer per child
    for _ in range(metrics._FLUSH_AT):
        buffer.observe(0.002)
    assert registry.get_sample_value("full_seconds_count", {"t": "a"}) == metrics._FLUSH_AT


def test_an_in_process_scrape_shows_what_was_just_observed() -> None:
    # No multiprocess folder (tests, an embedding app): exposition() flushes all the same.
    before = metrics.exposition()[0].decode()
    metrics.observe_request("scraped", "lookup", 200, 0.002)
    text = metrics.exposition()[0].decode()
    line = 'embedding_requests_total{route="lookup",status="200",table="scraped"}'
    assert line not in before and f"{line} 1.0" in text
