"""Which versions of a versioned table or group are served: ``versions`` and ``[labels]``.

Read from a versioned table's ``table.toml`` (beside its table options) or a ``group.toml``
(nothing else)::

    versions = {latest = 2}          # the default: {latest = 1}
    versions = {specific = [3, 5]}
    versions = {all = true}
    [labels]
    stable = 3                       # [a-z][a-z0-9_-]*, never a number
    canary = 5

Strict like the table options: unknown keys, wrong types (``latest = "2"``, ``all = 1``) and
bad values are errors naming the file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from service.errors import TableLoadError
from service.repository.options import (
    VERSIONING_KEYS,
    TableOptions,
    read_options_file,
    validate_keys,
    validate_table_options,
)

LABEL = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
# The label that, when declared, names the version an unpinned request gets.
DEFAULT_LABEL = "default"


class VersionSelection(BaseModel):
    """Exactly one of ``latest = K``, ``specific = [...]``, ``all = true``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    latest: int | None = Field(None, ge=1, description="The K highest versions present.")
    specific: list[int] | None = Field(None, min_length=1, description="These versions only.")
    all: bool | None = Field(None, description="Every version present.")

    @field_validator("specific")
    @classmethod
    def _positive_and_distinct(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return None
        if any(number < 1 for number in value):
            raise ValueError("versions are positive integers")
        if len(set(value)) != len(value):
            raise ValueError("a version is listed twice")
        return sorted(value)

    @field_validator("all")
    @classmethod
    def _all_is_true(cls, value: bool | None) -> bool | None:
        if value is False:
            raise ValueError("all = false selects nothing; use latest or specific")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> VersionSelection:
        given = [key for key in ("latest", "specific", "all") if getattr(self, key) is not None]
        if len(given) != 1:
            raise ValueError(
                f"takes exactly one of latest, specific, all (got {', '.join(given) or 'none'})"
            )
        return self

    def select(self, candidates: list[int]) -> list[int]:
        """The versions this selection serves out of ``candidates`` (ascending, loadable)."""
        if self.latest is not None:
            return sorted(candidates)[-self.latest :]
        if self.specific is not None:
            return [number for number in self.specific if number in candidates]
        return sorted(candidates)

    def describe(self) -> str:
        """As written in TOML: ``{latest = 1}``."""
        if self.latest is not None:
            return f"{{latest = {self.latest}}}"
        if self.specific is not None:
            return f"{{specific = {self.specific}}}"
        return "{all = true}"


class VersionPolicy(BaseModel):
    """The version policy of one versioned table or group."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    versions: VersionSelection = Field(
        default_factory=lambda: VersionSelection(latest=1),
        description="Which versions present are served.",
    )
    labels: dict[str, int] = Field(
        default_factory=dict, description="Label -> version number (must be served)."
    )

    @field_validator("labels")
    @classmethod
    def _labels_named_and_positive(cls, value: dict[str, int]) -> dict[str, int]:
        for label, number in value.items():
            if not LABEL.match(label):
                raise ValueError(f"label {label!r} is not [a-z][a-z0-9_-]* (a label is no number)")
            if number < 1:
                raise ValueError(f"label {label!r} = {number}: versions are positive integers")
        return value


def read_version_policy(path: Path | None) -> VersionPolicy:
    """The policy of a ``group.toml`` (only ``versions`` and ``[labels]``); defaults for None."""
    if path is None:
        return VersionPolicy()
    raw = read_options_file(path)
    unknown = sorted(set(raw) - set(VERSIONING_KEYS))
    if unknown:
        raise TableLoadError(
            f"{path}: bad options: {', '.join(unknown)}: unknown key (a group.toml takes "
            "versions and [labels]; member options go in <group>/<member>.toml)"
        )
    return _validate_policy(raw, path)


def read_versioned_options(path: Path | None) -> tuple[VersionPolicy, TableOptions]:
    """A versioned table's ``table.toml``: its version policy and the options of every version."""
    if path is None:
        return VersionPolicy(), TableOptions()
    raw = read_options_file(path)
    policy = _validate_policy({k: v for k, v in raw.items() if k in VERSIONING_KEYS}, path)
    options = validate_table_options(
        {k: v for k, v in raw.items() if k not in VERSIONING_KEYS}, path
    )
    return policy, options


def _validate_policy(raw: dict[str, Any], path: Path) -> VersionPolicy:
    return validate_keys(VersionPolicy, raw, path, "version policy", VersionSelection.model_fields)
