"""The protocol factory handed to uvicorn: bound to the settings, and picklable for workers."""

from __future__ import annotations

import pickle

from service.http.protocols import ConnectionLimits, LimitedHttpToolsProtocol, http_protocol
from service.settings import ServiceSettings


def test_http_protocol_carries_the_limits_and_pickles() -> None:
    settings = ServiceSettings(max_head_bytes=4096, head_timeout_seconds=3, max_connections=7)
    factory = pickle.loads(pickle.dumps(http_protocol(settings)))
    assert factory.func is LimitedHttpToolsProtocol
    assert factory.keywords["limits"] == ConnectionLimits(4096, 3.0, 7)
