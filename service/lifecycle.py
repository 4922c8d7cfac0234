"""Process lifecycle state that the server loop and the application share (a leaf module).

A signal is process-wide, so is its consequence: once SIGTERM arrives the process drains,
and ``/readyz`` answers 503 ``draining`` from then on, whatever table registry asks.
"""

from __future__ import annotations

import threading

_draining = threading.Event()


def begin_drain() -> None:
    """Mark this process as draining (called by the server on SIGTERM/SIGINT)."""
    _draining.set()


def draining() -> bool:
    """True once this process has begun to drain."""
    return _draining.is_set()
