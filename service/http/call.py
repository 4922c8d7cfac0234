"""One request as route adapters see it, and the services they reach."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from service.settings import ServiceSettings
from service.tables.registry import TableRegistry


@dataclass
class Services:
    """What every route may use: the registry, the settings, the OpenAPI schema."""

    registry: TableRegistry
    settings: ServiceSettings
    openapi: Callable[[], dict[str, Any]] = field(default=lambda: {})


@dataclass(slots=True)
class Call:
    """Path parameters, headers and body of one request; the resolver fills ``target``."""

    params: Mapping[str, str]
    headers: Mapping[str, str]
    services: Services
    body: bytes = b""
    media_type: str = ""
    table_label: str = ""
    target: Any = None
