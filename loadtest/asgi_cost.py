"""Server CPU per request, in process: the ASGI app called directly, no sockets, no client.

    PYTHONPATH=. python loadtest/asgi_cost.py [--rows 1000000] [--dim 128] [--seconds 2]

Workloads W1 (1 id), W2 (32 ids), W3 (1,024 ids), each as /v1 lookup JSON and binary and as
V2 infer JSON and binary; ids uniform over the table, or drawn from a small repeated set
(the row-text cache's good case). Prints CPU microseconds per request (``time.process_time``
over N calls with prepared bodies). Runs against any checkout whose ``service.http.app``
has ``create_app(settings)`` returning an ASGI app with a ``registry``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from service.http.app import create_app
from service.settings import ServiceSettings

WORKLOADS = {"W1": 1, "W2": 32, "W3": 1024}
REPEATED_SET = 4096


def _requests(form: str, ids: np.ndarray) -> tuple[str, bytes, list[tuple[bytes, bytes]]]:
    """Path, body and headers of one request of ``form`` for ``ids``."""
    json_type = (b"content-type", b"application/json")
    if form.startswith("v1"):
        headers = [json_type]
        if form == "v1-binary":
            headers.append((b"accept", b"application/octet-stream"))
        return "/v1/tables/t/lookup", orjson.dumps({"ids": ids.tolist()}), headers
    tensor = {"name": "ids", "datatype": "INT64", "shape": [ids.size], "data": ids.tolist()}
    payload: dict[str, Any] = {"inputs": [tensor]}
    if form == "v2-binary":
        payload["parameters"] = {"binary_data_output": True}
    return "/v2/models/t/infer", orjson.dumps(payload), [json_type]


def _call(
    app: Any, path: str, body: bytes, headers: list[tuple[bytes, bytes]]
) -> Callable[..., Any]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [*headers, (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8000),
    }
    message = {"type": "http.request", "body": body, "more_body": False}
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        return message

    async def send(event: dict[str, Any]) -> None:
        if event["type"] == "http.response.start":
            status.append(event["status"])

    async def once() -> int:
        await app(dict(scope), receive, send)
        return status.pop()

    return once


async def _measure(app: Any, form: str, batches: list[np.ndarray], seconds: float) -> float:
    calls = [_call(app, *_requests(form, ids)) for ids in batches]
    for once in calls[:20]:  # warm-up (and a check that the route answers 200)
        assert await once() == 200, form
    count, spent = 0, 0.0
    while spent < seconds:
        started = time.process_time()
        for once in calls:
            await once()
        spent += time.process_time() - started
        count += len(calls)
    return spent / count * 1e6


async def main_async(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        table = rng.standard_normal((args.rows, args.dim), dtype=np.float32)
        np.save(Path(folder) / "t.npy", table)
        del table
        app = create_app(ServiceSettings(models=Path(folder)))
        await app.registry.load()
        print(f"table {args.rows} x {args.dim}; CPU us per request (process_time)")
        print(f"{'workload':14} {'v1-json':>9} {'v1-binary':>9} {'v2-json':>9} {'v2-binary':>9}")
        for ids_kind in args.ids:
            pool = rng.integers(0, args.rows, REPEATED_SET) if ids_kind == "repeated" else None
            for name in args.workloads:
                size = WORKLOADS[name]
                draws = max(8, 4096 // size)
                batches = [
                    rng.choice(pool, size) if pool is not None else rng.integers(0, args.rows, size)
                    for _ in range(draws)
                ]
                row = []
                for form in ("v1-json", "v1-binary", "v2-json", "v2-binary"):
                    row.append(await _measure(app, form, batches, args.seconds))
                cells = " ".join(f"{value:9.1f}" for value in row)
                print(f"{name + ' ' + ids_kind:14} {cells}   v2/v1 json {row[2] / row[0]:.2f}")
        await app.registry.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=2.0, help="CPU seconds per cell")
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--ids", nargs="+", default=["uniform", "repeated"])
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
