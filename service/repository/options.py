"""Per-table options, read from ``<name>.toml`` beside the table or ``<name>/table.toml``."""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from service.errors import TableLoadError

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


class TableOptions(BaseModel):
    """Options of one table; unknown keys are an error (they catch typos)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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


def read_table_options(path: Path | None) -> TableOptions:
    """Read and validate an options file; ``None`` (no file) gives the defaults."""
    if path is None:
        return TableOptions()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise TableLoadError(f"{path}: cannot read options: {exc}") from exc
    try:
        return TableOptions.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'options'}: {err['msg']}"
            for err in exc.errors()
        )
        raise TableLoadError(f"{path}: bad options: {problems}") from exc
