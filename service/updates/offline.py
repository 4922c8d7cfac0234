"""``embedding-service update TABLE (--models DIR | --redis URL) --ids IDS.npy --vectors ROWS.npy``.

The same update as ``POST /v1/admin/tables/{table}/rows``, written with no service running (a
training job holding the repository volume or the Redis URL); services reading the same
repository or Redis pick it up as they pick up any update. ``run_update`` is the function the
CLI calls; it returns what to print.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.repository.discovery import TableSource
from service.repository.layout import discover_repository
from service.repository.npy_loader import load_npy, map_npy
from service.repository.onnx_loader import load_onnx
from service.updates.file_log import FileUpdateLog
from service.updates.redis_writer import RedisRowUpdates
from service.updates.validation import WriteResult


class UpdateTargetError(LookupError):
    """The table, or the version of it asked for, is not there to update."""


@dataclass(frozen=True)
class UpdateRequest:
    """One update as the command takes it: ids, rows, and which update and version."""

    ids: np.ndarray
    rows: np.ndarray
    update_id: str | None = None
    version: str | None = None  # a number or label (file tables), a version (Redis)


@dataclass(frozen=True)
class UpdateOutcome:
    """What the command prints: ``{"table", "version", "sequence", "rows"}`` and more."""

    table: str
    version: str
    result: WriteResult

    def summary(self) -> dict[str, object]:
        return {
            "table": self.table,
            "version": self.version,
            "sequence": self.result.sequence,
            "rows": self.result.rows,
            "applied": self.result.applied,
        }


def run_update(
    table: str,
    ids_path: Path,
    vectors_path: Path,
    *,
    models: Path | None = None,
    redis_url: str | None = None,
    update_id: str | None = None,
    version: str | None = None,
) -> UpdateOutcome:
    """Apply one update from ``.npy`` files to a file table of ``models`` or a Redis table."""
    if (models is None) == (redis_url is None):
        raise ValueError("give exactly one of --models and --redis")
    ids = np.asarray(map_npy(ids_path, "ids file"))
    rows = np.asarray(map_npy(vectors_path, "vectors file"))
    request = UpdateRequest(ids, rows, update_id, version)
    if redis_url is not None:
        return asyncio.run(update_redis_table(redis_url, table, request))
    assert models is not None
    return update_file_table(models, table, request)


def update_file_table(models: Path, table: str, request: UpdateRequest) -> UpdateOutcome:
    """Write one update into the log of ``table`` in ``models`` (default: its default version)."""
    source = table_source(models, table, request.version)
    weights = load_onnx(source.path) if source.format == "onnx" else load_npy(source.path)
    log = FileUpdateLog.for_weights(weights)
    result = log.write(request.ids, request.rows, request.update_id)
    shown = str(source.version) if source.version is not None else log.version
    return UpdateOutcome(table, shown, result)


async def update_redis_table(url: str, table: str, request: UpdateRequest) -> UpdateOutcome:
    """Write one update into Redis table ``table`` (default: its current version)."""
    writer = await RedisRowUpdates.connect(url, table)
    try:
        meta = await writer.meta(request.version)
        result = await writer.write(request.ids, request.rows, request.update_id, meta.version)
        return UpdateOutcome(table, meta.version, result)
    finally:
        await writer.aclose()


def table_source(models: Path, table: str, version: str | None) -> TableSource:
    """The file of ``table`` in ``models`` at ``version`` (a number or label; default: default)."""
    repository = discover_repository(models)
    if table in repository.flat:
        source = repository.flat[table]
        if version not in (None, "1") or source.format == "redis":
            raise UpdateTargetError(f"{table}: no file version {version} to update here")
        return source
    versioned = repository.tables.get(table)
    if versioned is not None:
        resolution = versioned.resolve()
        number = resolution.default if version is None else resolution.version_of(version)
        if number is None or number not in versioned.versions:
            raise UpdateTargetError(f"{table}: version {version} is not served")
        return versioned.versions[number].source
    group_name, _, stem = table.partition(".")
    group = repository.groups.get(group_name)
    if group is not None and stem in group.members:
        resolution = group.resolve()
        number = resolution.default if version is None else resolution.version_of(version)
        if number is not None and number in group.versions:
            return group.versions[number].members[stem]
    problem = repository.problems.get(table)
    raise UpdateTargetError(
        f"{table}: no such table in {models}" + (f" ({problem})" if problem else "")
    )
