"""``metrics.exposition()`` sums every process writing to the multiprocess folder, exactly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

RECORD = """
from service import metrics
for _ in range({n}):
    metrics.REQUESTS.labels("t", "lookup", "200").inc()
    metrics.REQUEST_SECONDS.labels("t", "lookup", "200").observe(0.001)
metrics.WORKERS.set(1)
"""

SCRAPE = """
import os, sys
from service import metrics
pid = int(sys.argv[1])
if pid:
    metrics.mark_worker_dead(pid)
body, content_type = metrics.exposition()
print(content_type)
print(body.decode())
"""


def run(code: str, folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=True
    )


def test_counters_and_histograms_sum_over_processes_and_dead_ones_leave_live_gauges(
    tmp_path: Path,
) -> None:
    first = subprocess.Popen(
        [sys.executable, "-c", RECORD.format(n=30) + "print(__import__('os').getpid())"],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    first_pid = int(first.communicate()[0])
    run(RECORD.format(n=12), tmp_path)
    text = run(SCRAPE, tmp_path, "0").stdout
    assert text.startswith("text/plain")
    labels = 'route="lookup",status="200",table="t"'
    assert f"embedding_requests_total{{{labels}}} 42.0" in text
    assert f"embedding_request_seconds_count{{{labels}}} 42.0" in text
    assert "embedding_workers 2.0" in text
    after = run(SCRAPE, tmp_path, str(first_pid)).stdout
    assert f"embedding_requests_total{{{labels}}} 42.0" in after  # counts stay
    assert "embedding_workers 1.0" in after  # the exited process no longer counts as live
