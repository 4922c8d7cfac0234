"""A real headless locust run of a few seconds against a real server: requests made, zero failures."""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# Never import locust here: it monkey-patches the process with gevent (and breaks xdist).
if importlib.util.find_spec("locust") is None:
    pytest.skip("load extra (locust) not installed", allow_module_level=True)

from tests.support.server_process import ServerProcess
from tests.support.tables import random_table, write_npy

LOCUSTFILE = Path(__file__).resolve().parents[2] / "loadtest" / "locustfile.py"


def test_headless_locust_run_has_no_failures(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    table = random_table(5000, 16, seed=11)
    table_file = write_npy(folder, "items", table, "mask_zero = true\n")
    prefix = tmp_path / "run"
    with ServerProcess(folder) as server:
        server.wait_ready()
        env = {
            **os.environ,
            "EMBED_LOCUST_TABLE_FILE": str(table_file),
            "EMBED_LOCUST_VERIFY": "1.0",  # every response value-checked
            "EMBED_LOCUST_WEIGHTS": "json=1,binary=1,base64=1,sequences=1",
        }
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "locust",
                "-f",
                str(LOCUSTFILE),
                "--headless",
                "-u",
                "4",
                "-r",
                "4",
                "-t",
                "4s",
                "--host",
                server.url,
                "--csv",
                str(prefix),
                "--only-summary",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    with open(f"{prefix}_stats.csv", newline="") as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    total = rows["Aggregated"]
    assert int(total["Request Count"]) > 0 and int(total["Failure Count"]) == 0
    for name in ("lookup json", "lookup binary", "lookup base64", "sequences"):
        assert int(rows[name]["Request Count"]) > 0, name
    assert np.isfinite(float(total["Average Response Time"]))
