"""A use case's plan runs inline only where nothing can wait: it refuses (``NotInline``)
before gathering anything for a table that queues or an answer rendered in slices, and
otherwise answers as the awaited run does."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from service.results import Timing
from service.usecases.gather import SLICE_NUMBERS, RowText
from service.usecases.plan import FinalRows, NotInline, Ready

ROWS = np.arange(40, dtype=np.float32).reshape(10, 4)


class Batcher:
    """Counts gathers; ``inline`` as a table's batcher says it."""

    def __init__(self, inline: bool) -> None:
        self.inline = inline
        self.gathered = 0

    def gather_inline(self, ids: np.ndarray) -> Any:
        self.gathered += 1
        return SimpleNamespace(rows=ROWS[ids], queue_seconds=0.0, backend_seconds=0.001)

    async def gather(self, ids: np.ndarray) -> Any:
        return self.gather_inline(ids)


def table(inline: bool) -> Any:
    options = SimpleNamespace(max_norm=None, norm_type=2.0)
    return SimpleNamespace(name="t", batcher=Batcher(inline), options=options, dim=4, updates=None)


def test_final_rows_inline_and_awaited_agree() -> None:
    served = table(inline=True)
    plan = FinalRows(served, np.array([3, 1]), "float32", Timing())
    assert np.array_equal(plan.run_inline(), ROWS[[3, 1]])
    assert np.array_equal(asyncio.run(plan.run()), ROWS[[3, 1]])
    doubled = plan.then(lambda rows: rows * 2)
    assert np.array_equal(doubled.run_inline(), ROWS[[3, 1]] * 2)
    assert Ready(7).then(str).run_inline() == "7"


def test_a_table_that_queues_is_refused_inline_before_any_gather() -> None:
    served = table(inline=False)
    with pytest.raises(NotInline):
        FinalRows(served, np.array([1]), "float32", Timing()).then(len).run_inline()
    assert served.batcher.gathered == 0


def test_an_answer_rendered_in_slices_is_refused_inline_before_any_gather() -> None:
    served = table(inline=True)
    rows = SLICE_NUMBERS // 4 + 8  # more numbers than one slice holds, 4 per row
    ids = np.zeros(rows, np.int64)
    with pytest.raises(NotInline):
        RowText(served, ids, (rows, 4), Timing()).run_inline()
    assert served.batcher.gathered == 0
