"""Neighbour search over an updated table: updated rows are candidates with their new values
(and a query by id uses its row's new value), equal to the brute-force reference over the
table as updated -- on one worker, so the answering worker applied the update before its 200."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.integration.features.test_neighbors import reference
from tests.integration.updates.served import start, update
from tests.support.tables import write_npy


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
def test_neighbours_see_updated_rows_as_candidates_and_queries(tmp_path: Path, metric: str) -> None:
    models = tmp_path / "models"
    rng = np.random.default_rng(9)
    table = rng.standard_normal((70_000, 8)).astype(np.float32)  # more than one search block
    write_npy(models, "items", table)
    query = rng.standard_normal((1, 8)).astype(np.float32)
    updated = table.copy()
    changed = [3, 65_600, 40]  # row 65,600 lies in the second block
    updated[3] = query[0] * 3.0  # the query's nearest by every metric once updated
    updated[65_600] = query[0] * 2.0
    updated[40] = -query[0]  # a query by id uses the new row
    server = start(models, workers=1)
    try:
        answer = update(server.url, "items", changed, updated[changed])
        assert answer.status_code == 200, answer.text
        url = f"{server.url}/v1/tables/items/neighbors"
        for body, queries in (
            ({"vectors": query.tolist()}, query),
            ({"ids": [40], "exclude_self": False}, updated[[40]]),
        ):
            got = httpx.post(url, json={**body, "k": 5, "metric": metric}, timeout=60).json()
            ids, scores = reference(updated, queries, 5, metric)
            np.testing.assert_array_equal(np.array(got["ids"]), ids)
            np.testing.assert_allclose(np.array(got["scores"]), scores, rtol=1e-5, atol=1e-4)
        assert got["ids"][0][-1] != 3  # the updated rows answer with their new values
    finally:
        server.stop()
