"""Per-row arrays with two ways in: a Python array and a numpy view of the same memory.

Per-id loops index the Python array (~20 ns a read, no numpy call's fixed cost); vector code
indexes the numpy view. Writes through either are seen by both.
"""

from __future__ import annotations

import array

import numpy as np


def shared_array(typecode: str, size: int, fill: int) -> tuple[array.array[int], np.ndarray]:
    """``size`` values ``fill`` as a Python array and a numpy view of the same memory."""
    values = array.array(typecode, [fill]) * size
    return values, np.frombuffer(values, dtype=np.dtype(typecode))
