"""What the /v1 table routes run: the table resolver, body decoders and use-case plans
(``service.http.route_table`` declares which route takes which)."""

from __future__ import annotations

from collections.abc import Mapping

from service.decoding.bags_request import BagsRequest, decode_bags
from service.decoding.body import wants_binary
from service.decoding.neighbors_request import NeighborsRequest, decode_neighbors
from service.decoding.openai_request import EmbeddingsRequest, decode_embeddings
from service.decoding.requests import (
    LookupRequest,
    SequencesRequest,
    decode_lookup,
    decode_sequences,
)
from service.http.call import Call
from service.metrics import UNKNOWN_TABLE
from service.results import Embeddings, Neighbors, Vectors
from service.tables.registry import TableRegistry
from service.usecases import bags, embeddings, lookup, neighbors, sequences
from service.usecases.plan import Plan


def resolve_table(call: Call) -> None:
    """The table named by the path at the query's ``version=`` (the default without one):
    the one place every /v1 table route finds its table (``TableNotFound``,
    ``VersionNotFound``)."""
    call.table_label = UNKNOWN_TABLE  # until the registry has found the table
    call.use_table(call.services.registry.get(call.params["table"], call.version()))


def resolve_version(call: Call) -> None:
    """Check the query's ``version=`` of the path's table, if it is served (the admin reload
    resolves the table itself, after loading it again)."""
    version = call.version()
    registry = call.services.registry
    if version is not None and registry.has(call.params["table"]):
        registry.get(call.params["table"], version)


def table_gathers_inline(params: Mapping[str, str], registry: TableRegistry) -> bool:
    """The path's table gathers in the caller's stack (the direct lane may answer)."""
    return registry.gathers_inline(params["table"])


def _output(call: Call, encoding: str) -> str:
    """The answer's format: binary when ``Accept`` prefers it, else the body's ``encoding``."""
    return "binary" if wants_binary(call.headers.get("accept")) else encoding


# ------------------------------------------------------------------------------ decoders
def lookup_body(call: Call) -> LookupRequest:
    """The lookup body: ids (any rank) or keys, JSON or raw int64."""
    return decode_lookup(call.body, call.media_type, call.headers, call.services.settings.max_ids)


def sequences_body(call: Call) -> SequencesRequest:
    """The sequences body: ragged id sequences and their layout, JSON or raw."""
    limit = call.services.settings.max_ids
    return decode_sequences(call.body, call.media_type, call.headers, limit)


def bags_body(call: Call) -> BagsRequest:
    """The bags body: bags of ids, pooling mode, weights."""
    return decode_bags(call.body, call.services.settings.max_ids)


def neighbors_body(call: Call) -> NeighborsRequest:
    """The neighbors body: query ids, keys or vectors, ``k`` and the metric."""
    return decode_neighbors(call.body)


def embeddings_body(call: Call) -> EmbeddingsRequest:
    """The OpenAI embeddings body; its model (``table`` or ``table@version``, when served)
    is resolved here: it labels the metrics and names the version that answers."""
    request = decode_embeddings(call.body, call.services.settings.max_ids)
    registry = call.services.registry
    name, _, version = request.model.partition("@")
    call.table_label = name if registry.has(name) else UNKNOWN_TABLE
    if registry.has(name):
        call.use_table(registry.get(name, version or None))
    return request


# ------------------------------------------------------------------------------- plans
def plan_lookup(call: Call, request: LookupRequest) -> Plan[Vectors]:
    """The lookup's plan, in the format ``Accept`` or the body asks for."""
    limit = call.services.settings.max_output_bytes
    return lookup.lookup(call.served_table(), request, _output(call, request.encoding), limit)


def plan_sequences(call: Call, request: SequencesRequest) -> Plan[Vectors]:
    """The sequences' plan, in the format ``Accept`` or the body asks for."""
    limit = call.services.settings.max_output_bytes
    output = _output(call, request.encoding)
    return sequences.sequences(call.served_table(), request, output, limit)


def plan_bags(call: Call, request: BagsRequest) -> Plan[Vectors]:
    """The bags' plan, in the format ``Accept`` or the body asks for."""
    limit = call.services.settings.max_output_bytes
    return bags.bags(call.served_table(), request, _output(call, request.encoding), limit)


# ---------------------------------------------------------------------------- use cases
async def find_neighbors(call: Call, request: NeighborsRequest) -> Neighbors:
    """The nearest rows of each query (a search: always from a task)."""
    return await neighbors.neighbors(call.served_table(), request)


async def embed(call: Call, request: EmbeddingsRequest) -> Embeddings:
    """One mean-pooled vector per input, from the table (and version) the body named."""
    return await embeddings.embeddings(call.services.registry, request, call.table)
