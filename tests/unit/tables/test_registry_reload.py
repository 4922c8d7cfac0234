"""Reload machinery of the registry: publishing, retries after store errors, pinned versions,
a starting worker counted by reloads, settled file sets (fakes for the store)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from service.settings import ServiceSettings
from service.tables import registry as registry_module
from service.tables.registry import TableRegistry
from service.tables.worker_state import read_peers


def make_registry(folder: Path, run_dir: Path | None = None, **settings: Any) -> TableRegistry:
    folder.mkdir(parents=True, exist_ok=True)
    settings.setdefault("reload_poll_seconds", 60.0)  # the tests poll by hand
    return TableRegistry(ServiceSettings(models=folder, run_dir=run_dir, **settings))


def test_publish_writes_the_state_as_it_was_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = make_registry(tmp_path / "models", tmp_path / "run")
    registry.state.tables["t"] = "v1"
    real_to_thread = asyncio.to_thread

    async def loop_changes_state_first(func: Callable[..., Any], *args: Any) -> Any:
        registry.state.tables["t"] = "v2"  # the loop moves on while the thread writes
        return await real_to_thread(func, *args)

    monkeypatch.setattr(registry_module.asyncio, "to_thread", loop_changes_state_first)
    asyncio.run(registry._publish())
    assert read_peers(tmp_path / "run")[0].tables == {"t": "v1"}
    assert read_peers(tmp_path / "run")[0].pid == os.getpid()
