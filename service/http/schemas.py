"""Pydantic models of the HTTP contract, for the OpenAPI schema and the docs.

They describe the bodies; the hot path does not run them per request (ids are
decoded and validated with numpy in ``service.decoding``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypeAliasType

Ids = TypeAliasType("Ids", "int | list[Ids]")
Floats = TypeAliasType("Floats", "float | list[Floats]")
Keys = TypeAliasType("Keys", "str | list[Keys]")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LookupBody(_Strict):
    """Ids of any rank; ``base64`` returns the vector bytes as one string."""

    ids: Ids | None = Field(
        None, description="An id or rectangular nested lists of ids (int64, >= 0)."
    )
    keys: Keys | None = Field(
        None, description="Instead of ids, for tables with a vocabulary: same shapes."
    )
    encoding: Literal["float", "base64"] = "float"
    dtype: Literal["float32", "float16"] = "float32"


class LookupResult(BaseModel):
    table: str
    shape: list[int]
    dtype: Literal["float32", "float16"]
    vectors: Floats | str = Field(..., description="Nested lists of `shape`, or a base64 string.")


class SequencesBody(_Strict):
    """Ragged sequences, padded and truncated like Keras ``pad_sequences``."""

    sequences: list[list[int]] | None = None
    keys: list[list[str]] | None = Field(
        None, description="Instead of sequences, for tables with a vocabulary."
    )
    max_length: int | None = Field(None, ge=0)
    padding: Literal["post", "pre"] = "post"
    truncating: Literal["post", "pre"] = "post"
    encoding: Literal["float", "base64"] = "float"
    dtype: Literal["float32", "float16"] = "float32"


class BagsBody(_Strict):
    """Ragged bags, or nn.EmbeddingBag's flat ids + offsets; pooled like nn.EmbeddingBag."""

    bags: list[list[int]] | None = None
    keys: list[list[str]] | None = Field(
        None, description="Instead of bags, for tables with a vocabulary."
    )
    ids: list[int] | None = None
    offsets: list[int] | None = None
    weights: list[list[float]] | list[float] | None = Field(
        None,
        description="Per-id weights (sum and sqrtn only), shaped like bags (or flat with ids).",
    )
    mode: Literal["sum", "mean", "max", "sqrtn"] = "mean"
    encoding: Literal["float", "base64"] = "float"
    dtype: Literal["float32", "float16"] = "float32"


class BagsResult(BaseModel):
    table: str
    shape: list[int]
    dtype: Literal["float32", "float16"]
    vectors: Floats | str


class NeighborsBody(_Strict):
    """Exactly one of ids, keys (tables with a vocabulary) or vectors."""

    ids: int | list[int] | None = None
    keys: str | list[str] | None = None
    vectors: list[float] | list[list[float]] | None = None
    k: int = Field(10, ge=1, le=1000)
    metric: Literal["cosine", "dot", "l2"] = "cosine"
    exclude_self: bool = True


class NeighborsResult(BaseModel):
    table: str
    ids: list[list[int]]
    scores: list[list[float]]
    keys: list[list[str]] | None = None


class SequencesResult(BaseModel):
    table: str
    shape: list[int]
    dtype: Literal["float32", "float16"]
    vectors: Floats | str
    mask: list[list[bool]]
    lengths: list[int]


class EmbeddingsBody(_Strict):
    """OpenAI embeddings request with token-id input."""

    model: str = Field(..., description="Table name.")
    input: int | list[int] | list[list[int]] = Field(
        ...,
        description="An id or a flat list of ids (one input), or lists of ids (one input each).",
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None


class EmbeddingObject(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResult(BaseModel):
    object: Literal["list"]
    data: list[EmbeddingObject]
    model: str
    usage: Usage


class ErrorDetail(BaseModel):
    code: str = Field(..., description="snake_case error code (API.md's error table).")
    message: str
    detail: dict[str, Any] | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class BatchingInfo(BaseModel):
    enabled: bool
    max_batch_ids: int
    max_delay_us: int
    max_queue_ids: int
    timeout_ms: int


class TableInfo(BaseModel):
    name: str
    rows: int
    dim: int
    dtype: str
    format: str
    backend: str
    device: str
    padding_idx: int | None
    mask_zero: bool
    max_norm: float | None
    norm_type: float
    version: str = Field(..., description="The default version (unpinned requests get it).")
    versions: list[str] = Field(..., description="Every version served, ascending.")
    labels: dict[str, str] = Field(..., description="Label -> the version it names.")
    update_sequence: int = Field(0, description="Row updates applied to this version.")
    placement_reason: str
    batching: BatchingInfo


class TablesList(BaseModel):
    tables: list[TableInfo]


class GroupInfo(BaseModel):
    """A group of tables that flip together (API.md, "Groups")."""

    name: str
    tables: list[str] = Field(..., description="Its members, as tables: <group>.<member>.")
    versions: list[str]
    labels: dict[str, str]
    version: str = Field(..., description="The default version.")


class GroupsList(BaseModel):
    groups: list[GroupInfo]


class GroupMemberIds(_Strict):
    ids: Ids | None = None
    keys: Keys | None = None


class GroupLookupBody(_Strict):
    """Members of the group -> their ids; every member is read at one group version."""

    tables: dict[str, GroupMemberIds]
    encoding: Literal["float", "base64"] = "float"
    dtype: Literal["float32", "float16"] = "float32"


class GroupMemberVectors(BaseModel):
    shape: list[int]
    dtype: Literal["float32", "float16"]
    vectors: Floats | str


class GroupLookupResult(BaseModel):
    group: str
    version: str
    tables: dict[str, GroupMemberVectors]


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "loading", "degraded"]
    tables: list[str]
    failed: dict[str, str] | None = None


class V2Error(BaseModel):
    """The Open Inference Protocol's error body."""

    error: str


V2_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": V2Error, "description": description}
    for status, description in {
        400: "Body not decodable",
        401: "API key missing or wrong",
        404: "Unknown model or version",
        413: "Body, ids or response over the limits",
        422: "Invalid ids or request",
        503: "Not ready, or queue full",
        504: "Deadline passed",
        500: "Backend failure",
    }.items()
}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "Body not decodable",
        401: "API key missing or wrong",
        404: "Unknown table or route",
        413: "Body, ids or response over the limits",
        415: "Unsupported Content-Type",
        422: "Invalid ids or request fields",
        503: "Queue full (Retry-After)",
        504: "Deadline passed",
        500: "Backend failure",
    }.items()
}
