"""A lone <name>.toml declares a Redis table; its keys are strict."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.errors import TableLoadError
from service.repository.discovery import discover_tables
from service.repository.options import DEFAULT_CACHE_ROWS, read_table_options


def test_a_toml_without_weights_is_a_redis_table(tmp_path: Path) -> None:
    (tmp_path / "remote.toml").write_text('redis = "redis://h:6379"\n')
    (tmp_path / "local.npy").write_bytes(b"")
    (tmp_path / "local.toml").write_text("mask_zero = true\n")
    sources, _ = discover_tables(tmp_path)
    assert sources["remote"].format == "redis"
    assert sources["remote"].options_path == tmp_path / "remote.toml"
    assert sources["local"].format == "npy"


def test_redis_options_defaults(tmp_path: Path) -> None:
    path = tmp_path / "t.toml"
    path.write_text('redis = "rediss://:secret@h:6380"\npadding_idx = 0\n')
    options = read_table_options(path)
    assert (options.cache_rows, options.redis_timeout_ms) == (DEFAULT_CACHE_ROWS, 1000)


@pytest.mark.parametrize(
    "text",
    [
        "redis = 5\n",
        'redis = "http://h:1"\n',
        'redis = "redis://h:1"\ncache_rows = "10"\n',
        'redis = "redis://h:1"\ncache_rows = -1\n',
        'redis = "redis://h:1"\nredis_timeout_ms = 0\n',
        'redis = "redis://h:1"\nredis_timeout_ms = 1.5\n',
    ],
)
def test_bad_redis_options_are_load_errors(tmp_path: Path, text: str) -> None:
    path = tmp_path / "t.toml"
    path.write_text(text)
    with pytest.raises(TableLoadError):
        read_table_options(path)
