"""The CLI mirrors every setting; flags override the EMBED_ environment."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from service.cli import StartupError, build_parser, main, prepare_models, settings_from_args
from service.repository.demo import write_demo_tables
from service.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[3]


def test_every_setting_has_a_flag_and_flags_override_env(monkeypatch) -> None:
    parser = build_parser()
    help_text = parser._subparsers._group_actions[0].choices["serve"].format_help()  # type: ignore[union-attr]
    for name in ServiceSettings.model_fields:
        assert "--" + name.replace("_", "-") in help_text
        assert "EMBED_" + name.upper() in help_text
    monkeypatch.setenv("EMBED_PORT", "9001")
    monkeypatch.setenv("EMBED_MAX_IDS", "7")
    settings = settings_from_args(
        parser.parse_args(["serve", "--port", "9002", "--no-raw-asgi-front"])
    )
    assert settings.port == 9002 and settings.max_ids == 7 and settings.raw_asgi_front is False


def test_missing_or_non_folder_models_is_a_startup_error(tmp_path, capsys) -> None:
    missing = tmp_path / "a" / "mistyped" / "path"
    assert main(["serve", "--models", str(missing)]) == 2
    message = capsys.readouterr().err
    assert str(missing) in message and "no such folder" in message
    assert message.count("\n") == 1 and "Traceback" not in message
    assert not missing.exists()  # nothing was created, no demo anywhere
    a_file = tmp_path / "tables.npy"
    a_file.write_bytes(b"")
    with pytest.raises(StartupError, match="not a folder"):
        prepare_models(a_file)


def test_unwritable_empty_folder_is_a_startup_error(tmp_path, monkeypatch) -> None:
    """A read-only empty folder (e.g. an empty read-only mount) names the folder; no silent
    demo in a temporary folder. The OSError is injected: tests may run as root."""

    def read_only(folder: Path) -> list[Path]:
        raise PermissionError(13, "Permission denied", str(folder / "demo.npy"))

    monkeypatch.setattr("service.cli.write_demo_tables", read_only)
    with pytest.raises(StartupError) as error:
        prepare_models(tmp_path)
    assert str(tmp_path) in str(error.value) and "Permission denied" in str(error.value)


def test_demo_tables_are_readable_by_other_users(tmp_path) -> None:
    previous = os.umask(0o022)
    try:
        prepare_models(tmp_path)
    finally:
        os.umask(previous)
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["demo.npy", "demo.toml", "demo_onnx.onnx", "demo_onnx.toml"]
    for path in tmp_path.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    prepare_models(tmp_path)  # holds tables now: left alone
    assert sorted(p.name for p in tmp_path.iterdir()) == written


def test_demo_respects_a_private_umask(tmp_path) -> None:
    previous = os.umask(0o077)
    try:
        write_demo_tables(tmp_path, rows=4, dim=2)
    finally:
        os.umask(previous)
    assert {stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()} == {0o600}


def test_convert_writes_files_readable_by_other_users(tmp_path, capsys) -> None:
    import numpy as np

    source = tmp_path / "words.npy"
    np.save(source, np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32))
    previous = os.umask(0o022)
    try:
        assert main(["convert", str(source), str(tmp_path / "words8.npy"), "--dtype", "int8"]) == 0
    finally:
        os.umask(previous)
    written = [p for p in tmp_path.iterdir() if p.name.startswith("words8")]
    assert len(written) >= 2  # the codes, their scales (and the options)
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_convert_never_rewrites_a_file_in_place(tmp_path, capsys) -> None:
    """Served tables are mapped: a new version is renamed over the old file (a new inode)."""
    import numpy as np

    source = tmp_path / "words.npy"
    np.save(source, np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32))
    target = tmp_path / "words16.npy"
    assert main(["convert", str(source), str(target), "--dtype", "float16"]) == 0
    served = np.load(target, mmap_mode="r")  # what a worker has mapped
    before = served.copy()
    old_inode = target.stat().st_ino
    assert main(["convert", str(source), str(target), "--dtype", "int8"]) == 0
    assert target.stat().st_ino != old_inode
    assert np.array_equal(served, before)  # the mapped old version is untouched
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # nothing staged left
    assert main(["convert", str(source), str(source), "--dtype", "float16"]) == 2
    assert "destination is the source" in capsys.readouterr().err


def test_serve_gives_workers_time_to_start(monkeypatch, tmp_path) -> None:
    """A worker still mapping its tables on a busy CPU is not killed as hung after 5 s."""
    import service.cli as cli
    import service.supervisor as supervisor

    seen: dict[str, object] = {}

    def fake_run_server(config, drain_delay, run_dir) -> int:
        seen.update(workers=config.workers, healthcheck=config.timeout_worker_healthcheck)
        return 0

    monkeypatch.setattr(supervisor, "run_server", fake_run_server)
    monkeypatch.setattr(cli, "has_tables", lambda folder: True)
    monkeypatch.setattr(
        cli, "_prepare_run_dir", lambda s: (s.model_copy(update={"run_dir": tmp_path}), False)
    )
    # Neither the process environment nor pytest's signal handlers may change.
    monkeypatch.setattr(cli, "_export", lambda settings: None)
    monkeypatch.setattr(cli.signal, "signal", lambda signum, handler: None)
    settings = ServiceSettings(models=tmp_path, workers=2)
    assert cli.serve(settings) == 0
    assert seen["workers"] == 2
    assert seen["healthcheck"] == cli.WORKER_HEALTHCHECK_SECONDS >= 30


def test_probe_imports_no_server_or_model_libraries() -> None:
    """The HEALTHCHECK runs `embedding-service probe` every 10 s with a 4 s timeout: importing
    uvicorn, onnx or onnxruntime there took 6-11 s on a busy host and marked replicas unhealthy."""
    program = (
        "import sys; from service.cli import main; code = main(['probe', '--url', 'http://127.0.0.1:9/x']); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'uvicorn', 'onnx', 'onnxruntime', 'fastapi'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
