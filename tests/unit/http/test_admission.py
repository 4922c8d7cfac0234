"""The ids-in-flight budget: what a request counts, refusals (API and V2 error shapes, on both
paths), release only once the body was sent (in chunks), and no leak on errors, disconnects
or cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from service import metrics
from service.decoding.bags_request import decode_bags
from service.decoding.neighbors_request import decode_neighbors
from service.decoding.openai_request import decode_embeddings
from service.decoding.requests import decode_lookup, decode_sequences
from service.decoding.v2_request import decode_v2_infer
from service.http.admission import Admission, IdsInFlight, ids_in
from service.http.app import create_app
from service.http.asgi_front import CHUNK_BYTES, FrontApp
from service.settings import ServiceSettings
from tests.support.polling import until

PATHS = ("raw-asgi-front", "no-raw-asgi-front")
ROWS, DIM = 5000, 64  # a lookup of 5,000 ids answers ~3.5 MB of JSON: several chunks


def _json(value: Any) -> bytes:
    return orjson.dumps(value)


# ---------------------------------------------------------------------------- the budget
def test_budget_refuses_only_what_passes_it_on_top_of_others() -> None:
    budget = IdsInFlight(10)
    assert budget.try_acquire(6) and budget.try_acquire(4)
    assert not budget.try_acquire(1)
    budget.release(4)
    assert not budget.try_acquire(5) and budget.try_acquire(4)
    budget.release(10)
    assert budget.in_flight == 0


def test_a_request_over_the_whole_budget_is_admitted_alone() -> None:
    budget = IdsInFlight(10)
    assert budget.try_acquire(25)  # nothing else in flight: admitted
    assert not budget.try_acquire(1)  # and while it runs, nothing else
    budget.release(25)
    assert budget.try_acquire(1)
    assert not budget.try_acquire(25)  # not on top of another one


def test_zero_is_no_limit_but_still_counted() -> None:
    budget = IdsInFlight(0)
    assert budget.try_acquire(10**9) and budget.try_acquire(10**9)
    assert budget.in_flight == 2 * 10**9


def test_admission_releases_once_and_counts_refusals() -> None:
    budget = IdsInFlight(10)
    first, second = Admission(budget), Admission(budget)
    first.admit(8, "t")
    before = metrics.ADMISSION_REFUSED.labels("t")._value.get()
    with pytest.raises(Exception) as refused:
        second.admit(3, "t")
    error = refused.value
    assert (error.status, error.code) == (503, "overloaded")  # type: ignore[attr-defined]
    assert error.headers["Retry-After"] == "1"  # type: ignore[attr-defined]
    assert error.detail == {"ids": 3, "ids_in_flight": 8, "max_ids_in_flight": 10}  # type: ignore[attr-defined]
    assert metrics.ADMISSION_REFUSED.labels("t")._value.get() == before + 1
    second.release()  # held nothing: gives nothing back
    first.release()
    first.release()
    assert budget.in_flight == 0
    second.admit(0, "t")  # no ids: never refused, nothing held
    assert second.held == 0


# ------------------------------------------------------------------------- ids_in
def test_ids_in_every_request_kind() -> None:
    lookup = decode_lookup(_json({"ids": [[1, 2, 3], [4, 5, 6]]}), "application/json", {}, 100)
    assert ids_in(lookup) == 6
    keys = decode_lookup(_json({"keys": ["a", "b"]}), "application/json", {}, 100)
    assert ids_in(keys) == 2
    # Sequences: the padded B x L positions when they are more than the ids ...
    sequences = decode_sequences(
        _json({"sequences": [[1], [2, 3, 4]]}), "application/json", {}, 100
    )
    assert ids_in(sequences) == 2 * 3
    padded = decode_sequences(
        _json({"sequences": [[1], [2]], "max_length": 10}), "application/json", {}, 100
    )
    assert ids_in(padded) == 20
    # ... and the ids when truncation keeps fewer.
    cut = decode_sequences(
        _json({"sequences": [[1, 2, 3, 4]], "max_length": 1}), "application/json", {}, 100
    )
    assert ids_in(cut) == 4
    assert ids_in(decode_bags(_json({"bags": [[1, 2, 3], [4]]}), 100)) == 4
    assert ids_in(decode_bags(_json({"bags": [[], [], [1]]}), 100)) == 3  # empty bags answer rows
    assert ids_in(decode_bags(_json({"keys": [["a", "b"], ["c"]]}), 100)) == 3
    assert ids_in(decode_neighbors(_json({"ids": [1, 2], "k": 5}))) == 10
    assert ids_in(decode_neighbors(_json({"keys": ["a"], "k": 3}))) == 3
    assert ids_in(decode_neighbors(_json({"vectors": [[0.5, 1.0]] * 4, "k": 2}))) == 8
    embeddings = decode_embeddings(_json({"model": "t", "input": [[1, 2], [3]]}), 100)
    assert ids_in(embeddings) == 3
    infer = {"inputs": [{"name": "ids", "datatype": "INT64", "shape": [2, 2], "data": [1] * 4}]}
    assert ids_in(decode_v2_infer(_json(infer), None, 100, ("embeddings",))) == 4
    assert ids_in(None) == 0


# -------------------------------------------------------------- through the ASGI app
def _app(folder: Path, raw_asgi_front: bool, budget: int) -> tuple[FrontApp, np.ndarray]:
    table = np.random.default_rng(0).standard_normal((ROWS, DIM)).astype(np.float32)
    np.save(folder / "t.npy", table)
    settings = ServiceSettings(
        models=folder, raw_asgi_front=raw_asgi_front, max_ids_in_flight=budget
    )
    return create_app(settings), table


def _run(app: FrontApp, check: Callable[[], Awaitable[None]]) -> None:
    async def run() -> None:
        await app.registry.load()
        try:
            await check()
        finally:
            await app.registry.close()

    asyncio.run(run())


@pytest.mark.parametrize("raw_asgi_front", [True, False], ids=PATHS)
def test_a_full_budget_answers_503_with_retry_after_in_the_route_format(
    tmp_path: Path, raw_asgi_front: bool
) -> None:
    app, table = _app(tmp_path, raw_asgi_front, budget=100)
    infer = {"inputs": [{"name": "ids", "datatype": "INT64", "shape": [2], "data": [1, 2]}]}

    async def check() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            assert app.budget.try_acquire(99)  # another request holds 99 of 100 ids
            refused = await http.post("/v1/tables/t/lookup", json={"ids": [1, 2]})
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["code"] == "overloaded"
            v2 = await http.post("/v2/models/t/infer", json=infer)
            assert v2.status_code == 503 and v2.headers["retry-after"] == "1"
            assert set(v2.json()) == {"error"} and "in flight" in v2.json()["error"]
            assert (await http.get("/healthz")).status_code == 200  # no ids: never refused
            assert (await http.post("/v1/tables/t/lookup", json={"ids": [3]})).status_code == 200
            app.budget.release(99)
            assert app.budget.in_flight == 0
            answer = await http.post("/v1/tables/t/lookup", json={"ids": [1, 2]})
            assert answer.status_code == 200
            np.testing.assert_array_equal(
                np.array(answer.json()["vectors"], np.float32), table[[1, 2]]
            )

    _run(app, check)


def _scope(path: str, body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }


def _receive_once(body: bytes, then: Callable[[], Awaitable[Any]] | None = None) -> Any:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        if then is not None:
            return await then()
        await asyncio.Event().wait()  # the client stays
        raise AssertionError

    return receive


def _lookup_body(count: int) -> bytes:
    return _json({"ids": list(range(count))})


@pytest.mark.parametrize("raw_asgi_front", [True, False], ids=PATHS)
def test_ids_stay_counted_until_the_last_chunk_was_sent(
    tmp_path: Path, raw_asgi_front: bool
) -> None:
    app, table = _app(tmp_path, raw_asgi_front, budget=300_000)
    body = _lookup_body(ROWS)
    messages: list[tuple[dict[str, Any], int]] = []

    async def send(message: dict[str, Any]) -> None:
        messages.append((message, app.budget.in_flight))

    async def check() -> None:
        await app(_scope("/v1/tables/t/lookup", body), _receive_once(body), send)
        assert app.budget.in_flight == 0

    _run(app, check)
    chunks = [(m, held) for m, held in messages if m["type"] == "http.response.body"]
    assert len(chunks) > 1 and all(held == ROWS for _, held in chunks)
    assert all(len(m["body"]) <= CHUNK_BYTES for m, _ in chunks)
    assert [m.get("more_body", False) for m, _ in chunks] == [True] * (len(chunks) - 1) + [False]
    start = messages[0][0]
    declared = dict(start["headers"])[b"content-length"]
    received = b"".join(bytes(m["body"]) for m, _ in chunks)
    assert int(declared) == len(received) and start["status"] == 200
    np.testing.assert_array_equal(
        np.array(orjson.loads(received)["vectors"], np.float32), table[:ROWS]
    )


async def _send_fails(message: dict[str, Any]) -> None:
    if message["type"] == "http.response.body":
        raise OSError("connection reset")


@pytest.mark.parametrize("raw_asgi_front", [True, False], ids=PATHS)
def test_no_leak_on_send_errors_disconnects_and_cancellation(
    tmp_path: Path, raw_asgi_front: bool
) -> None:
    app, _ = _app(tmp_path, raw_asgi_front, budget=300_000)
    body = _lookup_body(ROWS)
    path = "/v1/tables/t/lookup"

    async def disconnect() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def check() -> None:
        # The transport fails while the body is sent.
        with pytest.raises(OSError):
            await app(_scope(path, body), _receive_once(body), _send_fails)
        assert app.budget.in_flight == 0
        # The client leaves before its body arrived.
        await app(_scope(path, body), disconnect, _record([]))
        assert app.budget.in_flight == 0
        # The request's task is cancelled while it waits for the transport to drain.
        blocked = asyncio.Event()

        async def stalls(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                blocked.set()
                await asyncio.Event().wait()

        task = asyncio.ensure_future(app(_scope(path, body), _receive_once(body), stalls))
        await blocked.wait()
        assert app.budget.in_flight == ROWS
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert app.budget.in_flight == 0
        # An error answer holds nothing afterwards either.
        bad = _json({"ids": [ROWS + 1]})
        await app(_scope(path, bad), _receive_once(bad), _record([]))
        assert app.budget.in_flight == 0

    _run(app, check)


def _record(into: list[dict[str, Any]]) -> Callable[[dict[str, Any]], Awaitable[None]]:
    async def send(message: dict[str, Any]) -> None:
        into.append(message)

    return send


def test_the_gauge_follows_the_budget(tmp_path: Path) -> None:
    """Written at most every PUBLISH_SECONDS: it shows the ids while the body is sent and 0
    once it was."""
    app, _ = _app(tmp_path, True, budget=300_000)
    body = _lookup_body(10)

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            await until(lambda: metrics.IDS_IN_FLIGHT._value.get() == 10, "the gauge to show 10")

    async def check() -> None:
        await app(_scope("/v1/tables/t/lookup", body), _receive_once(body), send)
        await until(lambda: metrics.IDS_IN_FLIGHT._value.get() == 0, "the gauge to show 0")

    _run(app, check)


def test_no_leak_when_a_batched_request_loses_its_client(tmp_path: Path) -> None:
    app, _ = _app(tmp_path, True, budget=300_000)
    (tmp_path / "t.toml").write_text("batching = true\n")
    body = _lookup_body(ROWS)

    async def disconnect() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def check() -> None:
        assert app.registry.batched("t")
        sent: list[dict[str, Any]] = []
        await app(
            _scope("/v1/tables/t/lookup", body), _receive_once(body, disconnect), _record(sent)
        )
        assert app.budget.in_flight == 0

    _run(app, check)


def test_the_default_budget_admits_256_concurrent_requests_of_1000_ids() -> None:
    """docs/api.md: the defaults must let 256 concurrent requests of 1,000 ids in without 503."""
    budget = IdsInFlight(ServiceSettings.model_fields["max_ids_in_flight"].default)
    assert all(budget.try_acquire(1000) for _ in range(256))
