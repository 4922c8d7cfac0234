"""The OpenAPI schema and the docs pages, served with no network: Swagger UI's assets come
from ``swagger-ui-bundle`` and ReDoc's from ``fastapi-standalone-docs`` (pip packages), and
neither page loads a font or a script from elsewhere."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import orjson
import swagger_ui_bundle
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html

from service.errors import NotFound
from service.results import RawBody

ASSETS = "/docs/assets/"


def _swagger_folder() -> Path:
    return Path(swagger_ui_bundle.swagger_ui_path)


def _redoc_folder() -> Path:
    # Only its static files: the package's own app wiring (StandaloneDocs) is not used.
    return Path(str(files("fastapi_standalone_docs") / "static" / "redoc"))


# Every file under ASSETS: the package folder it is read from, and its media type.
_ASSETS: dict[str, tuple[Callable[[], Path], str]] = {
    "swagger-ui-bundle.js": (_swagger_folder, "application/javascript"),
    "swagger-ui.css": (_swagger_folder, "text/css"),
    "favicon-32x32.png": (_swagger_folder, "image/png"),
    "redoc.standalone.js": (_redoc_folder, "application/javascript"),
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
    return RawBody((_swagger_folder() / "oauth2-redirect.html").read_bytes(), _HTML)


@lru_cache(maxsize=1)
def redoc_page() -> RawBody:
    """ReDoc over ``/openapi.json``, its script from this service, no web fonts."""
    page = get_redoc_html(
        openapi_url="/openapi.json",
        title=f"{TITLE} - ReDoc",
        redoc_js_url=ASSETS + "redoc.standalone.js",
        redoc_favicon_url=ASSETS + "favicon-32x32.png",
        with_google_fonts=False,
    )
    return RawBody(bytes(page.body), _HTML)


@lru_cache(maxsize=8)
def asset(name: str) -> RawBody:
    """One of the docs pages' files; any other name is a 404."""
    found = _ASSETS.get(name)
    if found is None:
        raise NotFound(f"no route {ASSETS}{name}")
    folder, media_type = found
    return RawBody((folder() / name).read_bytes(), media_type)
