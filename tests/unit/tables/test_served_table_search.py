"""Searches of a table version being retired (reload) are answered, not cancelled into 500s."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest

from service.errors import Overloaded
from service.semantics.neighbors import ExactNeighborIndex
from service.settings import ServiceSettings
from service.tables import served_table
from service.tables.registry import TableRegistry
from service.tables.served_table import ServedTable
from tests.support.polling import until

ROWS, DIM = 50, 4


class GatedIndex(ExactNeighborIndex):
    """The real search, held on the search thread until the test opens the gate."""

    gate = threading.Event()
    entered = threading.Event()

    def search(self, *args, **kwargs):
        self.entered.set()
        assert self.gate.wait(60), "test never opened the gate"
        return super().search(*args, **kwargs)


@pytest.fixture
def gated(monkeypatch) -> type[GatedIndex]:
    GatedIndex.gate = threading.Event()
    GatedIndex.entered = threading.Event()
    monkeypatch.setattr(served_table, "ExactNeighborIndex", GatedIndex)
    return GatedIndex


def registry_of(tmp_path: Path) -> TableRegistry:
    models = tmp_path / "models"
    models.mkdir()
    rng = np.random.default_rng(0)
    np.save(models / "t.npy", rng.standard_normal((ROWS, DIM)).astype(np.float32))
    settings = ServiceSettings(models=models, reload_watch_files=False, reload_poll_seconds=60)
    return TableRegistry(settings)


async def _one_search_running(
    table: ServedTable, gated: type[GatedIndex]
) -> tuple[np.ndarray, asyncio.Future]:
    """A search held on the table's search thread (the gate closed), and its queries."""
    queries = np.asarray(table.local_weights("neighbors").array[:2])
    running = asyncio.ensure_future(table.search(queries, 3, "cosine", None))
    await asyncio.to_thread(gated.entered.wait, 60)
    return queries, running


def test_reload_answers_the_searches_of_the_old_version(tmp_path: Path, gated, monkeypatch) -> None:
    async def scenario() -> None:
        registry = registry_of(tmp_path)
        await registry.load()
        old = registry.get("t")
        queries, running = await _one_search_running(old, gated)
        queued = asyncio.ensure_future(old.search(queries, 3, "dot", None))  # behind `running`
        await until(lambda: old.searches == 2, "the second search to be queued")

        drain = old.drain
        draining = asyncio.Event()

        async def spy(timeout: float) -> bool:
            draining.set()
            return await drain(timeout)

        monkeypatch.setattr(old, "drain", spy)
        await registry.reload_local("t")  # swaps in the new version; the old one retires
        assert registry.get("t") is not old
        await asyncio.wait_for(draining.wait(), 60)  # the retire is waiting on the searches
        gated.gate.set()
        for search in (running, queued):
            ids, scores = await search  # answered by the old version, not cancelled
            assert ids.shape == scores.shape == (2, 3)
        await until(lambda: old.searches == 0, "the searches to be counted out")
        await registry.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_search_on_a_retired_version_is_503_with_retry_after(tmp_path: Path, gated) -> None:
    async def scenario() -> None:
        registry = registry_of(tmp_path)
        await registry.load()
        table: ServedTable = registry.get("t")
        gated.gate.set()
        queries = np.asarray(table.local_weights("neighbors").array[:1])
        await table.search(queries, 2, "cosine", None)
        table.close_search()
        with pytest.raises(Overloaded) as retired:  # not the executor's RuntimeError (500)
            await table.search(queries, 2, "cosine", None)
        assert retired.value.headers["Retry-After"]
        await registry.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_closing_the_registry_drops_queued_searches(tmp_path: Path, gated) -> None:
    """At process exit nobody waits for queued searches: they are cancelled rather than run
    one after another before the interpreter may exit; the running one finishes."""

    async def scenario() -> None:
        registry = registry_of(tmp_path)
        await registry.load()
        table = registry.get("t")
        queries, running = await _one_search_running(table, gated)
        queued = [asyncio.ensure_future(table.search(queries, 3, "dot", None)) for _ in range(3)]
        await until(lambda: table.searches == 4, "three searches queued behind the first")
        await registry.close()
        gated.gate.set()
        ids, _ = await running
        assert ids.shape == (2, 3)
        for search in queued:
            with pytest.raises(asyncio.CancelledError):
                await search

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_a_retired_version_waits_for_the_requests_holding_it(tmp_path: Path) -> None:
    """A request that resolved a version (the ASGI path holds it until answered) is never
    answered from a closed table: the retired version's drain waits for it (bounded)."""

    async def scenario() -> None:
        registry = registry_of(tmp_path)
        await registry.load()
        old = registry.get("t")
        old.hold()  # a request between its resolver and its answer
        draining = asyncio.ensure_future(old.drain(30))
        await asyncio.sleep(0.05)
        assert not draining.done(), "drained under a request holding the version"
        rows = old.batcher.gather_inline(np.array([1, 2]))  # the request goes on: served
        assert rows.rows.shape == (2, DIM)
        old.release()
        assert await asyncio.wait_for(draining, 30)
        await registry.close()

    asyncio.run(scenario())
