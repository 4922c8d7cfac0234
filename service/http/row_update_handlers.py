"""What ``POST /v1/admin/tables/{table}/rows`` runs: its resolver (the table at ``?version=``),
its body decoder and its use case, and the models its OpenAPI entry shows."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from service.decoding.body import JSON, OCTET_STREAM
from service.decoding.row_update_request import RowUpdateRequest, decode_row_update
from service.http.call import Call
from service.results import Document
from service.usecases import row_updates


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
}
"""The route's use case and decoders (``route_table`` declares the route; its table, at the
query's ``version=``, is resolved as for every table route: ``table_handlers.resolve_table``)."""
