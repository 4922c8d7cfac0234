"""One request as route adapters see it, and the services they reach."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from service.app.infer import V2Model
from service.settings import ServiceSettings
from service.tables.registry import TableRegistry
from service.tables.served_table import ServedTable


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
    query: bytes = b""  # the raw query string (the rows route reads ``?version=``)

    def served_table(self) -> ServedTable:
        """The table the resolver found (a route without a table resolver has none)."""
        assert self.table is not None, "the route resolves no table"
        return self.table

    def served_model(self) -> V2Model:
        """The V2 model the resolver found."""
        assert self.model is not None, "the route resolves no model"
        return self.model
