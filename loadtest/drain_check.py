"""SIGTERM with 100 lookups of 100,000 ids in flight (2 workers, JSON): how many complete.

    PYTHONPATH=$PWD python loadtest/drain_check.py        (NO_TERM=1: the same without SIGTERM)

Prints the failure kinds seen by the client, complete/exact counts, the exit status and the
time from SIGTERM to exit. Asserts nothing.
"""

import asyncio
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, os.getcwd())
from tests.support.server_process import ServerProcess

folder = Path(tempfile.mkdtemp(prefix="drain-check-")) / "models"
folder.mkdir(parents=True, exist_ok=True)
table = np.random.default_rng(1).standard_normal((1000, 8)).astype(np.float32)
np.save(folder / "t.npy", table)
# No ids-in-flight budget: all 100 bodies are to be in flight at SIGTERM.
server = ServerProcess(
    folder, "--workers", "2", "--log-level", "info", env={"EMBED_MAX_IDS_IN_FLIGHT": "0"}
)
server.wait_ready(60)
time.sleep(3)
rng = np.random.default_rng(0)
ids = [rng.integers(0, 1000, 100_000) for _ in range(100)]


async def main():
    conns = []
    for request_ids in ids:
        r, w = await asyncio.open_connection("127.0.0.1", server.port)
        body = orjson.dumps({"ids": request_ids.tolist()})
        w.write(
            b"POST /v1/tables/t/lookup HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % len(body)
            + body
        )
        await w.drain()
        conns.append((r, w))
    await asyncio.sleep(1.0)
    t0 = time.monotonic()
    if not os.environ.get("NO_TERM"):
        server.process.send_signal(signal.SIGTERM)
    complete = exact = 0
    kinds = {}

    async def read(r, i):
        nonlocal complete, exact
        try:
            head = await r.readuntil(b"\r\n\r\n")
            n = int(re.search(rb"content-length: *(\d+)", head, re.I).group(1))
            body = await r.readexactly(n)
            complete += 1
            if not head.startswith(b"HTTP/1.1 200"):
                print(head[:60], body[:200])
            v = np.array(orjson.loads(body)["vectors"], np.float32)
            exact += int(np.array_equal(v, table[ids[i]]))
        except Exception as exc:
            k = f"{type(exc).__name__}:{len(getattr(exc, 'partial', b'') or b'') > 0}"
            kinds[k] = kinds.get(k, 0) + 1

    await asyncio.gather(*(read(r, i) for i, (r, w) in enumerate(conns)))
    if os.environ.get("NO_TERM"):
        server.process.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(server.process.wait, 120)
    print(kinds)
    print(
        f"complete {complete}/100, exact {exact}/100, exit {code}, SIGTERM->exit {time.monotonic() - t0:.1f}s"
    )


asyncio.run(main())
print([line for line in server.log().splitlines() if "cut" in line or "ERROR" in line][:12])
