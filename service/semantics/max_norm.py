"""PyTorch ``nn.Embedding(max_norm=..., norm_type=...)`` renormalisation, without touching the table.

torch rescales the looked-up rows of its weight in place
(``embedding_renorm_``: ``scale = max_norm / (norm + 1e-7)`` when
``norm > max_norm``); the service applies the same arithmetic to the
returned copy, so the first lookup of a row answers what torch answers.
"""

from __future__ import annotations

import math

import numpy as np

TORCH_EPS = 1e-7


def row_norms(rows: np.ndarray, norm_type: float) -> np.ndarray:
    """p-norm of each row as torch's CPU ``Tensor.norm`` gives it: accumulated in double
    (torch's ``acc_type`` of float), rounded to float32."""
    wide = rows.astype(np.float64)
    if norm_type == 2.0:
        norms = np.sqrt(np.einsum("ij,ij->i", wide, wide))
    elif math.isinf(norm_type):
        norms = np.abs(wide).max(axis=1)
    elif norm_type == 1.0:
        norms = np.abs(wide).sum(axis=1)
    else:
        norms = np.power(np.power(np.abs(wide), norm_type).sum(axis=1), 1.0 / norm_type)
    return norms.astype(np.float32)


def renormalise(rows: np.ndarray, max_norm: float, norm_type: float) -> np.ndarray:
    """Rows whose norm exceeds ``max_norm`` scaled down to it; ``rows`` (float32) is updated."""
    if rows.size == 0:
        return rows
    norms = row_norms(rows, norm_type).astype(np.float64)
    over = norms > max_norm
    if over.any():
        # torch: scale is a double, then the float row is multiplied by it as float.
        scale = (max_norm / (norms[over] + TORCH_EPS)).astype(np.float32)
        rows[over] *= scale[:, None]
    return rows
