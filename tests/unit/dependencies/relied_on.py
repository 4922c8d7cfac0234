"""What the canaries of this folder share: naming a relied-on name, and checking a call."""

from __future__ import annotations

import ast
import importlib
import inspect
from importlib.metadata import version
from pathlib import Path

UPGRADING = "docs/upgrading.md"


def where(distribution: str, owner: str, name: str) -> str:
    """``owner.name (distribution X.Y.Z)``: how a failure names what changed."""
    return f"{owner}.{name} ({distribution} {version(distribution)})"


def resolve(dotted: str) -> type:
    """The class named by ``module.Class``."""
    module, _, name = dotted.rpartition(".")
    found = getattr(importlib.import_module(module), name, None)
    assert isinstance(found, type), f"{dotted} is no longer a class; see {UPGRADING}"
    return found


def call_refused(function: object, arguments: str) -> str | None:
    """Why ``function`` would refuse a call with ``arguments`` (as written in the code's
    call, e.g. ``"packed, check_health=False"``), or ``None`` when its signature takes it."""
    call = ast.parse(f"f({arguments})", mode="eval").body
    assert isinstance(call, ast.Call)
    keywords = {keyword.arg: None for keyword in call.keywords if keyword.arg is not None}
    if not callable(function):
        return f"{function!r} is not callable"
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError) as exc:
        return f"no signature to check: {exc}"
    try:
        signature.bind(*[None] * len(call.args), **keywords)
    except TypeError as exc:
        return f"{signature}: {exc}"
    return None


SERVICE = Path(__file__).resolve().parents[3] / "service"


def uses_elsewhere(names: set[str], home: Path) -> list[str]:
    """``file:line .name`` for every attribute access of ``names`` in service/ outside
    ``home``, the one module allowed to use them."""
    found = []
    for path in sorted(SERVICE.rglob("*.py")):
        if path == home:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in names:
                found.append(f"{path.relative_to(SERVICE.parent)}:{node.lineno} .{node.attr}")
    return found
