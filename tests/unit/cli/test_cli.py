"""The CLI mirrors every setting; flags override the EMBED_ environment."""

from __future__ import annotations

from service.cli import build_parser, settings_from_args
from service.settings import ServiceSettings


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
    import service.cli as cli

    seen: dict[str, object] = {}
    monkeypatch.setattr(cli.uvicorn, "run", lambda *args, **kwargs: seen.update(kwargs))
    monkeypatch.setattr(cli, "write_demo_tables", lambda folder: [])
    monkeypatch.setattr(cli, "has_tables", lambda folder: True)
    # Neither the process environment nor pytest's signal handlers may change.
    monkeypatch.setattr(cli, "_export", lambda settings: None)
    monkeypatch.setattr(cli.signal, "signal", lambda signum, handler: None)
    settings = ServiceSettings(models=tmp_path, workers=2)
    assert cli.serve(settings) == 0
    assert seen["workers"] == 2
    assert seen["timeout_worker_healthcheck"] == cli.WORKER_HEALTHCHECK_SECONDS >= 30
