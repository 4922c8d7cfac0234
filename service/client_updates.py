"""Row updates in the Python client: ``update_rows`` of ``EmbeddingClient`` and its async twin.

    with EmbeddingClient(url) as client:
        client.update_rows("items", [3, 7], rows, update_id="batch-42", admin_key=ADMIN)
        # {"table": "items", "version": "...", "sequence": 12, "rows": 2}

Sent as JSON with the rows in base64 (float32, little-endian), so ``update_id`` travels too.
The admin key is the route's Bearer token (``admin_key``; default: the client's API key).
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import numpy as np

if TYPE_CHECKING:
    from service.client import _Call


def update_rows_call(
    table: str,
    ids: Any,
    vectors: Any,
    update_id: str | None,
    version: str | None,
    admin_key: str | None,
) -> _Call[dict[str, Any]]:
    """The request of one row update, and how to read its answer."""
    from service.client import _Call  # the client imports this module: not at import time

    rows = np.ascontiguousarray(np.asarray(vectors, dtype="<f4"))
    body: dict[str, Any] = {
        "ids": np.asarray(ids, dtype=np.int64).reshape(-1).tolist(),
        "vectors": base64.b64encode(rows.tobytes()).decode(),
    }
    if update_id is not None:
        body["update_id"] = update_id
    path = f"/v1/admin/tables/{quote(table, safe='')}/rows"
    if version is not None:
        path += "?" + urlencode({"version": version})
    headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}

    def parse(response: Any) -> dict[str, Any]:
        answer: dict[str, Any] = response.json()
        return answer

    return _Call("POST", path, parse, json=body, headers=headers)


class RowUpdates:
    """``update_rows`` for ``EmbeddingClient`` and ``AsyncEmbeddingClient`` (awaited there)."""

    if TYPE_CHECKING:

        def _send(self, call: Any) -> Any: ...

    def update_rows(
        self,
        table: str,
        ids: Any,
        vectors: Any,
        update_id: str | None = None,
        version: str | None = None,
        *,
        admin_key: str | None = None,
    ) -> Any:
        """Replace rows ``ids`` of ``table`` (at ``version``) with ``vectors`` (n x dim):
        ``{"table", "version", "sequence", "rows"}`` once durable (the async client: an
        awaitable of it). The same ``update_id`` again answers the first update's sequence
        and applies nothing."""
        return self._send(update_rows_call(table, ids, vectors, update_id, version, admin_key))
