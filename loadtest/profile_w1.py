"""Where a lookup's server time goes: the app driven in-process, timed, then under cProfile.

    python3 loadtest/profile_w1.py [--requests 20000] [--ids 1] [--binary] [--distribution uniform]
                                   [--top 30] [--no-profile] [--asgi]
                                   [--updated-rows 0]

W1 by default (1 id, JSON); ``--ids 1024 --binary`` is W3 binary. Each request goes where the
server sends it: the direct lane when it claims the request, else the ASGI app (``--asgi``:
always the ASGI app).

No sockets and no uvicorn: what is left is what the app itself pays per request (header
dict, decode, validation, gather, encode, metrics, response headers). Prints cProfile's
functions by own time and the mean microseconds per request without the profiler.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
_INSERTED = str(ROOT) not in sys.path
if _INSERTED:
    sys.path.insert(0, str(ROOT))

from loadtest.bench import make_repository, make_table  # noqa: E402
from loadtest.id_distributions import IdSampler  # noqa: E402

# The service itself comes from PYTHONPATH (e.g. another checkout, for before/after figures).
if _INSERTED and os.environ.get("PYTHONPATH"):
    sys.path.remove(str(ROOT))
from service.http.admission import SCOPE_KEY, Admission  # noqa: E402
from service.http.app import create_app  # noqa: E402
from service.http.direct_lane import DirectLane  # noqa: E402
from service.settings import ServiceSettings  # noqa: E402


def scope_for(body: bytes, binary: bool) -> dict[str, Any]:
    """The ASGI scope uvicorn would build for a wrk lookup request."""
    media = b"application/octet-stream" if binary else b"application/json"
    headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"content-type", media),
        (b"accept", media),
        (b"content-length", str(len(body)).encode()),
    ]
    return {"type": "http", "method": "POST", "path": "/v1/tables/big/lookup", "headers": headers}


async def drive(app: Any, bodies: list[bytes], binary: bool, asgi: bool = False) -> None:
    """One request per body, each answered completely before the next: by the direct lane
    where it claims the request (as the server's protocol would), else by the ASGI app."""
    lane = None if asgi else app.lane
    for body in bodies:
        scope = scope_for(body, binary)
        if lane is not None and answer_directly(lane, scope, body):
            continue
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive(messages: list[dict[str, Any]] = messages) -> dict[str, Any]:
            return messages.pop() if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            pass

        await app(scope, receive, send)


def answer_directly(lane: DirectLane, scope: dict[str, Any], body: bytes) -> bool:
    """What the protocol does with a claimed request: admit, answer, release (the response
    is dropped where the protocol would write it). False when the lane does not claim the
    request or hands it back: the ASGI app serves it then, as in the server."""
    claim = lane.claim(scope["method"], scope["path"], scope["headers"], None)
    if claim is None:
        return False
    admission = scope[SCOPE_KEY] = Admission(lane.budget)
    try:
        return lane.answer(claim, scope, body) is not None
    finally:
        admission.release()


async def main_async(args: argparse.Namespace) -> None:
    repo = make_repository(make_table(1_000_000, 128))
    try:
        await profile(args, repo)
    finally:
        shutil.rmtree(repo, ignore_errors=True)  # links and .toml files: the table stays


async def profile(args: argparse.Namespace, repo: Path) -> None:
    """Warm up, time, then (unless ``--no-profile``) run under cProfile."""
    app = create_app(ServiceSettings(models=repo))
    await app.registry.load()  # type: ignore[attr-defined]
    await update_rows(app, args.updated_rows)
    sampler = IdSampler(args.distribution, 1_000_000, seed=3)

    def bodies(count: int) -> list[bytes]:
        # Fresh draws per pass: re-sending a pass's bodies would let the row-text cache
        # answer rows the distribution would not repeat.
        draws = [sampler.draw(args.ids) for _ in range(count)]
        if args.binary:
            return [ids.astype("<i8").tobytes() for ids in draws]
        return [orjson.dumps({"ids": ids.tolist()}) for ids in draws]

    await drive(app, bodies(args.requests // 4), args.binary, args.asgi)  # warm-up
    timed = bodies(args.requests)
    started = time.process_time()
    await drive(app, timed, args.binary, args.asgi)
    mean = (time.process_time() - started) / len(timed) * 1e6
    print(f"mean CPU per request without the profiler: {mean:.1f} us")
    if args.no_profile:
        return
    profiled = bodies(args.requests)
    profile = cProfile.Profile()
    profile.enable()
    await drive(app, profiled, args.binary, args.asgi)
    profile.disable()
    pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)


async def update_rows(app: Any, count: int) -> None:
    """Write ``count`` distinct rows of table ``big`` as row updates (2,000 a file, as the
    row-updates benchmark does) and serve them: an overlay of ``count`` rows not compacted."""
    if not count:
        return
    updates = app.registry.get("big").updates  # type: ignore[attr-defined]
    rng = np.random.default_rng(5)
    chosen = rng.choice(1_000_000, count, replace=False)
    for start in range(0, count, 2000):
        ids = chosen[start : start + 2000]
        await updates.write(ids, rng.standard_normal((ids.size, 128), np.float32), None)
    print(f"table big: {updates.overlay.rows:,} updated rows in the overlay")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--distribution", default="uniform")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--ids", type=int, default=1, help="ids per request")
    parser.add_argument("--binary", action="store_true", help="octet-stream in and out")
    parser.add_argument("--no-profile", action="store_true", help="only the mean CPU time")
    parser.add_argument(
        "--updated-rows", type=int, default=0, help="rows of the table updated first (overlay)"
    )
    parser.add_argument(
        "--asgi", action="store_true", help="through the ASGI app even where the lane claims"
    )
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
