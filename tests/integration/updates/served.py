"""Helpers of the served row-update tests: servers over one repository, updates, reads."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from tests.support.polling import wait_until
from tests.support.server_process import ServerProcess

ADMIN = "admin-key"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
DEADLINE_S = 60.0
FRESH_READS = 24  # fresh connections that must all see a value (they spread over the workers)


def start(models: Path, *args: str, workers: int = 2) -> ServerProcess:
    """A ready server over ``models`` with the admin key and ``workers`` workers."""
    server = ServerProcess(models, "--workers", str(workers), *args, env={"EMBED_ADMIN_KEY": ADMIN})
    try:
        server.wait_ready()
        wait_until(lambda: loaded_workers(server.url) == workers, "every worker loaded")
    except BaseException:
        server.stop()
        raise
    return server


def loaded_workers(url: str) -> int:
    """Workers of the server that have loaded their tables (``embedding_workers``)."""
    found = re.search(r"^embedding_workers (\S+)$", httpx.get(f"{url}/metrics").text, re.M)
    return int(float(found.group(1))) if found else 0


def update(
    url: str,
    table: str,
    ids: list[int],
    rows: np.ndarray,
    update_id: str | None = None,
    **query: str,
) -> httpx.Response:
    """POST one update as JSON float rows."""
    body: dict[str, Any] = {"ids": ids, "vectors": np.asarray(rows).tolist()}
    if update_id is not None:
        body["update_id"] = update_id
    return httpx.post(
        f"{url}/v1/admin/tables/{table}/rows", json=body, headers=AUTH, params=query, timeout=60
    )


def lookup(client: httpx.Client, table: str, ids: list[int]) -> np.ndarray:
    response = client.post(f"/v1/tables/{table}/lookup", json={"ids": ids})
    assert response.status_code == 200, response.text
    return np.array(response.json()["vectors"], dtype=np.float32)


def fresh_lookup(url: str, table: str, ids: list[int]) -> np.ndarray:
    """A lookup on a new connection (so, over many calls, on every worker)."""
    with httpx.Client(base_url=url, timeout=30) as client:
        return lookup(client, table, ids)


def applied_in_workers(url: str, table: str) -> int:
    """Updates applied, summed over the server's workers (the delay histogram's count)."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    pattern = rf'^embedding_row_update_delay_seconds_count\{{table="{re.escape(table)}"\}} (\S+)$'
    found = re.search(pattern, text, re.MULTILINE)
    return int(float(found.group(1))) if found else 0


def wait_served(urls: list[str], table: str, ids: list[int], expected: np.ndarray) -> None:
    """Poll (deadline) until ``FRESH_READS`` fresh connections in a row to each server read
    ``expected`` -- every worker of every server serves it."""
    deadline = time.monotonic() + DEADLINE_S
    for url in urls:
        streak = 0
        while streak < FRESH_READS:
            assert time.monotonic() < deadline, f"{url} never served the update everywhere"
            if np.array_equal(fresh_lookup(url, table, ids), expected):
                streak += 1
            else:
                streak = 0
                time.sleep(0.02)


def table_info(url: str, table: str) -> dict[str, Any]:
    info: dict[str, Any] = httpx.get(f"{url}/v1/tables/{table}", timeout=30).json()
    return info
