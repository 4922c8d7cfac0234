"""Fake backends for the gatherer tests: one gated (the test decides when it answers), one
that answers at once in the caller's stack (as numpy does)."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

TABLE = np.arange(1000 * 4, dtype=np.float32).reshape(1000, 4)


class GatedBackend:
    """Gathers from TABLE; each call waits until the test opens the gate, and is recorded."""

    name = "fake"
    device = "cpu"
    inline_safe = False

    def __init__(self, fail_on: int | None = None) -> None:
        self.calls: list[np.ndarray] = []
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.fail_on = fail_on

    def gather(self, ids: np.ndarray) -> np.ndarray:
        self.calls.append(ids.copy())
        self.entered.set()
        assert self.gate.wait(60), "test never opened the gate"
        if self.fail_on is not None and self.fail_on in ids:
            raise RuntimeError("injected backend failure")
        return TABLE[ids]

    def close(self) -> None:
        pass


class InlineBackend:
    """A backend that computes in microseconds (numpy): safe to call on the event loop."""

    name = "fake-inline"
    device = "cpu"
    inline_safe = True

    def __init__(self) -> None:
        self.calls = 0

    def gather(self, ids: np.ndarray) -> np.ndarray:
        self.calls += 1
        return TABLE[ids]

    def close(self) -> None:
        pass


async def wait_entered(backend: GatedBackend) -> None:
    await asyncio.to_thread(backend.entered.wait, 60)
    backend.entered.clear()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))
