"""PyTorch ``nn.Embedding(max_norm=..., norm_type=...)`` renormalisation, without touching the table.

torch rescales the looked-up rows of its weight in place (CPU ``embedding_renorm_``:
``norm = row.norm(norm_type)``; when ``norm > max_norm``, ``scale = max_norm / (norm + 1e-7)``
in double, then ``row *= scale`` in float32). The service applies the same arithmetic to the
returned copy, so the first lookup of a row answers what torch answers.

The norm is computed in float32 in the order torch's CPU reduction kernel uses, so the result
is bit-equal to torch (tested with ``array_equal``) for ``norm_type`` 1, 2 and inf. Other
``norm_type`` values call ``powf`` per element in torch; here the power is correctly rounded,
and glibc's ``powf`` is not always, so an occasional row differs by one float32 ulp.
"""

from __future__ import annotations

import math

import numpy as np

TORCH_EPS = 1e-7
# torch's Vectorized<float> width for the squared-sum kernel (AVX2, AVX-512 and NEON builds).
_LANES = 8
# The compiler vectorises the kernel's tail loop four elements at a time.
_TAIL_LANES = 4


def _fma32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``a * b + c`` rounded once to float32, as a fused multiply-add gives it.

    The product of two float32 values is exact in float64; the float64 sum is made
    round-to-odd (its exact error from TwoSum decides the last bit), so the final rounding
    to float32 is correct rather than double-rounded.
    """
    product = a.astype(np.float64) * b.astype(np.float64)
    addend = c.astype(np.float64)
    total = product + addend
    back = total - product
    error = (product - (total - back)) + (addend - back)
    bits = total.view(np.int64)
    inexact_even = (error != 0) & ((bits & 1) == 0)
    if inexact_even.any():
        toward = np.where(error > 0, np.inf, -np.inf)
        total = np.where(inexact_even, np.nextafter(total, toward), total)
    return total.astype(np.float32)


def _two_norms(rows: np.ndarray) -> np.ndarray:
    # torch: 8 float32 lanes accumulate x*x over whole chunks, the lanes are summed in order,
    # then the tail: 4 squares added one by one, the rest by a fused multiply-add.
    count, dim = rows.shape
    whole = dim - dim % _LANES
    lanes = np.zeros((count, _LANES), np.float32)
    for start in range(0, whole, _LANES):
        chunk = rows[:, start : start + _LANES]
        lanes += chunk * chunk
    total = lanes[:, 0].copy()
    for lane in range(1, _LANES):
        total += lanes[:, lane]
    scalar_start = whole
    if dim - whole >= _TAIL_LANES:
        tail = rows[:, whole : whole + _TAIL_LANES]
        squares = tail * tail
        for lane in range(_TAIL_LANES):
            total += squares[:, lane]
        scalar_start += _TAIL_LANES
    for column in range(scalar_start, dim):
        total = _fma32(rows[:, column], rows[:, column], total)
    return np.sqrt(total)


def _powf(values: np.ndarray, exponent: float) -> np.ndarray:
    # Correctly rounded float32 power (numpy's own float32 power may use a faster, less exact
    # SIMD routine).
    return np.power(values.astype(np.float64), exponent).astype(np.float32)


def row_norms(rows: np.ndarray, norm_type: float) -> np.ndarray:
    """float32 p-norm of each row of a float32 ``(n, dim)`` array, as torch's CPU
    ``Tensor.norm`` computes it: float32 accumulation, element by element in order (p=2:
    in torch's vector lanes)."""
    rows = np.asarray(rows, np.float32)
    if math.isinf(norm_type):
        return np.abs(rows).max(axis=1) if rows.shape[1] else np.zeros(len(rows), np.float32)
    if norm_type == 2.0:
        return _two_norms(rows)
    magnitudes = np.abs(rows)
    total = np.zeros(len(rows), np.float32)
    if norm_type == 1.0:
        for column in range(rows.shape[1]):
            total += magnitudes[:, column]
        return total
    exponent = float(np.float32(norm_type))
    for column in range(rows.shape[1]):
        total += _powf(magnitudes[:, column], exponent)
    return _powf(total, float(np.float32(1) / np.float32(norm_type)))


def renormalise(rows: np.ndarray, max_norm: float, norm_type: float) -> np.ndarray:
    """Rows of a float32 ``(n, dim)`` array whose norm exceeds ``max_norm``, scaled down to it in
    place."""
    if rows.size == 0:
        return rows
    norms = row_norms(rows, norm_type).astype(np.float64)
    over = norms > max_norm
    if over.any():
        # torch: the scale is a double, then the float row is multiplied by it as float.
        scale = (max_norm / (norms[over] + TORCH_EPS)).astype(np.float32)
        rows[over] *= scale[:, None]
    return rows
