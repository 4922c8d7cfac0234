"""The docs pages load nothing from elsewhere: every script, style and icon they name is a
file the service serves under /docs/assets/ (from pip packages), and no web fonts."""

from __future__ import annotations

import re

import pytest

from service.errors import NotFound
from service.http import docs_pages


@pytest.mark.parametrize("page", [docs_pages.swagger_page, docs_pages.redoc_page])
def test_every_file_a_docs_page_names_is_served_here(page) -> None:
    html = bytes(page().body).decode()
    named = re.findall(r"""(?:src|href|Url|url)\s*[=:]\s*["']([^"']+)["']""", html)
    assert named
    for url in named:
        if url in ("/openapi.json", "/docs/oauth2-redirect"):
            continue
        assert url.startswith(docs_pages.ASSETS), url
        served = docs_pages.asset(url.removeprefix(docs_pages.ASSETS))
        assert served.body, url
    assert "fonts.googleapis" not in html and "cdn" not in html.lower()


def test_redoc_script_is_served_and_other_names_are_not_found() -> None:
    script = docs_pages.asset("redoc.standalone.js")
    assert script.media_type == "application/javascript" and len(script.body) > 100_000
    with pytest.raises(NotFound):
        docs_pages.asset("../secret.txt")
