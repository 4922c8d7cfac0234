"""One request as route adapters see it, and the services they reach."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from service.errors import InvalidRequest
from service.settings import ServiceSettings
from service.tables.registry import TableRegistry
from service.tables.served_table import ServedTable
from service.tables.version_sets import GroupVersion
from service.usecases.infer import V2Model


@dataclass
class Services:
    """What every route may use: the registry, the settings, the OpenAPI schema."""

    registry: TableRegistry
    settings: ServiceSettings
    openapi: Callable[[], dict[str, Any]] = field(default=lambda: {})


@dataclass(slots=True)
class Call:
    """Path parameters, headers and body of one request; the route's resolver fills ``table``
    (a /v1 table route) or ``model`` (a V2 model route)."""

    params: Mapping[str, str]
    headers: Mapping[str, str]
    services: Services
    body: bytes = b""
    media_type: str = ""
    table_label: str = ""
    table: ServedTable | None = None
    model: V2Model | None = None
    query: bytes = b""  # the raw query string (only ``version=`` is read)
    group: GroupVersion | None = None  # a group route's group version, picked once
    # X-Table-Version of the answer: set by the resolver once the version is known.
    version_header: str | None = None

    def use_table(self, table: ServedTable) -> ServedTable:
        """``table`` answers this request: its name labels the metrics, its version the
        ``X-Table-Version`` header."""
        self.table = table
        self.table_label = table.name
        self.version_header = table.served_version
        return table

    def version(self) -> str | None:
        """The ``version=`` query parameter (a version or a label), or None: the default.
        Unpinned requests (no query string) pay one truth test."""
        if not self.query:
            return None
        values = [v for k, v in parse_qsl(self.query.decode("latin-1")) if k == "version"]
        if len(values) > 1:
            raise InvalidRequest("version= is given more than once", {"version": values})
        if values and not values[0]:
            raise InvalidRequest("version= is empty: give a version number or a label")
        return values[0] if values else None

    def resolved_tables(self) -> tuple[ServedTable, ...]:
        """Every table version the resolver picked (a table, a V2 model's, a group's members):
        what the request holds until it is answered."""
        if self.table is not None:
            return (self.table,)
        if self.model is not None:
            return (self.model.table,)
        if self.group is not None:
            return tuple(self.group.members.values())
        return ()

    def served_table(self) -> ServedTable:
        """The table the resolver found (a route without a table resolver has none)."""
        assert self.table is not None, "the route resolves no table"
        return self.table

    def served_model(self) -> V2Model:
        """The V2 model the resolver found."""
        assert self.model is not None, "the route resolves no model"
        return self.model
