"""A real uvicorn server of the service whose backends are slowed or made to fail (test only).

    python -m tests.support.faulty_server --port P [--delay SECONDS] [--gate FILE] [--fail-id N]
    (settings: EMBED_* env)

Every gather sleeps ``--delay`` seconds (a busy backend), or with ``--gate`` writes
``FILE.entered`` and waits until ``FILE`` exists (a backend stalled until the test releases
it: ordering without timing), and raises when an id equals ``--fail-id`` (a backend fault),
so overload, deadlines and fault isolation can be driven through real HTTP.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import uvicorn

from service.backends.base import GatherBackend
from service.backends.placement import Placement
from service.http.app import configure_logging, create_app
from service.repository.weights import TableWeights
from service.settings import ServiceSettings
from service.tables.registry import TableRegistry
from service.tables.table_builder import default_backend_factory


class FaultyBackend:
    """Wraps a real backend: sleeps or waits for a gate file, and fails on one id."""

    def __init__(
        self, inner: GatherBackend, delay: float, fail_id: int | None, gate: Path | None = None
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.device = inner.device
        self.inline_safe = False
        self.delay = delay
        self.fail_id = fail_id
        self.gate = gate

    def gather(self, ids: np.ndarray) -> np.ndarray:
        if self.delay:
            time.sleep(self.delay)
        if self.gate is not None:
            Path(f"{self.gate}.entered").touch()
            deadline = time.monotonic() + 120  # never hang a test run for ever
            while not self.gate.exists() and time.monotonic() < deadline:
                time.sleep(0.005)
        if self.fail_id is not None and (ids == self.fail_id).any():
            raise RuntimeError(f"injected fault on id {self.fail_id}")
        return self.inner.gather(ids)

    def close(self) -> None:
        self.inner.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--gate", type=Path, help="stall every gather until this file exists")
    parser.add_argument("--fail-id", type=int)
    args = parser.parse_args()
    settings = ServiceSettings()
    configure_logging(settings.log_level)

    def factory(weights: TableWeights, placement: Placement) -> GatherBackend:
        return FaultyBackend(
            default_backend_factory(weights, placement), args.delay, args.fail_id, args.gate
        )

    app = create_app(settings, TableRegistry(settings, backend_factory=factory))
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level=settings.log_level)


if __name__ == "__main__":
    main()
