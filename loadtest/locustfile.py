"""Locust load test of the embedding service.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8000 --headless -u 50 -r 10 -t 1m \
        --csv loadtest/reports/run --html loadtest/reports/run.html

Configuration (environment):
  EMBED_LOCUST_TABLE         table to hit (default: the first in /v1/tables)
  EMBED_LOCUST_WEIGHTS       user mix, e.g. "json=4,binary=2,base64=1,sequences=1"
  EMBED_LOCUST_DISTRIBUTION  "zipf" (default: skewed, as real recommender/word traffic) or "uniform"
  EMBED_LOCUST_ZIPF_A        Zipf exponent (default 1.1); rank k is id k
  EMBED_LOCUST_IDS           ids per lookup request (default 32)
  EMBED_LOCUST_SEQUENCES     sequences per request (default 8), each up to 2x EMBED_LOCUST_IDS/8 long
  EMBED_LOCUST_TABLE_FILE    a local .npy copy of the table: a sample of responses is checked value by value
  EMBED_LOCUST_VERIFY        fraction of responses value-checked when the copy is given (default 0.05)

Every response is checked for status and shape; a wrong shape or value is a locust failure.
The table's row count and dim are read from /v1/tables.
"""

from __future__ import annotations

import base64
import os
import random
import threading

import numpy as np
from locust import HttpUser, between, task

WEIGHTS = dict(
    (part.split("=")[0].strip(), int(part.split("=")[1]))
    for part in os.environ.get(
        "EMBED_LOCUST_WEIGHTS", "json=4,binary=2,base64=1,sequences=1"
    ).split(",")
    if "=" in part
)
DISTRIBUTION = os.environ.get("EMBED_LOCUST_DISTRIBUTION", "zipf")
ZIPF_A = float(os.environ.get("EMBED_LOCUST_ZIPF_A", "1.1"))
IDS_PER_REQUEST = int(os.environ.get("EMBED_LOCUST_IDS", "32"))
SEQUENCES = int(os.environ.get("EMBED_LOCUST_SEQUENCES", "8"))
VERIFY = float(os.environ.get("EMBED_LOCUST_VERIFY", "0.05"))
TABLE_FILE = os.environ.get("EMBED_LOCUST_TABLE_FILE")


class TableShape:
    """Rows, dim and the id sampler, fetched once per process from /v1/tables."""

    _lock = threading.Lock()
    name: str | None = None
    rows = 0
    dim = 0
    cdf: np.ndarray | None = None
    local: np.ndarray | None = None

    @classmethod
    def ensure(cls, client) -> None:
        with cls._lock:
            if cls.name is not None:
                return
            tables = client.get("/v1/tables", name="/v1/tables").json()["tables"]
            wanted = os.environ.get("EMBED_LOCUST_TABLE")
            info = next(t for t in tables if t["name"] == wanted) if wanted else tables[0]
            cls.rows, cls.dim = int(info["rows"]), int(info["dim"])
            if DISTRIBUTION == "zipf":
                weights = 1.0 / np.arange(1, cls.rows + 1, dtype=np.float64) ** ZIPF_A
                cls.cdf = np.cumsum(weights / weights.sum())
            if TABLE_FILE:
                cls.local = np.load(TABLE_FILE, mmap_mode="r")
            cls.name = info["name"]

    @classmethod
    def ids(cls, size: int | tuple[int, ...]) -> np.ndarray:
        if cls.cdf is None:
            return np.random.randint(0, cls.rows, size=size)
        draws = np.random.random_sample(size)
        return np.minimum(np.searchsorted(cls.cdf, draws), cls.rows - 1)

    @classmethod
    def expected(cls, ids: np.ndarray) -> np.ndarray | None:
        if cls.local is None or random.random() >= VERIFY:
            return None
        return np.asarray(cls.local[ids], dtype=np.float32)


