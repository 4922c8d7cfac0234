"""Python client of the embedding service: ``EmbeddingClient`` and ``AsyncEmbeddingClient``.

    from service.client import EmbeddingClient
    with EmbeddingClient("http://127.0.0.1:8000", api_key=None) as client:
        vectors = client.lookup("demo", [[1, 2], [3, 4]])          # (2, 2, dim) float32
        vectors, mask, lengths = client.sequences("demo", [[5, 9, 2], [7]])

Binary transport by default (raw little-endian ids in, raw float32 out: no JSON on the hot
path), JSON with ``binary=False``. Connection pooling and timeouts come from httpx; 503
``overloaded`` answers are retried with exponential backoff, honouring ``Retry-After``.
Errors are the service's own exception classes (``service.errors``). Row updates: ``update_rows``.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
import numpy as np

from service import errors
from service.client_updates import RowUpdates

OCTET = "application/octet-stream"
ERROR_CLASSES: dict[str, type[errors.ServiceError]] = {
    cls.code: cls for cls in errors.ServiceError.__subclasses__()
}


def error_from_response(response: httpx.Response) -> errors.ServiceError:
    """The service's exception for an error response (any status >= 400)."""
    try:
        body = response.json()["error"]
        code, message, detail = body["code"], body["message"], body.get("detail")
    except Exception:
        code, message, detail = "http_error", response.text[:500] or response.reason_phrase, None
    cls = ERROR_CLASSES.get(code, errors.ServiceError)
    error = cls(message, detail, dict(response.headers))
    if cls is errors.ServiceError:
        # An unknown code: this one instance takes the server's status and code, shadowing
        # the ClassVars mypy will not let an instance assign.
        error.status, error.code = response.status_code, code  # type: ignore[misc]
    return error


_Answer = TypeVar("_Answer")


@dataclass
class _Call(Generic[_Answer]):
    """One request and how to read its answer: shared by the sync and async clients."""

    method: str
    path: str
    parse: Callable[[httpx.Response], _Answer]
    content: bytes | None = None
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def _shape(header: str) -> tuple[int, ...]:
    return tuple(int(d) for d in header.split(",")) if header else ()


def _lookup_call(table: str, ids: Any, binary: bool, dtype: str) -> _Call[np.ndarray]:
    array = np.asarray(ids)
    if array.dtype.kind not in "iu":
        raise TypeError("ids must be integers")
    path = f"/v1/tables/{table}/lookup"
    if binary:
        out_dtype = np.dtype("<f2") if dtype == "float16" else np.dtype("<f4")

        def parse_binary(response: httpx.Response) -> np.ndarray:
            return np.frombuffer(response.content, out_dtype).reshape(
                _shape(response.headers["x-shape"])
            )

        headers = {
            "Content-Type": OCTET,
            "Accept": OCTET,
            "X-Shape": ",".join(map(str, array.shape)),
        }
        body = {"dtype": dtype} if dtype != "float32" else None
        if body:  # the binary request has no field for dtype: ask for it with JSON instead
            return _Call(
                "POST",
                path,
                parse_binary,
                json={"ids": array.tolist(), "dtype": dtype},
                headers={"Accept": OCTET},
            )
        return _Call(
            "POST", path, parse_binary, content=array.astype("<i8").tobytes(), headers=headers
        )

    def parse_json(response: httpx.Response) -> np.ndarray:
        data = response.json()
        raw = base64.b64decode(data["vectors"])
        return np.frombuffer(raw, "<f2" if dtype == "float16" else "<f4").reshape(data["shape"])

    return _Call(
        "POST", path, parse_json, json={"ids": array.tolist(), "encoding": "base64", "dtype": dtype}
    )


