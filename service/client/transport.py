"""What the sync and async clients share: one request as data, errors, retries, versions."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx

from service import errors

OCTET = "application/octet-stream"
VERSION_HEADER = "x-table-version"
ERROR_CLASSES: dict[str, type[errors.ServiceError]] = {
    cls.code: cls for cls in errors.ServiceError.__subclasses__()
}

Answer = TypeVar("Answer")
Method = TypeVar("Method", bound=Callable[..., Any])


def error_from_response(response: httpx.Response) -> errors.ServiceError:
    """The service's exception for an error response (any status >= 400)."""
    try:
        body = response.json()["error"]
        code, message, detail = body["code"], body["message"], body.get("detail")
    except Exception:
        code, message, detail = "http_error", response.text[:500] or response.reason_phrase, None
    cls = ERROR_CLASSES.get(code, errors.ServiceError)
    # Not passed to the constructor: some classes fix their own headers there.
    error = cls(message, detail)
    error.headers = dict(response.headers)
    if cls is errors.ServiceError:
        # An unknown code: this one instance takes the server's status and code, shadowing
        # the ClassVars mypy will not let an instance assign.
        error.status, error.code = response.status_code, code  # type: ignore[misc]
    return error


def version_params(version: str | int | None) -> dict[str, str]:
    """The ``?version=`` query of a request pinned to ``version`` (none when unpinned)."""
    if version is None:
        return {}
    if isinstance(version, bool) or not isinstance(version, (str, int)):
        raise TypeError(f"version must be a str, an int or None, not {type(version).__name__}")
    return {"version": str(version)}


def answered_version(response: httpx.Response) -> str | None:
    """The version that answered (``X-Table-Version``); None from a server without versions."""
    version: str | None = response.headers.get(VERSION_HEADER)
    return version


@dataclass
class Call(Generic[Answer]):
    """One request and how to read its answer: shared by the sync and async clients."""

    method: str
    path: str
    parse: Callable[[httpx.Response], Answer]
    content: bytes | None = None
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)

    def request(self) -> dict[str, Any]:
        """Keyword arguments of ``httpx.Client.request`` (and its async twin)."""
        return {
            "method": self.method,
            "url": self.path,
            "content": self.content,
            "json": self.json,
            "headers": self.headers,
            "params": self.params,
        }

    def finish(self, response: httpx.Response) -> Answer:
        """The parsed answer, or the service's exception for an error status."""
        if response.status_code >= 400:
            raise error_from_response(response)
        return self.parse(response)


def described(method: Method, build: Callable[..., Any]) -> Method:
    """``method`` named and documented as ``build``, with its parameters but the first (the
    client, which the method's ``self`` is) for ``help()`` and IDEs."""
    functools.update_wrapper(method, build)
    attributes = vars(method)
    del attributes["__wrapped__"]  # its return type is the request, not the answer: hide it
    signature = inspect.signature(build)
    self_parameter = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
    parameters = [self_parameter, *list(signature.parameters.values())[1:]]
    attributes["__signature__"] = signature.replace(
        parameters=parameters, return_annotation=inspect.Signature.empty
    )
    return method


def retry_delay(response: httpx.Response, attempt: int, backoff: float) -> float:
    """Seconds to wait before retrying a 503: its ``Retry-After``, else exponential backoff."""
    after = response.headers.get("retry-after")
    fallback: float = backoff * 2**attempt
    try:
        return max(float(after), 0.0) if after is not None else fallback
    except ValueError:
        return fallback


TransportT = TypeVar("TransportT", httpx.BaseTransport, httpx.AsyncBaseTransport)
HttpT = TypeVar("HttpT", httpx.Client, httpx.AsyncClient)


class ClientBase(Generic[TransportT, HttpT]):
    """What both clients hold: the httpx client (sync or async), wire format, retry policy."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        binary: bool = True,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.05,
        transport: TransportT | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.binary = binary
        self.retries = retries
        self.backoff = backoff
        self._http: HttpT = self._open(timeout, transport)

    def _open(self, timeout: float, transport: TransportT | None) -> HttpT:
        raise NotImplementedError

    def retrying(self, response: httpx.Response, attempt: int) -> bool:
        """Whether ``response`` (answer number ``attempt``) is a 503 worth another try."""
        return response.status_code == 503 and attempt < self.retries
