"""The registry's version snapshots: picking versions and labels, 404 details, flips in one
step, groups served whole, held-back versions, the one-poll settle (real numpy tables)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest

from service.errors import GroupNotFound, TableNotFound, TableUnavailable, VersionNotFound
from service.settings import ServiceSettings
from service.tables.registry import TableRegistry
from service.tables.version_sets import VersionSet, sorted_versions

ROWS, DIM = 6, 2


def publish(folder: Path, number: int, **members: float) -> None:
    hidden = folder / f".{number}"
    hidden.mkdir(parents=True)
    for stem, value in members.items():
        np.save(hidden / f"{stem}.npy", np.full((ROWS, DIM), value, np.float32))
    os.replace(hidden, folder / str(number))


def value(registry: TableRegistry, name: str, version: str | None = None) -> float:
    table = registry.get(name, version)
    return float(np.asarray(table.backend.gather(np.array([0])))[0, 0])


@pytest.fixture
def models(tmp_path: Path) -> Path:
    models = tmp_path / "models"
    (models / "emb").mkdir(parents=True)
    (models / "emb" / "table.toml").write_text("versions = {latest = 2}\n[labels]\nstable = 1\n")
    publish(models / "emb", 1, emb=1)
    publish(models / "emb", 2, emb=2)
    (models / "g").mkdir()
    (models / "g" / "group.toml").write_text("versions = {latest = 1}\n")
    publish(models / "g", 4, a=4, b=4.5)
    np.save(models / "flat.npy", np.zeros((ROWS, DIM), np.float32))
    return models


def serve(models: Path, scenario: Callable[[TableRegistry], Awaitable[None]]) -> None:
    """Run ``scenario`` against a loaded registry of ``models`` (its watcher out of the way:
    the scenario polls itself with ``follow_versions``)."""

    async def main() -> None:
        settings = ServiceSettings(models=str(models), reload_poll_seconds=60, drain_seconds=0)
        registry = TableRegistry(settings)
        await registry.load()
        try:
            await scenario(registry)
        finally:
            await registry.close()

    asyncio.run(main())


def test_versions_and_labels_pick_one_table(models: Path) -> None:
    async def scenario(registry: TableRegistry) -> None:
        assert value(registry, "emb") == 2 and registry.get("emb").served_version == "2"
        assert value(registry, "emb", "1") == 1 and value(registry, "emb", "stable") == 1
        info = registry.info(registry.get("emb", "1"))
        assert (info["version"], info["versions"], info["labels"]) == (
            "2",
            ["1", "2"],
            {"stable": "1"},
        )
        with pytest.raises(VersionNotFound) as caught:
            registry.get("emb", "canary")
        assert caught.value.detail == {
            "table": "emb",
            "versions": ["1", "2"],
            "labels": {"stable": "1"},
        }

    serve(models, scenario)


def test_a_flat_table_has_its_one_version(models: Path) -> None:
    async def scenario(registry: TableRegistry) -> None:
        flat = registry.get("flat")
        assert registry.get("flat", flat.served_version) is flat
        assert registry.info(flat)["versions"] == [flat.served_version]
        with pytest.raises(VersionNotFound):
            registry.get("flat", "1")

    serve(models, scenario)


def test_a_request_holds_its_version_through_a_flip(models: Path) -> None:
    async def scenario(registry: TableRegistry) -> None:
        held = registry.get("emb")
        publish(models / "emb", 3, emb=3)
        await registry.follow_versions()  # seen once: may be half copied, not loaded yet
        assert registry.get("emb").served_version == "2"
        await registry.follow_versions()
        assert registry.get("emb").served_version == "3"
        assert registry.versions("emb").versions() == ["2", "3"]
        # The label named 1, which left the policy: named, and no longer bound.
        assert "emb@stable" in registry.status()[1]
        assert held.served_version == "2" and value(registry, "emb", "2") == 2

    serve(models, scenario)


def test_a_group_flips_for_every_member_at_once(models: Path) -> None:
    async def scenario(registry: TableRegistry) -> None:
        assert registry.group("g").info()["version"] == "4"
        assert value(registry, "g.b") == 4.5
        publish(models / "g", 5, a=5, b=5.5)
        await registry.follow_versions()
        await registry.follow_versions()
        group = registry.group("g")
        picked = group.pick(None)
        assert picked.version == "5" and set(picked.members) == {"a", "b"}
        assert registry.get("g.a").served_version == registry.get("g.b").served_version == "5"
        with pytest.raises(VersionNotFound):
            group.pick("4")  # latest = 1: 4 left for every member together
        with pytest.raises(GroupNotFound):
            registry.group("nope")

    serve(models, scenario)


def test_a_broken_or_incomplete_group_version_is_held_back(models: Path) -> None:
    async def scenario(registry: TableRegistry) -> None:
        (models / "g" / "6").mkdir()
        np.save(models / "g" / "6" / "a.npy", np.zeros((ROWS, DIM), np.float32))
        for _ in range(2):
            await registry.follow_versions()
        state, failed = registry.status()
        assert state == "ready" and "g/6" in failed and registry.group("g").default == "4"
        (models / "g" / "6" / "b.npy").write_bytes(b"not npy")
        for _ in range(2):
            await registry.follow_versions()
        state, failed = registry.status()
        assert state == "ready" and "member g.b" in failed["g/6"]
        assert registry.group("g").default == "4"

    serve(models, scenario)


def test_a_table_that_serves_nothing_is_unavailable(tmp_path: Path) -> None:
    models = tmp_path / "models"
    (models / "empty").mkdir(parents=True)
    (models / "empty" / "table.toml").write_text("versions = {latest = 1}\n")
    publish(models / "empty", 1, emb=1)
    (models / "empty" / "1" / "emb.npy").write_bytes(b"broken")

    async def scenario(registry: TableRegistry) -> None:
        assert registry.status()[0] == "degraded"
        with pytest.raises(TableUnavailable):
            registry.get("empty")

    serve(models, scenario)


def test_versions_sort_by_number_then_name() -> None:
    assert sorted_versions({"10": 1, "9": 1, "abc": 1}) == ["9", "10", "abc"]


def test_a_single_version_set_names_its_table(models: Path) -> None:
    async def scenario(registry: TableRegistry) -> None:
        flat = registry.get("flat")
        single = VersionSet.single(flat)
        assert single.pick(None) is flat and single.detail()["labels"] == {}

    serve(models, scenario)


def test_the_admin_reload_of_a_version_loads_it_again(models: Path) -> None:
    async def scenario(registry: TableRegistry) -> None:
        before = registry.get("emb", "1")
        reloaded = await registry.reload("emb", "stable")
        assert reloaded.served_version == "1" and reloaded is not before
        assert registry.get("emb", "1") is reloaded
        assert registry.get("emb", "2").served_version == "2"
        with pytest.raises(VersionNotFound):
            await registry.reload("emb", "7")

    serve(models, scenario)


def test_a_versioned_table_that_leaves_the_repository_is_unloaded(models: Path) -> None:
    async def scenario(registry: TableRegistry) -> None:
        for path in sorted((models / "emb").rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        (models / "emb").rmdir()
        await registry.follow_versions()
        assert not registry.has("emb") and "emb" not in registry.status()[1]
        with pytest.raises(TableNotFound):
            registry.get("emb")

    serve(models, scenario)
