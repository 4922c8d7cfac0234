"""Admission control: a per-worker budget of ids in flight, for every table, batched or not.

A request's ids are counted from its decoded form (``ids_in``) after decoding and before its
use case runs, and stay counted until the last byte of its response has been handed to the
transport (``asgi_front.FrontApp`` releases them, on success, error, disconnect or
cancellation alike). What would pass the budget is answered at once with
``503 overloaded`` and ``Retry-After``: memory and event-loop time per worker are then
bounded by the budget, not by the number of clients.

A request larger than the whole budget is admitted when nothing else is in flight, so a
legal request (up to ``max_ids``, or a padded sequences batch) is never refused forever;
while it runs, every other request that carries ids is refused. The rule is the batch
queue's (``max_queue_ids``): refuse only what would pass the limit *on top of* others.

One event loop per worker: no locks.
"""

from __future__ import annotations

import asyncio
from typing import Any

from service import metrics
from service.decoding.bags_request import BagsRequest
from service.decoding.group_request import GroupLookupRequest
from service.decoding.neighbors_request import NeighborsRequest
from service.decoding.openai_request import EmbeddingsRequest
from service.decoding.requests import LookupRequest, SequencesRequest
from service.decoding.v2_request import V2InferRequest
from service.errors import Overloaded
from service.semantics.sequence_layout import output_length

PUBLISH_SECONDS = 0.05  # how stale the ids-in-flight gauge may be
SCOPE_KEY = "embedding.admission"
"""Where ``FrontApp`` puts a request's ``Admission`` in the ASGI scope (FastAPI passes the
scope through to the dispatcher unchanged)."""


def _flat_count(request: Any) -> int:
    keys = getattr(request, "keys", None)
    return len(keys) if keys is not None else int(request.flat_ids.size)


def _queries(request: NeighborsRequest) -> int:
    if request.ids is not None:
        return int(request.ids.size)
    if request.keys is not None:
        return len(request.keys)
    return 0 if request.vectors is None else int(request.vectors.shape[0])


def ids_in(request: object) -> int:
    """Ids one decoded request puts in flight: the rows it gathers or answers, whichever is more.

    lookup: its ids (or keys); sequences: its ids or its padded ``B x L`` positions; bags:
    its ids or its bags (an empty bag still answers a row); OpenAI embeddings: its token
    ids; V2 infer: its ids; neighbors: queries x k (the ids it answers). Anything else
    (probes, metadata, no body): 0, never refused.
    """
    if isinstance(request, GroupLookupRequest):
        return request.ids_count()
    if isinstance(request, LookupRequest):
        if request.keys is not None or request.ids is None:
            return len(request.keys or ())
        return int(request.ids.size)
    if isinstance(request, SequencesRequest):
        padded = int(request.lengths.size) * output_length(request.lengths, request.max_length)
        return max(_flat_count(request), padded)
    if isinstance(request, BagsRequest):
        return max(_flat_count(request), int(request.lengths.size))
    if isinstance(request, EmbeddingsRequest):
        return int(request.flat_ids.size)
    if isinstance(request, V2InferRequest):
        return int(request.ids.size)
    if isinstance(request, NeighborsRequest):
        return _queries(request) * request.k
    return 0


class IdsInFlight:
    """This worker's budget: ids admitted and not yet sent. ``limit`` 0: no limit (counted
    all the same, for the gauge)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self._publish_pending = False

    def try_acquire(self, n: int) -> bool:
        """Count ``n`` more ids unless that would pass the limit with others in flight."""
        if self.limit and self.in_flight and self.in_flight + n > self.limit:
            return False
        self.in_flight += n
        self._changed()
        return True

    def release(self, n: int) -> None:
        """Give back ``n`` ids acquired earlier."""
        self.in_flight -= n
        self._changed()

    def _changed(self) -> None:
        # A multiprocess gauge write costs ~6 us (lock, mmap): twice per request would be a
        # tenth of a small request. The gauge is written at most every PUBLISH_SECONDS.
        if self._publish_pending:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a direct call): write at once
            self.publish()
            return
        self._publish_pending = True
        loop.call_later(PUBLISH_SECONDS, self.publish)

    def publish(self) -> None:
        """Write the current count to the ``embedding_ids_in_flight`` gauge."""
        self._publish_pending = False
        metrics.IDS_IN_FLIGHT.set(self.in_flight)


class Admission:
    """One request's hold on the budget; ``release`` gives back whatever it holds, once."""

    __slots__ = ("budget", "held")

    def __init__(self, budget: IdsInFlight) -> None:
        self.budget = budget
        self.held = 0

    def admit(self, n: int, table: str) -> None:
        """Hold ``n`` ids, or raise ``Overloaded`` (503, ``Retry-After``) at once."""
        if n <= 0:
            return
        budget = self.budget
        if not budget.try_acquire(n):
            metrics.ADMISSION_REFUSED.labels(table).inc()
            raise Overloaded(
                f"this worker has {budget.in_flight} ids in flight; {n} more would pass its "
                f"budget of {budget.limit}: retry shortly",
                {"ids": n, "ids_in_flight": budget.in_flight, "max_ids_in_flight": budget.limit},
            )
        self.held += n

    def release(self) -> None:
        """Give back every id held (a no-op the second time)."""
        if self.held:
            self.budget.release(self.held)
            self.held = 0
