"""Path -> route, for the dispatcher and the direct lane: the path split once and dicts
walked (no per-request regex), matches remembered."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from service.http.route_spec import Route


@dataclass
class _Node:
    """One path segment of the route tree: literal children first, then one parameter."""

    literals: dict[str, _Node] = field(default_factory=dict)
    param: tuple[str, _Node] | None = None
    routes: dict[str, Route] = field(default_factory=dict)


MATCH_CACHE_SIZE = 4096
"""Matched (method, path) pairs remembered: a request to a path seen before costs one dict
lookup instead of a split and a walk (paths name tables, so the working set is small; the
cache is emptied when full, so unmatched or random paths cannot grow it)."""


class RouteMatcher:
    """Path -> route by splitting the path once and walking dicts (no per-request regex)."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self._root = _Node()
        self._seen: dict[tuple[str, str], tuple[Route, dict[str, str]]] = {}
        for route in routes:
            node = self._root
            for segment in route.path.strip("/").split("/"):
                if segment.startswith("{"):
                    name = segment[1:-1]
                    if node.param is None:
                        node.param = (name, _Node())
                    node = node.param[1]
                else:
                    node = node.literals.setdefault(segment, _Node())
            for method in route.methods:
                node.routes[method] = route

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        """The route and path parameters, or ``None`` (no such path, or not this method).

        The parameters dict is shared by every request to the same path: read it, never
        write it."""
        found = self._seen.get((method, path))
        if found is None:
            found = self._walk(method, path)
            if found is not None:
                if len(self._seen) >= MATCH_CACHE_SIZE:
                    self._seen.clear()
                self._seen[method, path] = found
        return found

    def _walk(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        node: _Node | None = self._root
        params: dict[str, str] = {}
        for segment in path[1:].split("/"):
            assert node is not None
            child = node.literals.get(segment)
            if child is None:
                if node.param is None or not segment:
                    return None
                name, child = node.param
                params[name] = segment
            node = child
        route = node.routes.get(method) if node is not None else None
        return None if route is None else (route, params)
