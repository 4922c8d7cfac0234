"""How a server tells the dispatcher that a request's client has gone: a zero-argument
callable in the ASGI scope under ``CLIENT_GONE_KEY`` (our HTTP protocol puts the
connection's own flag there). A scope without one (another server, a test client) is
watched with a task reading ``receive`` instead."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

ClientGone = Callable[[], bool]

CLIENT_GONE_KEY: Final = "service.client_gone"
"""Scope key of the request's ``ClientGone`` (True once its client has disconnected)."""
