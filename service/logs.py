"""Logging configuration handed to uvicorn: its own, plus query strings redacted.

A client may put an API key in the query string (``?api_key=...``); uvicorn's access
log writes the path with its query string. Every query value is replaced by ``***``
before the line is formatted (names stay: they help debugging and are not secrets).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from uvicorn.config import LOGGING_CONFIG

REDACTED = "***"


def redact_query(path: str) -> str:
    """``/x?key=secret&flag`` -> ``/x?key=***&flag=***``; a path without a query unchanged."""
    base, mark, query = path.partition("?")
    if not mark:
        return path
    names = (part.partition("=")[0] for part in query.split("&") if part)
    return f"{base}?" + "&".join(f"{name}={REDACTED}" for name in names)


class RedactQueryStrings(logging.Filter):
    """Redacts the query string of uvicorn access-log records (their third argument)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact_query(args[2]), *args[3:])
        return True


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's default logging config with the redacting filter on its access handler."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_query"] = {"()": "service.logs.RedactQueryStrings"}
    config["handlers"]["access"]["filters"] = ["redact_query"]
    return config


def configure_logging(level: str) -> None:
    """One log format for the service's own loggers."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [%(process)d]: %(message)s",
    )
