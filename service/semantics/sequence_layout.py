"""Where each input id lands in a padded ``(B, L)`` batch: Keras ``pad_sequences`` rules.

``truncating`` drops from the named end when a sequence is longer than ``L``;
``padding`` fills the named end when shorter. All positions are computed with
whole-array operations, never a loop over sequences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SequenceLayout:
    """Mapping of kept input positions onto the flat ``B*L`` output grid."""

    batch: int
    length: int
    kept: np.ndarray  # indices into the flat input ids that survive truncation
    slots: np.ndarray  # their flat positions in the (B, L) output, same order
    lengths: np.ndarray  # per sequence, positions that came from the input


def output_length(lengths: np.ndarray, max_length: int | None) -> int:
    """``L``: ``max_length`` when given, else the longest sequence."""
    if max_length is not None:
        return max_length
    return int(lengths.max()) if lengths.size else 0


def sequence_layout(
    lengths: np.ndarray, max_length: int | None, padding: str, truncating: str
) -> SequenceLayout:
    """Layout of ragged sequences of ``lengths`` in a ``(B, L)`` grid."""
    batch = int(lengths.size)
    length = output_length(lengths, max_length)
    kept_counts = np.minimum(lengths, length)
    total = int(lengths.sum())
    seq_of = np.repeat(np.arange(batch, dtype=np.int64), lengths)
    starts = np.cumsum(lengths) - lengths
    t = np.arange(total, dtype=np.int64) - np.repeat(starts, lengths)
    # First input position kept in each sequence: "pre" truncation drops the head.
    first = np.zeros(batch, dtype=np.int64) if truncating == "post" else lengths - kept_counts
    first_of = np.repeat(first, lengths)
    keep = (t >= first_of) & (t < first_of + np.repeat(kept_counts, lengths))
    kept = np.flatnonzero(keep)
    column = t[kept] - first_of[kept]
    if padding == "pre":
        column += (length - kept_counts)[seq_of[kept]]
    slots = seq_of[kept] * length + column
    return SequenceLayout(batch, length, kept, slots, kept_counts)
