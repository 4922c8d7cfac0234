"""The HTTP protocol the service runs: uvicorn's httptools protocol with the direct lane
(``uvicorn_internals``: small requests to inline tables answered without an ASGI task),
request-head limits and a connection cap (``head_limits``), and a drain that answers what
it received (``drain``).

Only this httptools protocol is used (``service.cli`` pins it); uvicorn's h11 protocol has
none of these limits.
"""

from __future__ import annotations

import functools
from typing import Any

from service.http.drain import DrainingProtocol
from service.http.head_limits import ConnectionLimits
from service.settings import ServiceSettings

__all__ = ["ConnectionLimits", "LimitedHttpToolsProtocol", "http_protocol"]


class LimitedHttpToolsProtocol(DrainingProtocol):
    """``HttpToolsProtocol`` plus the direct lane, head size, head timeout, connection cap
    and drain."""


def http_protocol(settings: ServiceSettings) -> Any:
    """What ``uvicorn.run(http=...)`` takes: the protocol class bound to these limits.

    A ``functools.partial`` of a class and a frozen dataclass pickles, so it travels to
    uvicorn's worker processes.
    """
    return functools.partial(
        LimitedHttpToolsProtocol, limits=ConnectionLimits.from_settings(settings)
    )
