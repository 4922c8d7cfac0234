"""Canary: prometheus-client's private histogram fields the service writes are still there.

``service.metrics.PROMETHEUS_RELIED_ON`` lists them; each case below checks one on a
histogram child of the installed prometheus-client and fails naming it, and one more
checks their shape (``BufferedHistogram`` writes into them). When one fails after a bump
of the prometheus-client pin, follow docs/upgrading.md.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Histogram

from service import metrics
from service.metrics import PROMETHEUS_RELIED_ON
from tests.unit.dependencies.relied_on import (
    UPGRADING,
    call_refused,
    resolve,
    uses_elsewhere,
    where,
)

BOUNDS = (0.1, 1.0)


def _child() -> Any:
    histogram = Histogram(
        "canary_seconds", "c", ["t"], buckets=BOUNDS, registry=CollectorRegistry()
    )
    return histogram.labels("a")


@pytest.mark.parametrize(
    ("owner", "name", "arguments"),
    PROMETHEUS_RELIED_ON,
    ids=[f"{o}.{n}" for o, n, _ in PROMETHEUS_RELIED_ON],
)
def test_prometheus_client_still_has(owner: str, name: str, arguments: str | None) -> None:
    named = where("prometheus-client", owner, name)
    child = _child()
    assert isinstance(child, resolve(owner)), f"{named}: a label child is a {type(child)}"
    assert hasattr(child, name), f"{named} is gone from a histogram child; see {UPGRADING}"
    if arguments is not None:
        refused = call_refused(getattr(child, name), arguments)
        assert refused is None, f"{named} no longer takes ({arguments}): {refused}; see {UPGRADING}"


def test_the_fields_keep_their_shape() -> None:
    """Bounds ascending with +Inf last, one bucket per bound, each value with ``inc``."""
    child = _child()
    owner = "prometheus_client.Histogram"
    assert list(child._upper_bounds) == [*BOUNDS, math.inf], where(
        "prometheus-client", owner, "_upper_bounds"
    )
    named = where("prometheus-client", owner, "_buckets")
    assert len(child._buckets) == len(child._upper_bounds), f"{named}: not one per bound"
    for value, field in [(child._sum, "_sum"), *((b, "_buckets[]") for b in child._buckets)]:
        named = where("prometheus-client", owner, f"{field}.inc")
        assert call_refused(getattr(value, "inc", None), "amount") is None, f"{named} changed"


def test_no_other_module_reaches_into_prometheus_client() -> None:
    """Containment: the private fields are used in service/metrics.py and nowhere else."""
    names = {name for _, name, _ in PROMETHEUS_RELIED_ON}
    assert uses_elsewhere(names, Path(metrics.__file__).resolve()) == []
