"""The offline update command's function on file tables: flat, versioned, group member, ONNX."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.repository.demo import gather_onnx_model
from service.repository.npy_loader import load_npy
from service.repository.onnx_loader import load_onnx
from service.repository.weights import TableWeights
from service.updates.file_log import FileUpdateLog
from service.updates.offline import UpdateTargetError, run_update

DIM = 4


def _table(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.zeros((10, DIM), np.float32))
    return path


def _inputs(folder: Path) -> tuple[Path, Path]:
    np.save(folder / "ids.npy", np.array([2, 3]))
    np.save(folder / "rows.npy", np.ones((2, DIM), np.float32))
    return folder / "ids.npy", folder / "rows.npy"


def _served(weights: TableWeights) -> np.ndarray:
    rows = weights.take(np.arange(4))
    FileUpdateLog.for_weights(weights).overlay().apply(np.arange(4), rows)
    return rows[:, 0]


def test_a_flat_table_is_updated(tmp_path: Path) -> None:
    models = tmp_path / "models"
    table = _table(models / "emb.npy")
    outcome = run_update("emb", *_inputs(tmp_path), models=models, update_id="job-1")
    assert outcome.summary() == {
        "table": "emb",
        "version": load_npy(table).version,
        "sequence": 1,
        "rows": 2,
        "applied": True,
    }
    assert _served(load_npy(table)).tolist() == [0, 0, 1, 1]
    again = run_update("emb", *_inputs(tmp_path), models=models, update_id="job-1")
    assert (again.result.sequence, again.result.applied) == (1, False)


def test_versioned_tables_take_the_default_or_the_named_version(tmp_path: Path) -> None:
    models = tmp_path / "models"
    two, three = _table(models / "emb" / "2" / "w.npy"), _table(models / "emb" / "3" / "w.npy")
    (models / "emb" / "table.toml").write_text("versions = {all = true}\n")
    assert run_update("emb", *_inputs(tmp_path), models=models).version == "3"
    assert run_update("emb", *_inputs(tmp_path), models=models, version="2").version == "2"
    assert _served(load_npy(two)).tolist() == _served(load_npy(three)).tolist() == [0, 0, 1, 1]
    with pytest.raises(UpdateTargetError):
        run_update("emb", *_inputs(tmp_path), models=models, version="4")


def test_a_group_member_and_an_onnx_table_are_updated(tmp_path: Path) -> None:
    models = tmp_path / "models"
    member = _table(models / "tt" / "1" / "user.npy")
    _table(models / "tt" / "1" / "item.npy")
    (models / "tt" / "group.toml").write_text("")
    assert run_update("tt.user", *_inputs(tmp_path), models=models).version == "1"
    assert _served(load_npy(member)).tolist() == [0, 0, 1, 1]
    onnx = models / "graph.onnx"
    onnx.write_bytes(gather_onnx_model(np.zeros((10, DIM), np.float32)))
    run_update("graph", *_inputs(tmp_path), models=models)
    assert _served(load_onnx(onnx)).tolist() == [0, 0, 1, 1]


def test_a_missing_table_or_two_targets_are_refused(tmp_path: Path) -> None:
    models = tmp_path / "models"
    _table(models / "emb.npy")
    with pytest.raises(UpdateTargetError, match="no such table"):
        run_update("nope", *_inputs(tmp_path), models=models)
    with pytest.raises(ValueError, match="exactly one"):
        run_update("emb", *_inputs(tmp_path), models=models, redis_url="redis://x")
