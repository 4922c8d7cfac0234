"""In-process cost of JSON vectors: the row-text cache (plan + gather + render) against bulk orjson.

    python3 loadtest/cache_microbench.py [--rows 1000000] [--dim 128] [--sizes 1,32,1024]

For each id distribution and request size, every variant answers the same id stream after
the same warm-up and is timed on CPU time (``time.process_time``), so a busy machine shifts
all variants alike. Prints a markdown table: microseconds per request, ratio to bulk orjson
(below 1.00x is faster), and the cache's hit rate over the measured requests.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadtest.bench import make_table  # noqa: E402
from loadtest.id_distributions import DISTRIBUTIONS, IdSampler  # noqa: E402
from service.caches.row_text_cache import RowTextCache  # noqa: E402

OPT = orjson.OPT_SERIALIZE_NUMPY
BUDGET = 256 * 1024 * 1024  # the default row_cache_bytes
Encoder = Callable[[np.ndarray], bytes]


def bulk(table: np.ndarray) -> Encoder:
    """What tuned FastAPI does: np.take, one orjson call."""
    return lambda ids: orjson.dumps(np.take(table, ids, axis=0), option=OPT)


def cached(table: np.ndarray, cache: RowTextCache) -> Encoder:
    """The service's path: plan, gather the distinct misses, render."""

    def encode(ids: np.ndarray) -> bytes:
        plan = cache.plan(ids)
        # Nothing to gather when every row hit (the service skips the batcher too).
        fetched = np.take(table, plan.fetch_ids, axis=0) if plan.fetch_ids.size else table[:0]
        return cache.render(plan, fetched, (*ids.shape, table.shape[1]))

    return encode


def nest_texts(texts: list[bytes], shape: tuple[int, ...]) -> bytes:
    """JSON of nested lists of ``shape`` whose innermost items are ``texts`` (bracketed row
    texts): how the original code joined its cached rows, a join per level."""
    level = texts
    for size in reversed(shape[1:]):
        level = [b"[" + b",".join(level[i : i + size]) + b"]" for i in range(0, len(level), size)]
    return b"[" + b",".join(level) + b"]"


def old_cache(table: np.ndarray, baseline: Path) -> Encoder | None:
    """The original code's cache path (per-row texts, first-sight admission), if checked out:
    its own module's ``lookup`` / ``store`` / ``rows_text``, which this code no longer has."""
    module_path = baseline / "service/encoding/row_text_cache.py"
    if not module_path.exists():
        return None
    spec = importlib.util.spec_from_file_location("old_row_text_cache", module_path)
    assert spec is not None and spec.loader is not None
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)
    cache = old.RowTextCache(BUDGET)

    def encode(ids: np.ndarray) -> bytes:
        keys = ids.tolist()
        texts, missing = cache.lookup(keys)
        if missing:
            miss_ids = np.unique(ids[missing])
            miss_keys = miss_ids.tolist()
            miss_texts = old.rows_text(np.take(table, miss_ids, axis=0))
            cache.store(miss_keys, miss_texts)
            found = dict(zip(miss_keys, miss_texts, strict=True))
            for i in missing:
                texts[i] = found[keys[i]]
        return nest_texts(texts, ids.shape)

    return encode


def variants(table: np.ndarray, baseline: Path) -> dict[str, tuple[Encoder, RowTextCache | None]]:
    """Fresh encoders (empty caches) for one distribution x size cell."""
    default = RowTextCache(BUDGET)
    no_bypass = RowTextCache(BUDGET, min_hit_rate=0.0)
    first_sight = RowTextCache(BUDGET, min_hit_rate=0.0, doorkeeper=False)
    chosen: dict[str, tuple[Encoder, RowTextCache | None]] = {
        "bulk orjson": (bulk(table), None),
        "cache (default)": (cached(table, default), default),
        "cache, never bypassed": (cached(table, no_bypass), no_bypass),
        "cache, first-sight admission, never bypassed": (cached(table, first_sight), first_sight),
    }
    old = old_cache(table, baseline)
    if old is not None:
        chosen["original cache (before)"] = (old, None)
    return chosen


def measure(
    encode: Encoder, warm: list[np.ndarray], timed: list[np.ndarray], cache: RowTextCache | None
) -> tuple[float, tuple[int, int]]:
    """CPU microseconds per request over ``timed`` after answering ``warm``; the cache's
    hits and misses when the timed requests began."""
    for ids in warm:
        encode(ids)
    before = (cache.stats()["hits"], cache.stats()["misses"]) if cache else (0, 0)
    started = time.process_time()
    for ids in timed:
        encode(ids)
    return (time.process_time() - started) / len(timed) * 1e6, before


def cell(table: np.ndarray, distribution: str, size: int, args: argparse.Namespace) -> list[str]:
    """Markdown rows of one distribution x request size."""
    sampler = IdSampler(distribution, table.shape[0], seed=size)
    warm = [sampler.draw(size) for _ in range(max(1, args.warm_ids // size))]
    timed = [sampler.draw(size) for _ in range(max(16, args.timed_ids // size))]
    expected = [orjson.dumps(table[ids], option=OPT) for ids in timed[:4]]
    rows, base = [], 0.0
    for name, (encode, cache) in variants(table, args.baseline).items():
        assert [encode(ids) for ids in timed[:4]] == expected, name
        micros, hits_before = measure(encode, warm, timed, cache)
        base = base or micros
        rate = "-"
        if cache is not None:
            stats = cache.stats()
            hits, misses = stats["hits"] - hits_before[0], stats["misses"] - hits_before[1]
            rate = f"{hits / max(1, hits + misses):.0%}" + (" (bypassed)" if cache.bypass else "")
        rows.append(
            f"| {distribution} | {size} | {name} | {micros:,.1f} | {micros / base:.2f}x | {rate} |"
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--sizes", default="1,32,1024")
    parser.add_argument("--distributions", default=",".join(DISTRIBUTIONS))
    parser.add_argument("--warm-ids", type=int, default=262_144)
    parser.add_argument("--timed-ids", type=int, default=131_072)
    parser.add_argument(
        "--baseline",
        type=Path,
        default=ROOT.parent / "baseline",
        help="a checkout of the original code, for the 'original cache' rows (skipped if absent)",
    )
    args = parser.parse_args()
    table = np.asarray(np.load(make_table(args.rows, args.dim), mmap_mode="r"))
    print("| ids | per request | variant | CPU us/request | vs bulk orjson | hit rate |")
    print("|---|---|---|---|---|---|")
    for distribution in args.distributions.split(","):
        for size in map(int, args.sizes.split(",")):
            cell(table, distribution, size, args)


if __name__ == "__main__":
    main()
