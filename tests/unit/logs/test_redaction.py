"""Query strings never reach the access log with their values."""

from __future__ import annotations

import logging

from service.logs import RedactQueryStrings, redact_query


def test_redact_query() -> None:
    assert redact_query("/healthz") == "/healthz"
    assert redact_query("/x?api_key=s3cret&flag") == "/x?api_key=***&flag=***"
    assert redact_query("/x?") == "/x?"


def test_filter_rewrites_uvicorn_access_records() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        "",
        0,
        '%s - "%s %s HTTP/%s" %d',
        ("1.2.3.4:5", "GET", "/v1/tables?key=s3cret", "1.1", 200),
        None,
    )
    assert RedactQueryStrings().filter(record)
    assert "s3cret" not in record.getMessage() and "/v1/tables?key=***" in record.getMessage()