class _TableUser(HttpUser):
    abstract = True
    wait_time = between(0, 0.01)

    def on_start(self) -> None:
        TableShape.ensure(self.client)
        self.path = f"/v1/tables/{TableShape.name}"

    def check(
        self, response, shape: tuple[int, ...], vectors: np.ndarray | None, ids: np.ndarray
    ) -> None:
        if response.status_code != 200:
            response.failure(f"status {response.status_code}: {response.text[:200]}")
            return
        if vectors is None or vectors.shape != shape:
            response.failure(f"shape {None if vectors is None else vectors.shape} != {shape}")
            return
        expected = TableShape.expected(ids)
        if expected is not None and not np.array_equal(vectors, expected):
            response.failure("vectors differ from the local copy of the table")
            return
        response.success()


class JsonLookupUser(_TableUser):
    weight = WEIGHTS.get("json", 0)

    @task
    def lookup(self) -> None:
        ids = TableShape.ids(IDS_PER_REQUEST)
        with self.client.post(
            f"{self.path}/lookup",
            json={"ids": ids.tolist()},
            name="lookup json",
            catch_response=True,
        ) as r:
            vectors = (
                np.array(r.json()["vectors"], dtype=np.float32) if r.status_code == 200 else None
            )
            self.check(r, (IDS_PER_REQUEST, TableShape.dim), vectors, ids)


class Base64LookupUser(_TableUser):
    weight = WEIGHTS.get("base64", 0)

    @task
    def lookup(self) -> None:
        ids = TableShape.ids((4, IDS_PER_REQUEST // 4 or 1))
        with self.client.post(
            f"{self.path}/lookup",
            json={"ids": ids.tolist(), "encoding": "base64"},
            name="lookup base64",
            catch_response=True,
        ) as r:
            vectors = None
            if r.status_code == 200:
                body = r.json()
                vectors = np.frombuffer(base64.b64decode(body["vectors"]), "<f4").reshape(
                    body["shape"]
                )
            self.check(r, (*ids.shape, TableShape.dim), vectors, ids)


class BinaryLookupUser(_TableUser):
    weight = WEIGHTS.get("binary", 0)

    @task
    def lookup(self) -> None:
        ids = TableShape.ids(IDS_PER_REQUEST).astype("<i8")
        headers = {"Content-Type": "application/octet-stream", "Accept": "application/octet-stream"}
        with self.client.post(
            f"{self.path}/lookup",
            data=ids.tobytes(),
            headers=headers,
            name="lookup binary",
            catch_response=True,
        ) as r:
            vectors = None
            if r.status_code == 200:
                shape = tuple(int(d) for d in r.headers["X-Shape"].split(","))
                vectors = np.frombuffer(r.content, "<f4").reshape(shape)
            self.check(r, (IDS_PER_REQUEST, TableShape.dim), vectors, ids)


class SequencesUser(_TableUser):
    weight = WEIGHTS.get("sequences", 0)

    @task
    def sequences(self) -> None:
        longest = max(1, 2 * IDS_PER_REQUEST // SEQUENCES)
        lengths = np.random.randint(0, longest + 1, size=SEQUENCES)
        flat = TableShape.ids(int(lengths.sum()))
        sequences = np.split(flat, np.cumsum(lengths)[:-1])
        body = {"sequences": [s.tolist() for s in sequences]}
        with self.client.post(
            f"{self.path}/sequences", json=body, name="sequences", catch_response=True
        ) as r:
            if r.status_code != 200:
                r.failure(f"status {r.status_code}: {r.text[:200]}")
                return
            data = r.json()
            length = int(lengths.max()) if lengths.size else 0
            mask = np.array(data["mask"], dtype=bool).reshape(SEQUENCES, length)
            if (
                data["shape"] != [SEQUENCES, length, TableShape.dim]
                or data["lengths"] != lengths.tolist()
            ):
                r.failure(f"shape {data['shape']} / lengths {data['lengths']} wrong")
            elif mask.sum() > lengths.sum():
                r.failure("more masked-in positions than ids sent")
            else:
                r.success()
