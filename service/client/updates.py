"""``update_rows``: one row update (``POST /v1/admin/tables/{table}/rows``) as a ``Call``.

Sent as JSON with the rows in base64 (float32, little-endian), so ``update_id`` travels too.
The admin key is the route's Bearer token (``admin_key``; default: the client's API key).
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np

from service.client.transport import Call, version_params


def _document(response: httpx.Response) -> dict[str, Any]:
    answer: dict[str, Any] = response.json()
    return answer


def update_rows_call(
    table: str,
    ids: Any,
    vectors: Any,
    update_id: str | None,
    version: str | int | None,
    admin_key: str | None,
) -> Call[dict[str, Any]]:
    """The request of one row update; its answer ``{"table", "version", "sequence", "rows"}``."""
    rows = np.ascontiguousarray(np.asarray(vectors, dtype="<f4"))
    body: dict[str, Any] = {
        "ids": np.asarray(ids, dtype=np.int64).reshape(-1).tolist(),
        "vectors": base64.b64encode(rows.tobytes()).decode(),
    }
    if update_id is not None:
        body["update_id"] = update_id
    headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
    path = f"/v1/admin/tables/{quote(table, safe='')}/rows"
    return Call("POST", path, _document, json=body, headers=headers, params=version_params(version))
