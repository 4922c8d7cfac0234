"""No cross-talk, nothing lost: many concurrent clients, mixed requests, some abandoned mid-flight.

CI size: 256 clients, 20,000 requests. Larger, by hand:
    STRESS_CLIENTS=1024 STRESS_REQUESTS=200000 python3 -m pytest tests/robustness/test_stress.py
"""

from __future__ import annotations

import asyncio
import os
import random
import time

import httpx
import numpy as np
import orjson

from tests.support.raw_http import RawConnection

CLIENTS = int(os.environ.get("STRESS_CLIENTS", "256"))
REQUESTS = int(os.environ.get("STRESS_REQUESTS", "20000"))
CANCEL_EVERY = 50  # one request in 50 is abandoned by its client mid-flight


def expected_body(name: str, table: np.ndarray, kind: int, payload) -> bytes:
    """The exact bytes the service must answer (its JSON is byte-identical to orjson's)."""
    if kind < 2:
        vectors = table[payload]
        return orjson.dumps(
            {"table": name, "shape": list(vectors.shape), "dtype": "float32", "vectors": vectors},
            option=orjson.OPT_SERIALIZE_NUMPY,
        )
    lengths = [len(s) for s in payload]
    longest = max(lengths) if lengths else 0
    vectors = np.zeros((len(payload), longest, table.shape[1]), np.float32)
    mask = np.zeros((len(payload), longest), bool)
    for b, seq in enumerate(payload):
        vectors[b, : len(seq)] = table[seq]
        mask[b, : len(seq)] = True
    return orjson.dumps(
        {
            "table": name,
            "shape": list(vectors.shape),
            "dtype": "float32",
            "vectors": vectors,
            "mask": mask,
            "lengths": lengths,
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def test_stress_every_response_is_its_own(server, tables) -> None:
    names = ["plain", "batched"]
    counts = {"sent": 0, "answered": 0, "cancelled": 0}
    failures: list[str] = []
    next_index = iter(range(REQUESTS))

    async def client() -> None:
        connection = RawConnection("127.0.0.1", server.port)
        for index in next_index:
            rng = np.random.default_rng(index)
            name = names[index % 2]
            table = tables[name]
            kind = index % 3
            if kind == 0:
                payload = rng.integers(0, len(table), size=int(rng.integers(1, 40)))
                path, body = f"/v1/tables/{name}/lookup", {"ids": payload.tolist()}
            elif kind == 1:
                payload = rng.integers(
                    0, len(table), size=(int(rng.integers(1, 5)), int(rng.integers(1, 6)))
                )
                path, body = f"/v1/tables/{name}/lookup", {"ids": payload.tolist()}
            else:
                lengths = rng.integers(0, 6, size=int(rng.integers(1, 5)))
                payload = [rng.integers(0, len(table), size=int(n)).tolist() for n in lengths]
                path, body = f"/v1/tables/{name}/sequences", {"sequences": payload}
            counts["sent"] += 1
            await connection.send(path, orjson.dumps(body))
            if index % CANCEL_EVERY == 0:
                # The client goes away mid-flight: the connection is dropped, never read.
                await asyncio.sleep(random.uniform(0, 0.001))
                connection.abort()
                counts["cancelled"] += 1
                continue
            status, _, answer = await connection.receive()
            if status != 200:
                failures.append(f"{index}: {status} {answer[:200]!r}")
            elif answer != expected_body(name, table, kind, payload):
                failures.append(f"{index}: response is not exactly table[ids] of this request")
            counts["answered"] += 1

    async def run() -> None:
        await asyncio.gather(*(client() for _ in range(CLIENTS)))

    started = time.perf_counter()
    asyncio.run(run())
    elapsed = time.perf_counter() - started
    assert not failures, failures[:5]
    assert counts["sent"] == REQUESTS
    assert counts["answered"] + counts["cancelled"] == counts["sent"]
    assert counts["cancelled"] > 0
    ready = httpx.get(server.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    print(f"stress: {counts} from {CLIENTS} concurrent clients in {elapsed:.1f} s, mismatches 0")
