"""Canary: every private name and signature of uvicorn's that the service relies on
(``service.http.uvicorn_internals.RELIED_ON``) is still there, in the installed uvicorn.

A failure names the attribute; ``docs/upgrading.md`` ("Upgrading uvicorn") says what to
re-read in uvicorn's source before moving the pin.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import logging
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from packaging.requirements import Requirement
from uvicorn.config import Config
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT, FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import Server, ServerState
from uvicorn.supervisors.multiprocess import Process

from service.http.direct_lane import DIRECT_MAX_BODY
from service.http.uvicorn_internals import RELIED_ON, Relied

ROOT = Path(__file__).resolve().parents[3]


class _Transport(asyncio.Transport):
    """Just what uvicorn's protocol asks of a transport when it is made."""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def is_closing(self) -> bool:
        return False


async def _app(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app for the config (never called)."""


def _instances(loop: asyncio.AbstractEventLoop) -> dict[type, object]:
    """One instance of each class whose instance attributes are relied on."""
    config = Config(app=_app, lifespan="off", log_level="warning")
    config.load()
    state = ServerState()
    protocol = HttpToolsProtocol(config, state, {}, _loop=loop)
    transport = _Transport()
    protocol.connection_made(transport)
    protocol.on_message_begin()  # the parser's first callbacks: url and headers exist
    flow = FlowControl(transport)
    cycle = RequestResponseCycle(
        scope=protocol.scope,
        transport=transport,
        flow=flow,
        logger=logging.getLogger("test"),
        access_logger=logging.getLogger("test"),
        access_log=False,
        default_headers=[],
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=True,
        on_response=lambda: None,
    )
    return {
        HttpToolsProtocol: protocol,
        RequestResponseCycle: cycle,
        FlowControl: flow,
        ServerState: state,
        Config: config,
        ProxyHeadersMiddleware: ProxyHeadersMiddleware(_app),
        Server: Server(config),
        # Not started: a process object and its pipe. (Multiprocess is not made here: it
        # installs signal handlers; only its methods are relied on.)
        Process: Process(config, []),
    }


@pytest.fixture(scope="module")
def instances() -> Iterator[dict[type, object]]:
    loop = asyncio.new_event_loop()
    try:
        yield _instances(loop)
    finally:
        loop.close()


def _label(relied: Relied) -> str:
    owner = getattr(relied.owner, "__qualname__", repr(relied.owner))
    return f"uvicorn {uvicorn.__version__}: {owner}.{relied.name}"


@pytest.mark.parametrize("relied", RELIED_ON, ids=lambda relied: _label(relied).split(": ")[1])
def test_a_relied_on_name_is_still_there(relied: Relied, instances: dict[type, object]) -> None:
    holder = instances[relied.owner] if relied.instance else relied.owner
    assert hasattr(holder, relied.name), f"{_label(relied)} is gone"
    if relied.parameters is not None:
        found = tuple(inspect.signature(getattr(relied.owner, relied.name)).parameters)
        assert found == relied.parameters, (
            f"{_label(relied)} takes {found}, the service expects {relied.parameters}"
        )


def test_the_installed_uvicorn_is_the_pinned_one() -> None:
    """The canary speaks for the pinned release only (``pyproject.toml``)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    pins = [Requirement(line) for line in project["dependencies"]]
    (pin,) = [pin for pin in pins if pin.name == "uvicorn"]
    assert pin.specifier.contains(uvicorn.__version__), f"uvicorn {uvicorn.__version__}: {pin}"


def test_the_lane_claims_no_body_uvicorn_would_pause_reading_for() -> None:
    assert DIRECT_MAX_BODY <= HIGH_WATER_LIMIT, "uvicorn's HIGH_WATER_LIMIT shrank"


def test_every_instance_checked_is_made_by_this_test() -> None:
    owners = {relied.owner for relied in RELIED_ON if relied.instance}
    loop = asyncio.new_event_loop()
    try:
        assert owners <= set(_instances(loop))
    finally:
        loop.close()


def test_private_names_are_used_in_the_internals_module_only() -> None:
    """Every underscore name of ``RELIED_ON`` is reached from ``uvicorn_internals`` alone."""
    private = {r.name for r in RELIED_ON if r.name.startswith("_") and not r.name.endswith("__")}
    home = ROOT / "service" / "http" / "uvicorn_internals.py"
    found = []
    for path in sorted((ROOT / "service").rglob("*.py")):
        if path == home:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in private:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.attr}")
    assert found == []
