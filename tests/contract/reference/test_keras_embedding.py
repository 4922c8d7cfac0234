"""Masks equal Keras 3 ``Embedding(mask_zero=True).compute_mask``; layout equals ``pad_sequences``."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
pytest.importorskip("torch", reason="reference extra (torch) not installed")
keras = pytest.importorskip("keras", reason="reference extra (keras) not installed")

pytestmark = pytest.mark.reference

SEQUENCES = [[5, 9, 2, 8], [7], [], [0, 4, 0], [3, 3, 3, 3, 3, 3]]


def keras_layer(table: np.ndarray):
    layer = keras.layers.Embedding(table.shape[0], table.shape[1], mask_zero=True)
    layer.build((None, None))
    layer.set_weights([table])
    return layer


@pytest.mark.parametrize("padding", ["post", "pre"])
@pytest.mark.parametrize("truncating", ["post", "pre"])
@pytest.mark.parametrize("max_length", [None, 3])
def test_mask_and_layout_equal_keras(client, tables, padding, truncating, max_length) -> None:
    table = tables["keras"]
    padded = keras.utils.pad_sequences(
        SEQUENCES, maxlen=max_length, padding=padding, truncating=truncating, value=0
    )
    layer = keras_layer(table)
    expected_mask = np.asarray(keras.ops.convert_to_numpy(layer.compute_mask(padded)))
    expected_vectors = np.asarray(keras.ops.convert_to_numpy(layer(padded)))
    body = {
        "sequences": SEQUENCES,
        "max_length": max_length,
        "padding": padding,
        "truncating": truncating,
    }
    data = client.post("/v1/tables/keras/sequences", json=body).json()
    mask = np.array(data["mask"], dtype=bool)
    np.testing.assert_array_equal(mask, expected_mask)
    got = np.array(data["vectors"], dtype=np.float32)
    np.testing.assert_array_equal(got[mask], expected_vectors[mask])
    assert not got[~mask].any()
    kept = [min(len(s), padded.shape[1]) for s in SEQUENCES]
    assert data["lengths"] == kept


def test_lookup_equals_keras_layer_call(client, tables) -> None:
    table = tables["keras"]
    ids = np.random.default_rng(5).integers(0, len(table), size=(4, 6))
    expected = np.asarray(keras.ops.convert_to_numpy(keras_layer(table)(ids)))
    got = np.array(
        client.post("/v1/tables/keras/lookup", json={"ids": ids.tolist()}).json()["vectors"]
    )
    np.testing.assert_array_equal(got.astype(np.float32), expected)
