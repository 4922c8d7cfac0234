"""Python client of the embedding service: ``EmbeddingClient`` and ``AsyncEmbeddingClient``.

    from service.client import EmbeddingClient
    with EmbeddingClient("http://127.0.0.1:8000", api_key=None) as client:
        vectors = client.lookup("demo", [[1, 2], [3, 4]])          # (2, 2, dim) float32
        vectors, mask, lengths = client.sequences("demo", [[5, 9, 2], [7]])
        canary = client.lookup("demo", [1, 2], version="canary")   # a label or a number
        looked = client.lookup_versioned("demo", [1, 2])           # .version, .vectors
        both = client.group_lookup("two_tower", {"user": [1], "item": [4, 5]})
        both.version, both.vectors["user"]                          # one version for all

Binary transport by default (raw little-endian ids in, raw float32 out: no JSON on the hot
path), JSON with ``binary=False``; group lookups are JSON with base64 vectors. Connection
pooling and timeouts come from httpx; 503 answers are retried with exponential backoff,
honouring ``Retry-After``. Errors are raised as the service's own exception classes
(``service.errors``, e.g. ``VersionNotFound``), carrying the server's ``code``, ``message``
and ``detail``.
"""

from service.client.aio import AsyncEmbeddingClient
from service.client.results import GroupResult, Looked
from service.client.sync import EmbeddingClient
from service.client.transport import ERROR_CLASSES, error_from_response

__all__ = [
    "ERROR_CLASSES",
    "AsyncEmbeddingClient",
    "EmbeddingClient",
    "GroupResult",
    "Looked",
    "error_from_response",
]
