"""``embedding-service serve``: a flag for every setting, each with its ``EMBED_`` twin."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

import uvicorn
from pydantic import ValidationError

from service.repository.demo import write_demo_tables
from service.repository.discovery import has_tables
from service.settings import ENV_PREFIX, ServiceSettings

log = logging.getLogger("service.cli")

# Seconds uvicorn waits for in-flight requests after SIGTERM (Docker kills at 10 s).
GRACEFUL_SHUTDOWN_SECONDS = 8


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    for name, field in ServiceSettings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        env = ENV_PREFIX + name.upper()
        help_text = f"{field.description} [env {env}; default {field.default}]".replace("%", "%%")
        annotation = field.annotation
        if annotation is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        elif annotation is int:
            parser.add_argument(flag, type=int, default=None, help=help_text)
        elif annotation is Path:
            parser.add_argument(flag, type=Path, default=None, help=help_text)
        elif get_args(annotation):
            parser.add_argument(flag, choices=get_args(annotation), default=None, help=help_text)
        else:
            parser.add_argument(flag, default=None, help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="embedding-service", description="Serve trained embedding tables over HTTP."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP service")
    _add_setting_flags(serve)
    return parser


def settings_from_args(args: argparse.Namespace) -> ServiceSettings:
    """Flags override the environment, which overrides the defaults."""
    given: dict[str, Any] = {
        name: getattr(args, name)
        for name in ServiceSettings.model_fields
        if getattr(args, name, None) is not None
    }
    return ServiceSettings(**given)


def _export(settings: ServiceSettings) -> None:
    # Worker processes build their app from the environment: hand every setting on.
    for name, value in settings.model_dump().items():
        os.environ[ENV_PREFIX + name.upper()] = (
            str(value).lower() if isinstance(value, bool) else str(value)
        )


def serve(settings: ServiceSettings) -> int:
    from service.http.app import configure_logging

    configure_logging(settings.log_level)
    models = Path(settings.models)
    if not has_tables(models):
        try:
            write_demo_tables(models)
        except OSError as exc:
            log.error("no table in %s and the demo table cannot be written there: %s", models, exc)
            return 2
    _export(settings)
    uvicorn.run(
        "service.http.app:create_app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        access_log=settings.access_log,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        server_header=False,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        print(f"embedding-service: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return serve(settings)
    return 2  # pragma: no cover - argparse enforces the command
