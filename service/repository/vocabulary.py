"""String-key vocabularies: ``<name>.vocab`` beside a table, one key per line, line number = row.

Out-of-vocabulary keys follow the table's ``oov`` option: ``error`` (422 unknown_key),
``hash`` (into ``num_oov_indices`` reserved rows by FarmHash Fingerprint64 of the UTF-8 key,
modulo their count: the hash Keras ``StringLookup`` / TF ``to_hash_bucket_fast`` use), or
``zero`` (a zero vector, masked in sequences).

Reserved OOV rows are the vocabulary lines equal to ``oov_token`` when there are any (the
layout ``StringLookup.get_vocabulary()`` writes: ``[mask] [UNK]... keys``), else the last
``num_oov_indices`` rows of the table. The line equal to ``mask_token`` is the padding row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import farmhash
import numpy as np

from service.errors import TableLoadError, UnknownKey

ZERO_ROW = -1  # sentinel id for oov = "zero"


@dataclass
class Vocabulary:
    """Key -> row, loaded once into a dict (a C hash map: one probe per key)."""

    rows_by_key: dict[str, int]
    oov: str
    oov_rows: np.ndarray
    mask_row: int | None
    size: int
    path: Path
    _key_by_row: dict[int, str] | None = field(default=None, repr=False)

    @classmethod
    def load(
        cls,
        path: Path,
        table_rows: int,
        oov: str,
        num_oov_indices: int,
        oov_token: str,
        mask_token: str | None,
    ) -> Vocabulary:
        try:
            lines = path.read_text(encoding="utf-8").split("\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise TableLoadError(f"{path}: cannot read the vocabulary: {exc}") from exc
        if lines and lines[-1] == "":
            lines.pop()
        lines = [line.removesuffix("\r") for line in lines]
        if len(lines) > table_rows:
            raise TableLoadError(f"{path}: {len(lines)} keys for a table of {table_rows} rows")
        rows_by_key: dict[str, int] = {}
        token_rows: list[int] = []
        mask_row = None
        for row, key in enumerate(lines):
            if key == oov_token:
                token_rows.append(row)
            elif mask_token is not None and key == mask_token:
                mask_row = row
            elif key in rows_by_key:
                raise TableLoadError(
                    f"{path}: key {key!r} appears twice (lines {rows_by_key[key] + 1} and {row + 1})"
                )
            else:
                rows_by_key[key] = row
        if token_rows:
            oov_rows = np.array(token_rows, dtype=np.int64)
        elif oov == "hash":
            if num_oov_indices < 1:
                raise TableLoadError(f"{path}: oov = 'hash' needs num_oov_indices >= 1")
            if len(lines) > table_rows - num_oov_indices:
                raise TableLoadError(
                    f"{path}: {len(lines)} keys leave no room for {num_oov_indices} OOV rows at the end of "
                    f"a table of {table_rows} rows"
                )
            oov_rows = np.arange(table_rows - num_oov_indices, table_rows, dtype=np.int64)
        else:
            oov_rows = np.zeros(0, dtype=np.int64)
        if mask_token is not None and mask_row is None:
            raise TableLoadError(f"{path}: mask_token {mask_token!r} is not in the vocabulary")
        size = len(rows_by_key)
        if mask_token is not None and mask_row is not None:  # mask_row is set only with a token
            rows_by_key[mask_token] = mask_row  # the mask token looks up its (padding) row
        return cls(rows_by_key, oov, oov_rows, mask_row, size, path)

    def ids_for(
        self, keys: list[str], position: Callable[[int], list[int]] | None = None
    ) -> np.ndarray:
        """Rows of ``keys``; unknown keys by the OOV policy (``ZERO_ROW`` for ``zero``).

        ``position(i)`` names key ``i`` in the request's nesting (its flat index without it).
        """
        found = list(map(self.rows_by_key.get, keys))
        if None not in found:
            return np.array(found, dtype=np.int64)
        missing = [i for i, row in enumerate(found) if row is None]
        if self.oov == "error":
            at = missing[0]
            raise UnknownKey(
                f"key {keys[at]!r} is not in the vocabulary",
                {"key": keys[at], "position": position(at) if position else [at]},
            )
        for i in missing:
            if self.oov == "hash" and self.oov_rows.size:
                found[i] = int(self.oov_rows[farmhash.fingerprint64(keys[i]) % self.oov_rows.size])
            else:
                found[i] = ZERO_ROW
        return np.array(found, dtype=np.int64)

    def keys_of(self, ids: np.ndarray) -> list[list[str | None]]:
        """Keys of rows (for neighbour answers); OOV rows give None."""
        if self._key_by_row is None:  # built on first use: only neighbour answers need it
            self._key_by_row = {row: key for key, row in self.rows_by_key.items()}
        by_row = self._key_by_row
        return [[by_row.get(i) for i in row] for row in ids.tolist()]

    def info(self) -> dict[str, object]:
        return {
            "size": self.size,
            "oov": self.oov,
            "num_oov_indices": int(self.oov_rows.size),
            "mask_row": self.mask_row,
        }
