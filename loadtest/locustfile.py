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
  EMBED_LOCUST_VERSION       pin every request to this version or label (``?version=``); every
                             answer's X-Table-Version must then name it (a label: its version)
  EMBED_LOCUST_GROUP         also run group lookups (``POST /v1/groups/{name}/lookup``) of every
                             member of this group, EMBED_LOCUST_IDS ids each; weight "group" in
                             EMBED_LOCUST_WEIGHTS (default 1 when the group is named)

Every response is checked for status and shape (and version); a wrong one is a locust failure.
The table's row count and dim are read from /v1/tables (/v1/tables/{table}?version= when pinned);
a group's members from /v1/groups/{name}, their sizes from /v1/tables/{group}.{member}. A group
answer must name one version, the same in its body and its X-Table-Version header.
"""

from __future__ import annotations

import base64
import os
import random
import threading
from typing import ClassVar

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
VERSION = os.environ.get("EMBED_LOCUST_VERSION") or None
GROUP = os.environ.get("EMBED_LOCUST_GROUP") or None
PARAMS = {"version": VERSION} if VERSION else {}


def answered_version(info: dict) -> str | None:
    """The version a pinned request must be answered by, from the ``TableInfo`` (or
    ``GroupInfo``) read with the same ``?version=``: a label resolves to its version."""
    if VERSION is None:
        return None
    if VERSION.isdigit():
        return str(int(VERSION))
    return str(info.get("labels", {}).get(VERSION, info.get("version")))


def checked_json(response) -> dict:
    """The JSON of a set-up request's answer; a clear error (the run cannot go on) otherwise."""
    if response.status_code != 200:
        raise RuntimeError(f"{response.url}: {response.status_code} {response.text[:200]}")
    return response.json()


def version_error(response, expected: str | None) -> str | None:
    """Why ``response`` was answered by the wrong version (None when right or unpinned)."""
    got = response.headers.get("X-Table-Version")
    if expected is not None and got != expected:
        return f"X-Table-Version {got!r}, pinned {VERSION!r} is version {expected!r}"
    return None


def zipf_cdf(rows: int) -> np.ndarray | None:
    """The cumulative id distribution of a table of ``rows`` rows (None: uniform)."""
    if DISTRIBUTION != "zipf":
        return None
    weights = 1.0 / np.arange(1, rows + 1, dtype=np.float64) ** ZIPF_A
    return np.cumsum(weights / weights.sum())


def draw_ids(rows: int, cdf: np.ndarray | None, size: int | tuple[int, ...]) -> np.ndarray:
    """Ids of one request: uniform, or drawn from ``cdf`` (rank k is id k)."""
    if cdf is None:
        return np.random.randint(0, rows, size=size)
    draws = np.random.random_sample(size)
    return np.minimum(np.searchsorted(cdf, draws), rows - 1)


class TableShape:
    """Rows, dim and the id sampler, fetched once per process from /v1/tables."""

    _lock = threading.Lock()
    name: str | None = None
    rows = 0
    dim = 0
    cdf: np.ndarray | None = None
    local: np.ndarray | None = None
    version: str | None = None

    @classmethod
    def ensure(cls, client) -> None:
        with cls._lock:
            if cls.name is not None:
                return
            tables = client.get("/v1/tables", name="/v1/tables").json()["tables"]
            wanted = os.environ.get("EMBED_LOCUST_TABLE")
            info = next(t for t in tables if t["name"] == wanted) if wanted else tables[0]
            if VERSION:  # that version's sizes and labels
                path = f"/v1/tables/{info['name']}"
                info = checked_json(client.get(path, params=PARAMS, name="/v1/tables/[table]"))
                cls.version = answered_version(info)
            cls.rows, cls.dim = int(info["rows"]), int(info["dim"])
            cls.cdf = zipf_cdf(cls.rows)
            if TABLE_FILE:
                cls.local = np.load(TABLE_FILE, mmap_mode="r")
            cls.name = info["name"]

    @classmethod
    def ids(cls, size: int | tuple[int, ...]) -> np.ndarray:
        return draw_ids(cls.rows, cls.cdf, size)

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
        wrong = version_error(response, TableShape.version)
        if wrong:
            response.failure(wrong)
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
            params=PARAMS,
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
            params=PARAMS,
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
            params=PARAMS,
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
            f"{self.path}/sequences",
            json=body,
            params=PARAMS,
            name="sequences",
            catch_response=True,
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
            elif wrong := version_error(r, TableShape.version):
                r.failure(wrong)
            else:
                r.success()


