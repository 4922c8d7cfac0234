"""What a route is: its path, methods, auth, decoders, use case, encoder and docs (the types
``service.http.route_table`` declares every route with)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from service.encoding.responses import EncodedResponse
from service.http.call import Call
from service.tables.registry import TableRegistry
from service.usecases.plan import Plan

Auth = Literal["public", "probe", "key", "admin"]
"""public: never a key; probe: a key only with EMBED_AUTH_HEALTH; key: an API key when keys
are configured; admin: the admin key (the route exists only when one is set)."""

ANY_TYPE = "*"  # a decoder under this key reads the body whatever its Content-Type

Decoder = Callable[[Call], Any]
UseCase = Callable[[Call, Any], Awaitable[Any]]
InlineUseCase = Callable[[Call, Any], Any]
Planner = Callable[[Call, Any], Plan[Any]]
Encoder = Callable[[Any], EncodedResponse]
Resolver = Callable[[Call], None]
InlineCheck = Callable[[Mapping[str, str], TableRegistry], bool]


@dataclass(frozen=True)
class RouteDoc:
    """What the OpenAPI schema says of a route."""

    summary: str
    tags: tuple[str, ...]
    body: type | None = None
    response: type | None = None
    errors: Mapping[int | str, dict[str, Any]] = field(default_factory=dict)
    in_schema: bool = True


@dataclass(frozen=True)
class Direct:
    """How the direct lane (``service.http.direct_lane``) answers a route: ``gathers_inline``
    says whether a request of these path parameters goes to a table that gathers inline (so
    its answer never waits on the event loop); ``answer`` is the use case's synchronous path
    (plan, gather inline, finish)."""

    gathers_inline: InlineCheck
    answer: InlineUseCase


@dataclass(frozen=True, kw_only=True)
class Route:
    """One route: path template, methods, use case, decoders, encoder, auth, metric label."""

    path: str
    methods: tuple[str, ...]
    label: str
    auth: Auth
    use_case: UseCase
    encoder: Encoder
    doc: RouteDoc
    decoders: Mapping[str, Decoder] = field(default_factory=dict)
    resolve: Resolver | None = None
    direct: Direct | None = None
    versioned: bool = False
    """The route answers one version of a table or group: it takes ``?version=`` (its
    resolver reads it) and names the version in ``X-Table-Version``; set by ``_versioned``."""
    """``None``: the direct lane never answers this route (its work always waits, or is
    not worth it)."""


class PlannedRun(TypedDict):
    """A route's ``use_case`` and ``direct``, made from one planner."""

    use_case: UseCase
    direct: Direct


def planned(planner: Planner, gathers_inline: InlineCheck) -> PlannedRun:
    """A route's use case and direct answer, both from one planner: awaited from a task,
    or run inline by the lane."""

    def use_case(call: Call, request: Any) -> Awaitable[Any]:
        return planner(call, request).run()

    def answer(call: Call, request: Any) -> Any:
        return planner(call, request).run_inline()

    return PlannedRun(use_case=use_case, direct=Direct(gathers_inline, answer))
