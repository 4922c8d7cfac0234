"""A reload while ``neighbors`` searches run and queue on the old version answers them all."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np

from tests.support.server_process import ServerProcess

ROWS, DIM = 200_000, 32
SEARCHES = 4  # one runs on the table's search thread, the others queue behind it


def test_reload_answers_running_and_queued_searches(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    table = np.random.default_rng(5).standard_normal((ROWS, DIM)).astype(np.float32)
    np.save(folder / "t.npy", table)
    # Enough queries per search that each takes a while: the later ones are still queued when
    # the reload retires the version they were sent to.
    body = {
        "ids": list(range(0, ROWS, ROWS // 256)),
        "k": 5,
        "metric": "dot",
        "exclude_self": False,
    }
    with ServerProcess(folder, env={"EMBED_ADMIN_KEY": "adm"}) as server:
        server.wait_ready()

        async def run() -> tuple[list[httpx.Response], httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
                searches = [
                    asyncio.ensure_future(http.post("/v1/tables/t/neighbors", json=body))
                    for _ in range(SEARCHES)
                ]
                reload = await http.post(
                    "/v1/admin/tables/t/reload", headers={"Authorization": "Bearer adm"}
                )
                return list(await asyncio.gather(*searches)), reload

        searches, reload = asyncio.run(run())
        assert reload.status_code == 200, reload.text
        assert [r.status_code for r in searches] == [200] * SEARCHES, [
            r.text[:200] for r in searches if r.status_code != 200
        ]
        expected = np.argsort(-(table[body["ids"][:1]] @ table.T)[0], kind="stable")[:5]
        for response in searches:
            assert response.json()["ids"][0] == expected.tolist()