def _sequences_call(
    table: str,
    sequences: Sequence[Sequence[int]],
    max_length: int | None,
    padding: str,
    truncating: str,
    binary: bool,
) -> _Call[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    path = f"/v1/tables/{table}/sequences"
    if binary:
        lengths = [len(s) for s in sequences]
        flat = (
            np.concatenate([np.asarray(s, dtype="<i8") for s in sequences])
            if sequences
            else np.zeros(0, "<i8")
        )
        headers = {
            "Content-Type": OCTET,
            "Accept": OCTET,
            "X-Lengths": ",".join(map(str, lengths)),
            "X-Padding": padding,
            "X-Truncating": truncating,
        }
        if max_length is not None:
            headers["X-Max-Length"] = str(max_length)

        def parse_binary(response: httpx.Response) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            shape = _shape(response.headers["x-shape"])
            mask_shape = _shape(response.headers["x-mask-shape"])
            n = int(np.prod(shape)) * 4
            vectors = np.frombuffer(response.content[:n], "<f4").reshape(shape)
            mask = np.frombuffer(response.content[n:], np.uint8).astype(bool).reshape(mask_shape)
            lengths_header = response.headers.get("x-lengths", "")
            return vectors, mask, np.array(_shape(lengths_header), dtype=np.int64)

        return _Call(
            "POST", path, parse_binary, content=flat.astype("<i8").tobytes(), headers=headers
        )

    def parse_json(response: httpx.Response) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        data = response.json()
        vectors = np.frombuffer(base64.b64decode(data["vectors"]), "<f4").reshape(data["shape"])
        mask = np.array(data["mask"], dtype=bool).reshape(data["shape"][:2])
        return vectors, mask, np.array(data["lengths"], dtype=np.int64)

    body = {
        "sequences": [list(map(int, s)) for s in sequences],
        "max_length": max_length,
        "padding": padding,
        "truncating": truncating,
        "encoding": "base64",
    }
    return _Call("POST", path, parse_json, json=body)


def _bags_call(
    table: str, bags: Sequence[Sequence[int]], weights: Any, mode: str
) -> _Call[np.ndarray]:
    body: dict[str, Any] = {
        "bags": [list(map(int, b)) for b in bags],
        "mode": mode,
        "encoding": "base64",
    }
    if weights is not None:
        body["weights"] = [list(map(float, w)) for w in weights]

    def parse(response: httpx.Response) -> np.ndarray:
        data = response.json()
        return np.frombuffer(base64.b64decode(data["vectors"]), "<f4").reshape(data["shape"])

    return _Call("POST", f"/v1/tables/{table}/bags", parse, json=body)


def _neighbors_call(
    table: str, query: dict[str, Any], k: int, metric: str, exclude_self: bool
) -> _Call[tuple[np.ndarray, np.ndarray]]:
    def parse(response: httpx.Response) -> tuple[np.ndarray, np.ndarray]:
        data = response.json()
        return np.array(data["ids"], dtype=np.int64), np.array(data["scores"], dtype=np.float32)

    body = {**query, "k": k, "metric": metric, "exclude_self": exclude_self}
    return _Call("POST", f"/v1/tables/{table}/neighbors", parse, json=body)


def _tables_call() -> _Call[list[dict[str, Any]]]:
    return _Call("GET", "/v1/tables", lambda r: r.json()["tables"])


def _retry_delay(response: httpx.Response, attempt: int, backoff: float) -> float:
    after = response.headers.get("retry-after")
    fallback: float = backoff * 2**attempt
    try:
        return max(float(after), 0.0) if after is not None else fallback
    except ValueError:
        return fallback


class _ClientBase:
    def __init__(
        self, base_url: str, api_key: str | None, binary: bool, retries: int, backoff: float
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.binary = binary
        self.retries = retries
        self.backoff = backoff

    def _build(self, call: _Call[Any]) -> dict[str, Any]:
        return {
            "method": call.method,
            "url": call.path,
            "content": call.content,
            "json": call.json,
            "headers": call.headers,
        }

    @staticmethod
    def _finish(call: _Call[_Answer], response: httpx.Response) -> _Answer:
        if response.status_code >= 400:
            raise error_from_response(response)
        return call.parse(response)


class EmbeddingClient(RowUpdates, _ClientBase):
    """Blocking client; one pooled httpx connection pool per instance."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        binary: bool = True,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.05,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, binary, retries, backoff)
        self._http = httpx.Client(
            base_url=self.base_url, headers=self.headers, timeout=timeout, transport=transport
        )

    def _send(self, call: _Call[_Answer]) -> _Answer:
        for attempt in range(self.retries + 1):
            response = self._http.request(**self._build(call))
            if response.status_code != 503 or attempt == self.retries:
                return self._finish(call, response)
            time.sleep(_retry_delay(response, attempt, self.backoff))
        raise AssertionError("unreachable")  # pragma: no cover

    def tables(self) -> list[dict[str, Any]]:
        """Every table's ``TableInfo``."""
        return self._send(_tables_call())

    def lookup(self, table: str, ids: Any, *, dtype: str = "float32") -> np.ndarray:
        """Vectors of ``ids`` (any rank): shape ``ids.shape + (dim,)``."""
        return self._send(_lookup_call(table, ids, self.binary, dtype))

    def sequences(
        self,
        table: str,
        sequences: Sequence[Sequence[int]],
        *,
        max_length: int | None = None,
        padding: str = "post",
        truncating: str = "post",
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Padded vectors ``(B, L, dim)``, mask ``(B, L)`` and lengths ``(B,)``."""
        return self._send(
            _sequences_call(table, sequences, max_length, padding, truncating, self.binary)
        )

    def bags(
        self, table: str, bags: Sequence[Sequence[int]], *, weights: Any = None, mode: str = "mean"
    ) -> np.ndarray:
        """Pooled vectors ``(B, dim)`` of ragged bags (``nn.EmbeddingBag`` semantics)."""
        return self._send(_bags_call(table, bags, weights, mode))

    def neighbors(
        self,
        table: str,
        *,
        ids: Any = None,
        keys: Any = None,
        vectors: Any = None,
        k: int = 10,
        metric: str = "cosine",
        exclude_self: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Nearest rows: ``(ids, scores)`` of shape ``(queries, k)``."""
        return self._send(
            _neighbors_call(table, _query(ids, keys, vectors), k, metric, exclude_self)
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EmbeddingClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncEmbeddingClient(RowUpdates, _ClientBase):
    """asyncio client with the same methods as ``EmbeddingClient``, awaited."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        binary: bool = True,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.05,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, api_key, binary, retries, backoff)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=self.headers, timeout=timeout, transport=transport
        )

    async def _send(self, call: _Call[_Answer]) -> _Answer:
        for attempt in range(self.retries + 1):
            response = await self._http.request(**self._build(call))
            if response.status_code != 503 or attempt == self.retries:
                return self._finish(call, response)
            await asyncio.sleep(_retry_delay(response, attempt, self.backoff))
        raise AssertionError("unreachable")  # pragma: no cover

    async def tables(self) -> list[dict[str, Any]]:
        return await self._send(_tables_call())

    async def lookup(self, table: str, ids: Any, *, dtype: str = "float32") -> np.ndarray:
        return await self._send(_lookup_call(table, ids, self.binary, dtype))

    async def sequences(
        self,
        table: str,
        sequences: Sequence[Sequence[int]],
        *,
        max_length: int | None = None,
        padding: str = "post",
        truncating: str = "post",
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return await self._send(
            _sequences_call(table, sequences, max_length, padding, truncating, self.binary)
        )

    async def bags(
        self, table: str, bags: Sequence[Sequence[int]], *, weights: Any = None, mode: str = "mean"
    ) -> np.ndarray:
        return await self._send(_bags_call(table, bags, weights, mode))

    async def neighbors(
        self,
        table: str,
        *,
        ids: Any = None,
        keys: Any = None,
        vectors: Any = None,
        k: int = 10,
        metric: str = "cosine",
        exclude_self: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        return await self._send(
            _neighbors_call(table, _query(ids, keys, vectors), k, metric, exclude_self)
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncEmbeddingClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()


def _query(ids: Any, keys: Any, vectors: Any) -> dict[str, Any]:
    given = {
        name: value
        for name, value in (("ids", ids), ("keys", keys), ("vectors", vectors))
        if value is not None
    }
    if len(given) != 1:
        raise TypeError("give exactly one of ids, keys or vectors")
    name, value = next(iter(given.items()))
    return {name: np.asarray(value).tolist() if name != "keys" else list(value)}
