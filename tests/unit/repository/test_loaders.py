"""Loaders and options: good tables load zero-copy; bad files fail with the file and reason named."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from service.errors import TableLoadError
from service.repository.demo import gather_onnx_model
from service.repository.discovery import discover_tables
from service.repository.npy_loader import load_npy
from service.repository.onnx_loader import load_onnx
from service.repository.options import TableOptions, read_table_options


def test_npy_is_memory_mapped(tmp_path: Path) -> None:
    table = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.save(tmp_path / "t.npy", table)
    weights = load_npy(tmp_path / "t.npy")
    assert isinstance(weights.array, np.memmap) and not weights.array.flags.writeable
    assert weights.file_region is not None and weights.file_region[1] == weights.array.offset
    np.testing.assert_array_equal(weights.array, table)


@pytest.mark.parametrize(
    ("name", "make", "reason"),
    [
        ("missing", None, "not found"),
        (
            "truncated",
            lambda p: p.write_bytes(_npy_bytes(np.zeros((100, 8), np.float32))[:500]),
            "loadable",
        ),
        ("garbage", lambda p: p.write_bytes(b"hello world"), "not an .npy file"),
        (
            "pickled",
            lambda p: np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True),
            "pickled",
        ),
        ("onedim", lambda p: np.save(p, np.zeros(5, np.float32)), "2-D"),
        ("ints", lambda p: np.save(p, np.zeros((3, 3), np.int64)), "dtype"),
        ("bigendian", lambda p: np.save(p, np.zeros((3, 3), ">f4")), "big-endian"),
        ("empty", lambda p: np.save(p, np.zeros((0, 3), np.float32)), "empty"),
    ],
)
def test_bad_npy_names_file_and_reason(tmp_path: Path, name, make, reason) -> None:
    path = tmp_path / f"{name}.npy"
    if make:
        make(path)
    with pytest.raises(TableLoadError) as error:
        load_npy(path)
    assert str(path) in str(error.value) and reason in str(error.value)


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_pickle_is_never_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "evil.npy"
    path.write_bytes(pickle.dumps(np.zeros((2, 2))))
    with pytest.raises(TableLoadError):
        load_npy(path)


def _tf2onnx_style(table: np.ndarray) -> onnx.ModelProto:
    """input (float) -> Cast(int64) -> Gather(table) -> Identity -> output, as tf2onnx writes."""
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["input"], ["ids"], to=TensorProto.INT64),
            helper.make_node("Gather", ["embeddings", "ids"], ["gathered"], axis=0),
            helper.make_node("Identity", ["gathered"], ["output"]),
        ],
        "keras",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3, table.shape[1]])],
        initializer=[
            helper.make_tensor(
                "embeddings", TensorProto.FLOAT, table.shape, table.tobytes(), raw=True
            )
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=10)


def test_onnx_with_cast_between(tmp_path: Path) -> None:
    table = np.random.default_rng(0).standard_normal((50, 6)).astype(np.float32)
    onnx.save(_tf2onnx_style(table), tmp_path / "k.onnx")
    np.testing.assert_array_equal(load_onnx(tmp_path / "k.onnx").array, table)


def test_onnx_external_data_is_mapped(tmp_path: Path) -> None:
    table = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    model = _tf2onnx_style(table)
    onnx.save(
        model,
        tmp_path / "ext.onnx",
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="ext.data",
        size_threshold=0,
    )
    weights = load_onnx(tmp_path / "ext.onnx")
    assert isinstance(weights.array, np.memmap) and weights.file_region is not None
    np.testing.assert_array_equal(weights.array, table)


def test_onnx_external_data_outside_folder_refused(tmp_path: Path) -> None:
    table = np.zeros((4, 2), np.float32)
    model = _tf2onnx_style(table)
    onnx.save(
        model,
        tmp_path / "ext.onnx",
        save_as_external_data=True,
        location="ext.data",
        size_threshold=0,
    )
    loaded = onnx.load(str(tmp_path / "ext.onnx"), load_external_data=False)
    for entry in loaded.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = "../../etc/passwd"
    onnx.save(loaded, tmp_path / "evil.onnx")
    with pytest.raises(TableLoadError, match="outside the model"):
        load_onnx(tmp_path / "evil.onnx")


def test_onnx_not_a_lookup_graph(tmp_path: Path) -> None:
    table = np.zeros((4, 2), np.float32)
    (tmp_path / "garbage.onnx").write_bytes(b"\x00\x01garbage")
    with pytest.raises(TableLoadError, match=r"garbage\.onnx"):
        load_onnx(tmp_path / "garbage.onnx")
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["w", "ids"], ["g"], axis=0),
            helper.make_node("Relu", ["g"], ["out"]),
        ],
        "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 2])],
        initializer=[
            helper.make_tensor("w", TensorProto.FLOAT, table.shape, table.tobytes(), raw=True)
        ],
    )
    onnx.save(helper.make_model(graph, ir_version=10), tmp_path / "relu.onnx")
    with pytest.raises(TableLoadError, match="followed by other operations"):
        load_onnx(tmp_path / "relu.onnx")


def test_demo_onnx_round_trip(tmp_path: Path) -> None:
    table = np.random.default_rng(1).standard_normal((10, 4)).astype(np.float32)
    (tmp_path / "d.onnx").write_bytes(gather_onnx_model(table))
    np.testing.assert_array_equal(load_onnx(tmp_path / "d.onnx").array, table)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("paddin_idx = 1\n", "paddin_idx"),
        ("max_norm = -1\n", "max_norm"),
        ('device = "tpu"\n', "device"),
        ('backend = "torch"\n', "backend"),
        ("mask_zero = 3\n", "mask_zero"),
        ("this is not toml", "cannot read"),
    ],
)
def test_bad_options_name_the_file(tmp_path: Path, text, reason) -> None:
    path = tmp_path / "t.toml"
    path.write_text(text)
    with pytest.raises(TableLoadError) as error:
        read_table_options(path)
    assert str(path) in str(error.value) and reason in str(error.value)


def test_padding_idx_rules() -> None:
    assert TableOptions(padding_idx=-1).pad_id(10, "x") == 9
    assert TableOptions(mask_zero=True).pad_id(10, "x") == 0
    assert TableOptions(mask_zero=True, padding_idx=0).pad_id(10, "x") == 0
    assert TableOptions().pad_id(10, "x") is None
    with pytest.raises(TableLoadError, match="mask_zero"):
        TableOptions(mask_zero=True, padding_idx=3).pad_id(10, "x")
    with pytest.raises(TableLoadError, match="outside"):
        TableOptions(padding_idx=10).pad_id(10, "x")


def test_discovery_layout(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros((2, 2), np.float32))
    (tmp_path / "a.toml").write_text("mask_zero = true\n")
    (tmp_path / "b").mkdir()
    np.save(tmp_path / "b" / "weights.npy", np.zeros((2, 2), np.float32))
    (tmp_path / "b" / "table.toml").write_text("")
    (tmp_path / "c").mkdir()
    np.save(tmp_path / "c" / "x.npy", np.zeros((2, 2), np.float32))
    np.save(tmp_path / "c" / "y.npy", np.zeros((2, 2), np.float32))
    np.save(tmp_path / "dup.npy", np.zeros((2, 2), np.float32))
    (tmp_path / "dup.onnx").write_bytes(b"")
    (tmp_path / "notes.md").write_text("not a table")
    (tmp_path / "words.vocab").write_text("a\nb\n")
    sources, problems = discover_tables(tmp_path)
    assert set(sources) == {"a", "b"}
    assert sources["a"].options_path == tmp_path / "a.toml"
    assert sources["b"].options_path == tmp_path / "b" / "table.toml"
    assert set(problems) == {"c", "dup"}


def test_onnx_external_data_symlinked_outside_refused(tmp_path: Path) -> None:
    """A data file beside the model that is a symlink to elsewhere is refused too."""
    folder, outside = tmp_path / "models", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    onnx.save(
        _tf2onnx_style(np.ones((4, 2), np.float32)),
        outside / "ext.onnx",
        save_as_external_data=True,
        location="ext.data",
        size_threshold=0,
    )
    (folder / "ext.onnx").write_bytes((outside / "ext.onnx").read_bytes())
    (folder / "ext.data").symlink_to(outside / "ext.data")
    with pytest.raises(TableLoadError, match="outside the model"):
        load_onnx(folder / "ext.onnx")
