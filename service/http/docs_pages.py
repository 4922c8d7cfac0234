"""The OpenAPI schema and the docs pages; Swagger UI's assets come from ``swagger-ui-bundle``
(a pip package), so ``/docs`` works with no network."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
import swagger_ui_bundle
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html

from service.errors import NotFound
from service.results import RawBody

ASSETS = "/docs/assets/"
_ASSET_TYPES = {
    "swagger-ui-bundle.js": "application/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}
_HTML = "text/html; charset=utf-8"
TITLE = "Embedding lookup service"


def openapi_json(schema: dict[str, Any]) -> RawBody:
    """The schema as JSON."""
    return RawBody(orjson.dumps(schema), "application/json")


@lru_cache(maxsize=1)
def swagger_page() -> RawBody:
    """Swagger UI over ``/openapi.json``, its scripts from this service."""
    page = get_swagger_ui_html(
        openapi_url="/openapi.json",
        title=f"{TITLE} - Swagger UI",
        swagger_js_url=ASSETS + "swagger-ui-bundle.js",
        swagger_css_url=ASSETS + "swagger-ui.css",
        swagger_favicon_url=ASSETS + "favicon-32x32.png",
        oauth2_redirect_url="/docs/oauth2-redirect",
    )
    return RawBody(bytes(page.body), _HTML)


def oauth2_redirect_page() -> RawBody:
    """Swagger UI's OAuth2 redirect helper page."""
    return RawBody((_asset_folder() / "oauth2-redirect.html").read_bytes(), _HTML)


def redoc_page() -> RawBody:
    """ReDoc (its script from a CDN; /docs is the offline one)."""
    page = get_redoc_html(openapi_url="/openapi.json", title=f"{TITLE} - ReDoc")
    return RawBody(bytes(page.body), _HTML)


def _asset_folder() -> Path:
    return Path(swagger_ui_bundle.swagger_ui_path)


@lru_cache(maxsize=8)
def asset(name: str) -> RawBody:
    """One of Swagger UI's files; any other name is a 404."""
    media_type = _ASSET_TYPES.get(name)
    if media_type is None:
        raise NotFound(f"no route {ASSETS}{name}")
    return RawBody((_asset_folder() / name).read_bytes(), media_type)
