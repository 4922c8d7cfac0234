"""Outputs equal ``torch.nn.Embedding`` on the same weights (CPU torch)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="reference extra (torch) not installed")

pytestmark = pytest.mark.reference


def torch_embedding(table: np.ndarray, **kwargs) -> torch.nn.Embedding:
    return torch.nn.Embedding.from_pretrained(torch.from_numpy(table.copy()), freeze=True, **kwargs)


def ids_for(rows: int, shape=(6, 5), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, rows, size=shape)


def lookup(client, name: str, ids: np.ndarray) -> np.ndarray:
    response = client.post(
        f"/v1/tables/{name}/lookup",
        json={"ids": ids.tolist()},
        headers={"Accept": "application/octet-stream"},
    )
    assert response.status_code == 200, response.text
    shape = [int(d) for d in response.headers["x-shape"].split(",")]
    return np.frombuffer(response.content, "<f4").reshape(shape)


def test_plain_and_padding_idx_rows_equal_torch(client, tables) -> None:
    for name, kwargs in (("plain", {}), ("padded", {"padding_idx": -1})):
        table = tables[name]
        ids = ids_for(len(table))
        ids[0, 0] = len(table) - 1  # the padding row itself
        expected = torch_embedding(table, **kwargs)(torch.from_numpy(ids)).numpy()
        np.testing.assert_array_equal(lookup(client, name, ids), expected)


@pytest.mark.parametrize(
    ("name", "max_norm", "norm_type"),
    [("norm2", 1.5, 2.0), ("norm1", 2.0, 1.0), ("norm3", 1.0, 3.0)],
)
def test_max_norm_equals_torch(client, tables, name, max_norm, norm_type) -> None:
    table = tables[name]
    ids = ids_for(len(table), seed=3)
    layer = torch_embedding(table, max_norm=max_norm, norm_type=norm_type)
    expected = layer(torch.from_numpy(ids)).numpy()
    got = lookup(client, name, ids)
    # The service computes the norm in torch's float32 order: bit-equal for p = 1, 2, inf;
    # other p within a few ulp (torch's powf is not correctly rounded; see test_torch_max_norm).
    if norm_type in (1.0, 2.0):
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=0)
    untouched = np.linalg.norm(table[ids].astype(np.float64), ord=norm_type, axis=-1) <= max_norm
    np.testing.assert_array_equal(got[untouched], expected[untouched])
    # The stored table is never modified (torch rescales its weight in place).
    again = lookup(client, name, ids)
    np.testing.assert_array_equal(got, again)
    assert (
        np.linalg.norm(got.reshape(-1, got.shape[-1]), ord=norm_type, axis=1)
        <= max_norm * (1 + 1e-6)
    ).all()


def test_sequences_mask_padding_idx_like_torch(client, tables) -> None:
    """Positions holding padding_idx are masked and zero; others equal torch's rows."""
    table = tables["padded"]
    pad = len(table) - 1
    sequences = [[5, pad, 7], [pad], [1, 2]]
    data = client.post("/v1/tables/padded/sequences", json={"sequences": sequences}).json()
    padded = np.full((3, 3), pad)
    for b, seq in enumerate(sequences):
        padded[b, : len(seq)] = seq
    layer = torch_embedding(table, padding_idx=pad)
    expected = layer(torch.from_numpy(padded)).numpy()
    mask = np.array(data["mask"])
    assert mask.tolist() == (padded != pad).tolist()
    got = np.array(data["vectors"], dtype=np.float32)
    np.testing.assert_array_equal(got[mask], expected[mask])
    assert not got[~mask].any()
