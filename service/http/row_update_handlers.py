"""What ``POST /v1/admin/tables/{table}/rows`` runs: its resolver (the table at ``?version=``),
its body decoder and its use case, and the models its OpenAPI entry shows."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from pydantic import BaseModel, ConfigDict, Field

from service.app import row_updates
from service.decoding.body import JSON, OCTET_STREAM
from service.decoding.row_update_request import RowUpdateRequest, decode_row_update
from service.errors import InvalidRequest
from service.http.call import Call
from service.metrics import UNKNOWN_TABLE
from service.results import Document


class RowUpdateBody(BaseModel):
    """One update: rows replacing ``ids`` (or binary: ``X-Rows: n``, int64 ids, float32 rows)."""

    model_config = ConfigDict(extra="forbid")

    ids: list[int] = Field(..., description="Distinct row ids, each in [0, rows).")
    vectors: list[list[float]] | str = Field(
        ..., description="One row of `dim` floats per id, or base64 of little-endian float32."
    )
    update_id: str | None = Field(
        None, max_length=128, description="Sent again, answers the first update's sequence."
    )


class RowUpdateResult(BaseModel):
    table: str
    version: str
    sequence: int = Field(..., description="Grows by one per applied update of the version.")
    rows: int


def query_version(call: Call) -> str | None:
    """``?version=`` of the request (None when absent)."""
    if not call.query:
        return None
    values = parse_qs(call.query.decode("latin-1")).get("version")
    if not values:
        return None
    if len(values) > 1:
        raise InvalidRequest("give version once", {"field": "version"})
    return values[0]


def resolve_updated_table(call: Call) -> None:
    """The table of the path at ``?version=`` (404 when it has no such table or version)."""
    name = call.params["table"]
    call.table_label = UNKNOWN_TABLE  # until the registry has found the table
    registry = call.services.registry
    call.table = row_updates.table_for_update(registry, name, query_version(call))
    call.table_label = name


def row_update_body(call: Call) -> RowUpdateRequest:
    """The update body, JSON or binary, at most ``--max-ids`` rows."""
    settings = call.services.settings
    return decode_row_update(call.body, call.media_type, call.headers, settings.max_ids)


async def update_rows(call: Call, request: RowUpdateRequest) -> Document:
    """Apply the update; answered once durable and served by this worker."""
    return await row_updates.update_rows(call.served_table(), request)


SUMMARY = (
    "Replace rows of a table version, durably; served everywhere within a second "
    "(only with EMBED_ADMIN_KEY, sent as 'Authorization: Bearer <key>')."
)
SCHEMAS: dict[str, Any] = {"body": RowUpdateBody, "response": RowUpdateResult}
RUN: dict[str, Any] = {
    "use_case": update_rows,
    "decoders": {JSON: row_update_body, OCTET_STREAM: row_update_body},
    "resolve": resolve_updated_table,
}
"""The route's use case, decoders and resolver (``route_table`` declares the route)."""
