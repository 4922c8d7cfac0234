"""Row updates of file tables across a ``kill -9`` and through compactions, with real servers."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import numpy as np

from service.updates.base_manifest import MANIFEST
from service.updates.layout import logs_of
from tests.integration.updates.served import lookup, start, table_info, update, wait_served
from tests.support.polling import wait_until

DIM = 8


def test_kill_9_mid_updates_then_restart_keeps_every_acknowledged_update(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    rows = 20_000
    np.save(models / "t.npy", np.zeros((rows, DIM), np.float32))
    acknowledged: list[int] = []
    sent: list[int] = []
    server = start(models, workers=1)

    def write() -> None:
        for k in range(1, rows // 16):
            sent.append(k)
            try:
                response = update(
                    server.url, "t", list(range(16 * k, 16 * k + 16)), np.full((16, DIM), k)
                )
            except httpx.HTTPError:
                return  # the server is gone
            if response.status_code != 200:
                return
            acknowledged.append(k)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        wait_until(lambda: len(acknowledged) >= 40, "40 acknowledged updates")
        server.process.kill()  # kill -9, updates in flight
        server.process.wait()
        writer.join()
    finally:
        server.stop()
    with start(models, workers=1) as again, httpx.Client(base_url=again.url, timeout=30) as client:
        for k in sent:
            got = lookup(client, "t", list(range(16 * k, 16 * k + 16)))
            values = np.unique(got)
            assert values.size == 1, f"update {k} is partly applied: {values}"
            if k in acknowledged:
                assert values[0] == k, f"acknowledged update {k} was lost"
            else:
                assert values[0] in (0, k)
        assert table_info(again.url, "t")["update_sequence"] >= len(acknowledged)


def _reader(url: str, ids: list[int], stop: threading.Event, seen: list[str]) -> None:
    """Each response holds one update's value, never older than the last on the connection."""
    with httpx.Client(base_url=url, timeout=30) as client:
        last = -1.0
        while not stop.is_set():
            values = np.unique(lookup(client, "t", ids))
            if values.size != 1 or values[0] < last:
                seen.append(f"{values[:4]} after {last}")
                return
            last = float(values[0])


def test_compaction_under_load_changes_no_answer_version_or_sequence(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    rows = 512  # a base file is rewritten once 64 updated rows pile up (compaction.fold_rows)
    table = np.zeros((rows, DIM), np.float32)
    np.save(models / "t.npy", table)
    hot = list(range(16))
    updates = 150
    with start(models) as one, start(models) as two:
        versions = {table_info(url, "t")["version"] for url in (one.url, two.url)}
        stop, seen = threading.Event(), []
        readers = [
            threading.Thread(target=_reader, args=(url, hot, stop, seen))
            for url in (one.url, two.url)
            for _ in range(2)
        ]
        for thread in readers:
            thread.start()
        try:
            for k in range(1, updates + 1):
                ids = hot + [16 + (4 * k + j) % (rows - 16) for j in range(4)]
                table[ids] = k
                url = one.url if k % 2 else two.url
                assert update(url, "t", ids, np.full((len(ids), DIM), k)).status_code == 200
            log_folder = logs_of(models / "t.npy")
            wait_until(
                lambda: any((folder / MANIFEST).exists() for folder in log_folder.iterdir()),
                "a compaction into the base file",
            )
            wait_served([one.url, two.url], "t", list(range(rows)), table)
        finally:
            stop.set()
            for thread in readers:
                thread.join()
        assert seen == []
        for url in (one.url, two.url):
            info = table_info(url, "t")
            assert info["version"] in versions and info["update_sequence"] == updates
        # A restart serves the compacted base at the same version and sequence.
    with start(models, workers=1) as again:
        info = table_info(again.url, "t")
        assert info["version"] in versions and info["update_sequence"] == updates
        wait_served([again.url], "t", list(range(rows)), table)
