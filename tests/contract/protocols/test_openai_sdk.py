"""OpenAI-compatible /v1/embeddings against the real openai SDK, float and base64 encodings."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest

openai = pytest.importorskip("openai", reason="openai not installed")


@pytest.fixture(scope="module")
def sdk(server):
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="not-needed", max_retries=0) as client:
        yield client


def reference(table: np.ndarray, groups: list[list[int]]) -> np.ndarray:
    return np.stack([table[g].astype(np.float64).mean(axis=0) for g in groups]).astype(np.float32)


@pytest.mark.parametrize(
    "encoding", ["float", "base64", None], ids=["float", "base64", "sdk-default"]
)
@pytest.mark.parametrize(
    ("given", "groups"),
    [
        (7, [[7]]),
        ([5, 17], [[5, 17]]),
        ([[5], [17]], [[5], [17]]),
        ([[1, 2, 3], [4], [5, 5]], [[1, 2, 3], [4], [5, 5]]),
    ],
    ids=["int", "flat-list-is-one-input", "list-of-lists", "ragged"],
)
def test_embeddings_equal_mean_of_rows(sdk, tables, encoding, given, groups) -> None:
    kwargs = {"encoding_format": encoding} if encoding else {}
    result = sdk.embeddings.create(model="plain", input=given, **kwargs)
    if encoding == "base64":  # asked for explicitly, the SDK returns the string as sent
        got = np.stack(
            [np.frombuffer(base64.b64decode(item.embedding), "<f4") for item in result.data]
        )
    else:  # float, or the SDK's own default (it sends base64 and decodes it)
        got = np.array([item.embedding for item in result.data], dtype=np.float32)
    np.testing.assert_allclose(got, reference(tables["plain"], groups), rtol=1e-6, atol=1e-7)
    assert [item.index for item in result.data] == list(range(len(groups)))
    assert result.model == "plain" and result.usage.prompt_tokens == sum(len(g) for g in groups)


def test_dimensions_truncates_and_renormalises(sdk, tables) -> None:
    result = sdk.embeddings.create(
        model="plain", input=[[3, 4]], dimensions=4, encoding_format="float"
    )
    vector = np.array(result.data[0].embedding)
    expected = reference(tables["plain"], [[3, 4]])[0, :4]
    np.testing.assert_allclose(vector, expected / np.linalg.norm(expected), rtol=1e-5)


def test_errors(sdk, server) -> None:
    with pytest.raises(openai.NotFoundError):
        sdk.embeddings.create(model="nope", input=[1])
    with pytest.raises(openai.UnprocessableEntityError):
        sdk.embeddings.create(model="plain", input=[1, -1])
    text = httpx.post(f"{server.url}/v1/embeddings", json={"model": "plain", "input": "hello"})
    assert text.status_code == 422 and "token ids" in text.json()["error"]["message"]
    empty = httpx.post(f"{server.url}/v1/embeddings", json={"model": "plain", "input": [[1], []]})
    assert empty.status_code == 422
