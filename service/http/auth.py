"""Optional API-key check for the /v1 and /v2 routes (Bearer tokens, constant-time comparison)."""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from pathlib import Path

from service.errors import Unauthorized
from service.settings import ServiceSettings

_HEALTH = frozenset(("/healthz", "/readyz", "/metrics"))
_ADMIN_PREFIX = "/v1/admin/"


def read_keys(settings: ServiceSettings) -> list[str]:
    """Keys from ``api_keys`` (comma-separated) and ``api_keys_file`` (one per line)."""
    keys: list[str] = []
    if settings.api_keys is not None:
        keys += [k.strip() for k in settings.api_keys.get_secret_value().split(",")]
    if settings.api_keys_file is not None:
        for line in Path(settings.api_keys_file).read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                keys.append(line)
    return [k for k in keys if k]


def bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The token of an ``Authorization: Bearer <token>`` header, if any."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return token.strip()
            return None
    return None


def token_matches(token: bytes | None, keys: Iterable[bytes]) -> bool:
    """Compare against every key without an early exit, so timing does not leak which or how much."""
    if token is None:
        return False
    found = False
    for key in keys:
        found |= hmac.compare_digest(token, key)
    return found


class ApiKeyGuard:
    """Decides which paths need a key and whether a request carries a valid one."""

    def __init__(self, keys: list[str], protect_health: bool = False) -> None:
        self._keys = [k.encode() for k in keys]
        self.protect_health = protect_health

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> ApiKeyGuard | None:
        keys = read_keys(settings)
        return cls(keys, settings.auth_health) if keys else None

    def protects(self, path: str) -> bool:
        """For paths outside the route table (404s, 405s): does the path need a key?"""
        if path.startswith(_ADMIN_PREFIX):
            return False  # the admin routes check the admin key themselves
        if path.startswith(("/v1/", "/v2/")) or path in ("/v1", "/v2"):
            return True
        return self.protect_health and path in _HEALTH

    def check(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """Raise ``Unauthorized`` unless the request carries one of the keys."""
        if not token_matches(bearer_token(headers), self._keys):
            raise Unauthorized(
                "a valid API key is required: send 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
