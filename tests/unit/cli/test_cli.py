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
