"""String keys: a table's vocabulary gives the rows Keras StringLookup gives (TensorFlow in a subprocess)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support.server_process import ServerProcess
from tests.support.tables import random_table, write_npy

WORDS = ["the", "cat", "sat", "on", "mat", "über", "a b"]
QUERIES = ["cat", "dog", "the", "zebra", "über", "quokka", "a b", "mat", "axolotl"]

KERAS_SCRIPT = """
import json, sys, numpy as np, keras
spec = json.loads(sys.argv[1])
layer = keras.layers.StringLookup(vocabulary=spec["words"], num_oov_indices=spec["num_oov"], mask_token=spec["mask"])
print(json.dumps({"vocabulary": [str(w) for w in layer.get_vocabulary()],
                  "indices": keras.ops.convert_to_numpy(layer(np.array(spec["queries"]))).tolist()}))
"""


def keras_string_lookup(num_oov: int, mask: str | None) -> dict:
    if importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("keras") is None:
        pytest.skip(
            "reference extra (keras + tensorflow-cpu) not installed: StringLookup needs TensorFlow"
        )
    spec = json.dumps({"words": WORDS, "num_oov": num_oov, "mask": mask, "queries": QUERIES})
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", KERAS_SCRIPT, spec],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.reference
@pytest.mark.parametrize(("num_oov", "mask"), [(1, None), (3, None), (2, "<pad>")])
def test_rows_equal_keras_string_lookup(tmp_path: Path, num_oov: int, mask: str | None) -> None:
    keras = keras_string_lookup(num_oov, mask)
    folder = tmp_path / "models"
    table = random_table(len(keras["vocabulary"]), 8, seed=num_oov)
    options = f'oov = "hash"\nnum_oov_indices = {num_oov}\n' + (
        f'mask_token = "{mask}"\n' if mask else ""
    )
    write_npy(folder, "words", table, options)
    # The export path users take: StringLookup.get_vocabulary(), one key per line (line = row).
    (folder / "words.vocab").write_text("\n".join(keras["vocabulary"]) + "\n", encoding="utf-8")
    with ServerProcess(folder) as server:
        server.wait_ready()
        info = httpx.get(f"{server.url}/v1/tables/words").json()["vocabulary"]
        assert (
            info["size"] == len(WORDS)
            and info["num_oov_indices"] == num_oov
            and info["oov"] == "hash"
        )
        data = httpx.post(f"{server.url}/v1/tables/words/lookup", json={"keys": QUERIES}).json()
        np.testing.assert_array_equal(
            np.array(data["vectors"], np.float32), table[keras["indices"]]
        )
        nested = httpx.post(
            f"{server.url}/v1/tables/words/lookup", json={"keys": [QUERIES[:3], QUERIES[3:6]]}
        ).json()
        assert nested["shape"] == [2, 3, 8]
        if mask:
            seq = httpx.post(
                f"{server.url}/v1/tables/words/sequences", json={"keys": [["cat", mask, "dog"]]}
            ).json()
            assert seq["mask"] == [[True, False, True]]


def test_error_zero_and_end_rows(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    rows = len(WORDS) + 4
    table = random_table(rows, 6, seed=5)
    (folder / "strict").mkdir(parents=True)
    np.save(folder / "strict" / "table.npy", table)
    (folder / "strict" / "table.vocab").write_text("\n".join(WORDS) + "\n")
    write_npy(folder, "zeros", table, 'oov = "zero"\n')
    (folder / "zeros.vocab").write_text("\n".join(WORDS) + "\n")
    write_npy(folder, "hashed", table, 'oov = "hash"\nnum_oov_indices = 4\n')
    (folder / "hashed.vocab").write_text("\n".join(WORDS) + "\n")
    with ServerProcess(folder) as server:
        server.wait_ready()
        url = server.url
        error = httpx.post(
            f"{url}/v1/tables/strict/lookup", json={"keys": [["cat", "dog"]]}
        ).json()["error"]
        assert (
            error["code"] == "unknown_key"
            and error["detail"]["key"] == "dog"
            and "dog" in error["message"]
        )
        ok = httpx.post(f"{url}/v1/tables/strict/lookup", json={"keys": "über"}).json()
        np.testing.assert_array_equal(np.array(ok["vectors"], np.float32), table[5])
        zero = httpx.post(f"{url}/v1/tables/zeros/lookup", json={"keys": ["cat", "dog"]}).json()
        vectors = np.array(zero["vectors"], np.float32)
        np.testing.assert_array_equal(vectors[0], table[1])
        assert not vectors[1].any()
        seq = httpx.post(f"{url}/v1/tables/zeros/sequences", json={"keys": [["dog", "cat"]]}).json()
        assert seq["mask"] == [[False, True]]
        bag = httpx.post(
            f"{url}/v1/tables/zeros/bags", json={"keys": [["dog", "cat"]], "mode": "mean"}
        ).json()
        np.testing.assert_allclose(np.array(bag["vectors"], np.float32)[0], table[1], rtol=1e-6)
        # API.md layout: OOV keys hash into the last num_oov_indices rows, stably.
        import farmhash

        hashed = httpx.post(
            f"{url}/v1/tables/hashed/lookup", json={"keys": ["zebra", "quokka"]}
        ).json()
        expected = [rows - 4 + farmhash.fingerprint64(k) % 4 for k in ("zebra", "quokka")]
        np.testing.assert_array_equal(np.array(hashed["vectors"], np.float32), table[expected])
        near = httpx.post(
            f"{url}/v1/tables/strict/neighbors", json={"keys": ["cat"], "k": 3}
        ).json()
        assert len(near["keys"][0]) == 3 and "cat" not in near["keys"][0]
        no_vocab = httpx.post(f"{url}/v1/tables/hashed/lookup", json={"ids": [1]})
        assert no_vocab.status_code == 200
        ints = httpx.post(f"{url}/v1/tables/strict/lookup", json={"keys": [1, 2]})
        assert ints.status_code == 422
