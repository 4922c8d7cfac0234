"""The suite leaves nothing in the system temp dir: servers under test make their per-start
folder (``embedding-service-*``) in the session's own $TMPDIR (tests/conftest.py), so even
one killed before it could remove that folder leaves it where pytest cleans up."""

from __future__ import annotations

import tempfile
from pathlib import Path

from tests.support.server_process import ServerProcess
from tests.support.tables import random_table, write_npy


def test_a_killed_server_leaves_its_folder_in_the_session_temp_dir(
    tmp_path: Path, session_temp_dir: Path
) -> None:
    assert Path(tempfile.gettempdir()) == session_temp_dir
    models = tmp_path / "models"
    models.mkdir()
    write_npy(models, "table", random_table(10, 4))
    before = set(session_temp_dir.glob("embedding-service-*"))
    with ServerProcess(models) as server:
        server.wait_ready()
        server.process.kill()  # SIGKILL: no exit handler removes its folder
        server.process.wait()
    assert set(session_temp_dir.glob("embedding-service-*")) - before
