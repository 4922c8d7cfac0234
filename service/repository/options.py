"""Per-table options, read from ``<name>.toml`` beside the table or ``<name>/table.toml``."""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from collections.abc import Collection
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from service.errors import TableLoadError

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
REDIS_URL = re.compile(r"^rediss?://[^/\s]+(/\d+)?/?$")
# 100,000 rows of dim 128 float32 = 51 MB per process (docs/redis.md: sizing).
DEFAULT_CACHE_ROWS = 100_000
DEFAULT_REDIS_TIMEOUT_MS = 1000
Keys = TypeVar("Keys", bound=BaseModel)


class TableOptions(BaseModel):
    """Options of one table; unknown keys are an error (they catch typos).

    Types are strict: ``padding_idx = true`` is not 1 and ``max_norm = "0.5"`` is not
    0.5 (an integer is still accepted where a float is expected: ``max_norm = 1``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    padding_idx: int | None = Field(
        None, description="Row that pads sequences (negative counts from the end, as in torch)."
    )
    mask_zero: bool = Field(False, description="Keras mask_zero: id 0 is padding in sequences.")
    max_norm: float | None = Field(
        None, gt=0, description="Rows whose norm exceeds it are rescaled to it (torch max_norm)."
    )
    norm_type: float = Field(2.0, gt=0, description="p of the p-norm used by max_norm.")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    backend: Literal["numpy", "onnxruntime"] | None = Field(
        None, description="Gather backend; default numpy on CPU for .npy, onnxruntime otherwise."
    )
    dtype: Literal["float32", "float16", "int8"] | None = Field(
        None,
        description="Stored form; checked against the file (convert with `embedding-service convert`).",
    )
    oov: Literal["error", "hash", "zero"] = Field(
        "error",
        description="Unknown keys (tables with a vocabulary): 422, hashed to OOV rows, or zeros.",
    )
    num_oov_indices: int = Field(
        1, ge=0, description="OOV rows for oov = 'hash' (Keras StringLookup)."
    )
    oov_token: str = Field("[UNK]", description="Vocabulary lines equal to it are the OOV rows.")
    mask_token: str | None = Field(None, description="The vocabulary line that is the padding row.")
    batching: bool | None = Field(
        None, description="Micro-batching on/off; default per backend (see README)."
    )
    max_batch_ids: int | None = Field(None, ge=1)
    max_delay_us: int | None = Field(None, ge=0, le=1_000_000)
    max_queue_ids: int | None = Field(None, ge=1)
    timeout_ms: int | None = Field(None, ge=1)
    # Redis tables (a ``<name>.toml`` with no weights file beside it): see docs/redis.md.
    redis: str | None = Field(
        None,
        strict=True,
        description="redis:// or rediss:// URL of one node of the store (password in the URL).",
    )
    cache_rows: int = Field(
        DEFAULT_CACHE_ROWS,
        ge=0,
        strict=True,
        description="Hot rows a Redis table keeps per process (0: every row from Redis).",
    )
    redis_timeout_ms: int = Field(
        DEFAULT_REDIS_TIMEOUT_MS,
        ge=1,
        strict=True,
        description="Deadline of one Redis round trip; past it the request gets 503.",
    )
    warm_up: bool | None = Field(
        None,
        description="Read every page of the table at load, before it is ready (default: EMBED_WARM_UP).",
    )

    @field_validator("device")
    @classmethod
    def _device_known(cls, value: str) -> str:
        if not DEVICE_PATTERN.match(value):
            raise ValueError("device must be auto, cpu, cuda or cuda:N")
        return value

    @field_validator("redis")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is not None and not REDIS_URL.match(value):
            raise ValueError("redis must be a redis://host:port or rediss://host:port URL")
        return value

    @field_validator("norm_type")
    @classmethod
    def _norm_finite_or_inf(cls, value: float) -> float:
        if math.isnan(value):
            raise ValueError("norm_type must be a number")
        return value

    def pad_id(self, rows: int, source: Path | str) -> int | None:
        """The id that sequences treat as padding, with torch's negative-index rule applied.

        Raises ``TableLoadError`` when ``padding_idx`` is outside ``[-rows, rows)``
        or names another id than ``mask_zero``'s 0.
        """
        pad: int | None = None
        if self.padding_idx is not None:
            if not -rows <= self.padding_idx < rows:
                raise TableLoadError(
                    f"{source}: padding_idx {self.padding_idx} is outside [-{rows}, {rows})"
                )
            pad = self.padding_idx % rows
        if self.mask_zero:
            if pad not in (None, 0):
                raise TableLoadError(
                    f"{source}: mask_zero pads with id 0 but padding_idx is {self.padding_idx}"
                )
            pad = 0
        return pad


# Keys of a versioned table's ``table.toml`` and of a ``group.toml`` (service/repository/
# version_policy.py); a flat table's or a group member's options file may not hold them.
VERSIONING_KEYS = ("versions", "labels")


def read_options_file(path: Path) -> dict[str, Any]:
    """The TOML table of an options file, or ``TableLoadError`` naming the file."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise TableLoadError(f"{path}: cannot read options: {exc}") from exc


def read_table_options(path: Path | None, *, versioned: bool = False) -> TableOptions:
    """Read and validate an options file; ``None`` (no file) gives the defaults.

    ``versioned``: the file is the ``table.toml`` of a versioned table, whose ``versions``
    and ``[labels]`` keys are the version policy's (read_version_policy), not options.
    """
    if path is None:
        return TableOptions()
    raw = read_options_file(path)
    if versioned:
        raw = {key: value for key, value in raw.items() if key not in VERSIONING_KEYS}
    return validate_table_options(raw, path)


def validate_table_options(raw: dict[str, Any], path: Path) -> TableOptions:
    """``raw`` (an options file's keys) as ``TableOptions``, or ``TableLoadError`` naming ``path``."""
    return validate_keys(TableOptions, raw, path, "options", TableOptions.model_fields)


def validate_keys(
    model: type[Keys], raw: dict[str, Any], path: Path, what: str, known: Collection[str]
) -> Keys:
    """``raw`` as ``model``, or ``TableLoadError`` naming ``path`` and every bad key (a "did
    you mean" out of ``known`` for an unknown one)."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_describe_error(err, known) for err in exc.errors())
        raise TableLoadError(f"{path}: bad {what}: {problems}") from exc


def _describe_error(error: Any, known: Collection[str]) -> str:
    """``key: message (got value)``, with a "did you mean" for an unknown key."""
    key = ".".join(str(part) for part in error["loc"]) or "options"
    if error["type"] == "extra_forbidden":
        if key in VERSIONING_KEYS:
            return (
                f"{key}: only the table.toml of a versioned table (numbered version folders "
                "<name>/<N>/) or a group.toml takes it; here it has no version to apply to"
            )
        close = difflib.get_close_matches(key.rsplit(".", 1)[-1], known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"{key}: unknown option{hint}"
    return f"{key}: {error['msg']} (got {repr(error.get('input'))[:80]})"
