"""A key put in the query string never lands in the access log (a real server's output)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.support.server_process import ServerProcess
from tests.support.tables import random_table, write_npy


def test_access_log_redacts_query_strings(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    write_npy(folder, "plain", random_table(10, 4))
    with ServerProcess(folder, "--access-log", "--log-level", "info") as server:
        server.wait_ready()
        httpx.get(server.url + "/v1/tables?api_key=TOPSECRET123&x=1")
        deadline = time.monotonic() + 30
        while "/v1/tables?api_key=***" not in server.log():
            assert time.monotonic() < deadline, server.log()[-2000:]
            time.sleep(0.1)
        assert "TOPSECRET123" not in server.log()
