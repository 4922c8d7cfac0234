"""Row updates of a versioned table with real servers: an update belongs to the version it
names (``?version=``) and every worker of both processes serves it there; the other version
keeps its own rows (API.md, "Row updates": "a new version starts from its own rows")."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np

from tests.integration.updates.served import start, update
from tests.support.polling import wait_until
from tests.support.tables import random_table

ROWS, DIM = 512, 8


def _versioned(models: Path) -> dict[str, np.ndarray]:
    tables = {"1": random_table(ROWS, DIM, 1), "2": random_table(ROWS, DIM, 2)}
    (models / "v").mkdir(parents=True)
    (models / "v" / "table.toml").write_text("versions = {all = true}\n")
    for number, table in tables.items():
        (models / "v" / number).mkdir()
        np.save(models / "v" / number / "v.npy", table)
    return tables


def _read(url: str, ids: list[int], version: str) -> tuple[np.ndarray, str]:
    """A lookup pinned to ``version`` on a fresh connection, and the version that answered."""
    with httpx.Client(base_url=url, timeout=30) as client:
        response = client.post(
            "/v1/tables/v/lookup", params={"version": version}, json={"ids": ids}
        )
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["vectors"], np.float32), response.headers["x-table-version"]


def _served_everywhere(urls: list[str], ids: list[int], version: str, rows: np.ndarray) -> bool:
    """Ten fresh connections to each server read ``rows`` at ``version`` (every worker)."""
    for url in urls:
        for _ in range(10):
            vectors, answered = _read(url, ids, version)
            assert answered == version
            if not np.array_equal(vectors, rows):
                return False
    return True


def test_an_update_to_one_version_is_served_there_by_every_worker_and_not_elsewhere(
    tmp_path: Path,
) -> None:
    models = tmp_path / "models"
    tables = _versioned(models)
    ids, new = [0, 7, 511], np.full((3, DIM), 0.25, np.float32)
    with start(models) as one, start(models) as two:
        response = update(one.url, "v", ids, new, version="1")
        assert response.status_code == 200, response.text
        assert response.json()["version"] == "1" and response.json()["sequence"] == 1
        assert response.headers["x-table-version"] == "1"
        wait_until(
            lambda: _served_everywhere([one.url, two.url], ids, "1", new),
            "every worker of both processes serving the update at version 1",
        )
        # Version 2 (the default) keeps its own rows; its sequence is its own.
        assert _served_everywhere([one.url, two.url], ids, "2", tables["2"][ids])
        info = httpx.get(f"{two.url}/v1/tables/v", params={"version": "1"}, timeout=30).json()
        assert info["update_sequence"] == 1
        info = httpx.get(f"{two.url}/v1/tables/v", timeout=30).json()
        assert info["version"] == "2" and info["update_sequence"] == 0
