"""The CLI mirrors every setting; flags override the EMBED_ environment."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from service.cli import build_parser, settings_from_args
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
    settings = settings_from_args(parser.parse_args(["serve", "--port", "9002", "--no-fast-path"]))
    assert settings.port == 9002 and settings.max_ids == 7 and settings.fast_path is False


def test_serve_gives_workers_time_to_start(monkeypatch, tmp_path) -> None:
    """A worker still mapping its tables on a busy CPU is not killed as hung after 5 s."""
    import uvicorn

    import service.cli as cli

    seen: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: seen.update(kwargs))
    monkeypatch.setattr(cli, "has_tables", lambda folder: True)
    # Neither the process environment nor pytest's signal handlers may change.
    monkeypatch.setattr(cli, "_export", lambda settings: None)
    monkeypatch.setattr(cli.signal, "signal", lambda signum, handler: None)
    settings = ServiceSettings(models=tmp_path, workers=2)
    assert cli.serve(settings) == 0
    assert seen["workers"] == 2
    assert seen["timeout_worker_healthcheck"] == cli.WORKER_HEALTHCHECK_SECONDS >= 30


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
