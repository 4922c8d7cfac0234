"""Large JSON answers are rendered in slices with the event loop free between them, and
read exactly as one render would (lookup 1-D and 2-D, sequences, V2's flat list)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from service.http.app import create_app
from service.settings import ServiceSettings
from service.usecases import gather
from tests.support.tables import random_table, write_npy

TABLE = random_table(3000, 10, seed=4)
RNG = np.random.default_rng(9)
IDS = RNG.integers(0, 3000, 2500)
IDS_2D = RNG.integers(0, 3000, (60, 40))
SEQUENCES = [RNG.integers(0, 3000, n).tolist() for n in (5, 0, 31, 12) * 30]


def _exact(vectors: object) -> bytes:
    return orjson.dumps(np.asarray(vectors, np.float32), option=orjson.OPT_SERIALIZE_NUMPY)


async def _answers(http: httpx.AsyncClient) -> list[bytes]:
    """Vectors' JSON text of each kind of request, twice (cold and warm row-text cache)."""
    texts = []
    for _ in range(2):
        for ids in (IDS, IDS_2D):
            body = (await http.post("/v1/tables/t/lookup", json={"ids": ids.tolist()})).json()
            texts.append(_exact(body["vectors"]))
            assert texts[-1] == _exact(TABLE[ids])
        sequences = {"sequences": SEQUENCES, "max_length": 20}
        body = (await http.post("/v1/tables/t/sequences", json=sequences)).json()
        texts.append(orjson.dumps(body))
        v2 = {
            "inputs": [
                {"name": "ids", "shape": [IDS.size], "datatype": "INT64", "data": IDS.tolist()}
            ]
        }
        body = (await http.post("/v2/models/t/infer", json=v2)).json()
        data = np.asarray(body["outputs"][0]["data"], np.float32)
        assert np.array_equal(data, TABLE[IDS].reshape(-1))
        texts.append(orjson.dumps(body["outputs"][0]))
    return texts


def _serve(folder: Path, slice_numbers: int) -> tuple[list[bytes], int]:
    """The answers with ``SLICE_NUMBERS`` set, and how often a bystander task ran while
    the large lookup was answered."""
    app = create_app(ServiceSettings(models=folder))

    async def run() -> tuple[list[bytes], int]:
        await app.registry.load()
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                texts = await _answers(http)
                turns = 0
                done = False

                async def bystander() -> None:
                    nonlocal turns
                    while not done:
                        turns += 1
                        await asyncio.sleep(0)

                task = asyncio.create_task(bystander())
                await asyncio.sleep(0)
                started = turns
                await http.post("/v1/tables/t/lookup", json={"ids": IDS.tolist()})
                done = True
                await task
                return texts, turns - started
        finally:
            await app.registry.close()

    original = gather.SLICE_NUMBERS
    gather.SLICE_NUMBERS = slice_numbers
    try:
        return asyncio.run(run())
    finally:
        gather.SLICE_NUMBERS = original


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sliced") / "models"
    write_npy(folder, "t", TABLE)
    return folder


def test_sliced_answers_equal_one_render_and_let_the_loop_run(folder: Path) -> None:
    whole, _ = _serve(folder, 1 << 30)
    sliced, turns = _serve(folder, 1000)  # 100 rows of 10 per slice: 25 slices
    assert sliced == whole
    assert turns >= 24  # a turn between every two slices
