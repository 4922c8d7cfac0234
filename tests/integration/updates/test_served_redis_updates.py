"""Row updates of Redis tables with real servers: two processes of two workers on one Redis,
their hot-row caches dropped for the updated rows (API.md, "Row updates")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.integration.updates.served import (
    FRESH_READS,
    fresh_lookup,
    start,
    table_info,
    update,
    wait_served,
)
from tests.support.polling import wait_until
from tests.support.redis_servers import push_cli, redis_table_toml
from tests.support.tables import random_table, write_npy

ROWS, DIM = 2000, 8


@pytest.fixture(params=["single", "cluster"])
def store(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(f"redis_{request.param}")


def test_redis_updates_drop_cached_rows_in_every_process(tmp_path: Path, store: Any) -> None:
    table = random_table(ROWS, DIM, 41)
    name = f"upd_{tmp_path.name[-12:].replace('-', '_')}"
    push_cli(str(write_npy(tmp_path, "src", table)), "--redis", store.url, "--name", name)
    models = tmp_path / "models"
    models.mkdir()
    (models / f"{name}.toml").write_text(redis_table_toml(store.url, "cache_rows = 1000\n"))
    ids = [5, 77, 1999]
    with start(models) as one, start(models) as two:
        for url in (one.url, two.url):  # every worker caches the rows
            for _ in range(FRESH_READS):
                assert np.array_equal(fresh_lookup(url, name, ids), table[ids])
        new = np.full((3, DIM), 2.5, np.float32)
        response = update(one.url, name, ids, new, "r-1")
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["sequence"] == 1 and answer["rows"] == 3
        assert answer["version"] == table_info(one.url, name)["version"]
        # The answering worker serves it at once; every other one once its feed says so.
        wait_served([one.url, two.url], name, ids, new)
        assert update(two.url, name, ids, np.zeros((3, DIM)), "r-1").json() == answer
        # The offline command, on the same Redis.
        np.save(tmp_path / "ids.npy", np.array([77]))
        np.save(tmp_path / "rows.npy", np.full((1, DIM), 7.0, np.float32))
        command = [sys.executable, "-m", "service", "update", name, "--redis", store.url]
        command += ["--ids", str(tmp_path / "ids.npy"), "--vectors", str(tmp_path / "rows.npy")]
        summary = json.loads(subprocess.run(command, capture_output=True, check=True).stdout)
        assert summary["sequence"] == 2
        wait_served([one.url, two.url], name, [77], np.full((1, DIM), 7.0, np.float32))
        for url in (one.url, two.url):
            wait_until(
                lambda u=url: all(table_info(u, name)["update_sequence"] == 2 for _ in range(8)),
                f"update_sequence 2 in every worker of {url}",
            )