class GroupShape:
    """The group's members, each one's rows, dim and id sampler, fetched once per process."""

    _lock = threading.Lock()
    ready = False
    members: ClassVar[dict[str, tuple[int, int, np.ndarray | None]]] = {}  # rows, dim, cdf
    version: str | None = None

    @classmethod
    def ensure(cls, client) -> None:
        with cls._lock:
            if cls.ready:
                return
            path = f"/v1/groups/{GROUP}"
            group = checked_json(client.get(path, name="/v1/groups/[group]"))  # no ?version=
            cls.version = answered_version(group)
            for name in group["tables"]:
                member = name.removeprefix(f"{GROUP}.")
                path = f"/v1/tables/{GROUP}.{member}"
                table = checked_json(client.get(path, params=PARAMS, name="/v1/tables/[table]"))
                rows = int(table["rows"])
                cls.members[member] = (rows, int(table["dim"]), zipf_cdf(rows))
            cls.ready = True

    @classmethod
    def body(cls) -> tuple[dict, dict[str, tuple[int, int]]]:
        """A group lookup body (EMBED_LOCUST_IDS ids per member) and the shapes to expect."""
        ids = {m: draw_ids(rows, cdf, IDS_PER_REQUEST) for m, (rows, _, cdf) in cls.members.items()}
        shapes = {m: (IDS_PER_REQUEST, dim) for m, (_, dim, _) in cls.members.items()}
        tables = {m: {"ids": member_ids.tolist()} for m, member_ids in ids.items()}
        return {"tables": tables, "encoding": "base64"}, shapes


def group_error(response, shapes: dict[str, tuple[int, int]]) -> str | None:
    """What is wrong with a group lookup's answer: status, members, shapes, versions."""
    if response.status_code != 200:
        return f"status {response.status_code}: {response.text[:200]}"
    data = response.json()
    if set(data["tables"]) != set(shapes):
        return f"members {sorted(data['tables'])} != {sorted(shapes)}"
    for member, answer in data["tables"].items():
        vectors = np.frombuffer(base64.b64decode(answer["vectors"]), "<f4")
        if tuple(answer["shape"]) != shapes[member] or vectors.size != np.prod(shapes[member]):
            return f"{member}: shape {answer['shape']} != {shapes[member]}"
    header = response.headers.get("X-Table-Version")
    if header is not None and header != str(data["version"]):
        return f"body version {data['version']!r}, X-Table-Version {header!r}"
    if GroupShape.version is not None and str(data["version"]) != GroupShape.version:
        return f"version {data['version']!r}, pinned {VERSION!r} is {GroupShape.version!r}"
    return None


if GROUP:  # defined only when asked for: without it the user mix is the tables' alone

    class GroupLookupUser(HttpUser):
        """Group lookups: every member of EMBED_LOCUST_GROUP in one request, at one version."""

        weight = WEIGHTS.get("group", 1)
        wait_time = between(0, 0.01)

        def on_start(self) -> None:
            GroupShape.ensure(self.client)

        @task
        def group_lookup(self) -> None:
            body, shapes = GroupShape.body()
            with self.client.post(
                f"/v1/groups/{GROUP}/lookup",
                json=body,
                params=PARAMS,
                name="group lookup",
                catch_response=True,
            ) as r:
                wrong = group_error(r, shapes)
                if wrong:
                    r.failure(wrong)
                else:
                    r.success()
