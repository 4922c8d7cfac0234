"""The admin reload use case: what each kind of failure answers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from service.errors import (
    BackendUnavailable,
    ReloadFailed,
    TableLoadError,
    TableNotFound,
    TableRemoved,
)
from service.tables.table_builder import RedisNotReady
from service.usecases.tables import reload_table


class _Registry:
    """Just what ``reload_table`` asks of a registry; ``reload`` raises ``error``."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def has(self, _name: str) -> bool:
        return False

    async def reload(self, _name: str, _version: str | None = None) -> Any:
        raise self.error


def _reload(error: BaseException) -> None:
    asyncio.run(reload_table(_Registry(error), "t"))  # type: ignore[arg-type]


def test_a_store_that_cannot_answer_is_503_with_retry_after() -> None:
    with pytest.raises(BackendUnavailable) as raised:
        _reload(RedisNotReady("timed out reading the version"))
    assert raised.value.status == 503 and raised.value.headers["Retry-After"]
    with pytest.raises(BackendUnavailable):
        _reload(ConnectionError("connection refused"))


def test_a_version_that_fails_to_load_is_409() -> None:
    with pytest.raises(ReloadFailed):
        _reload(TableLoadError("t.npy: not an .npy file"))


def test_a_table_removed_from_the_repository_and_never_served_is_404() -> None:
    with pytest.raises(TableNotFound):
        _reload(TableRemoved("table 't' is no longer in the repository"))
    with pytest.raises(ReloadFailed):  # a table that fails to load is not a removed one
        _reload(TableLoadError("table 't' is no longer in the repository"))
