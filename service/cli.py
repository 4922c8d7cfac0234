"""``embedding-service serve``: a flag for every setting, each with its ``EMBED_`` twin."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import SecretStr, ValidationError

from service.cli_update import add_update_parser, update
from service.publishing.states import DROP_GRACE_SECONDS, MIN_GRACE_SECONDS
from service.repository.compact import COMPACT_DTYPES, convert_table
from service.repository.discovery import has_tables
from service.settings import ENV_PREFIX, ServiceSettings

log = logging.getLogger("service.cli")

# uvicorn's supervisor kills a worker that misses one 5 s ping, also while it is still importing
# and mapping its tables. On a contended CPU (a CPU-limited pod, a busy host) startup takes
# longer: compose with 2 workers went into a kill/restart loop and never turned healthy. A hung
# worker is still caught, within this long.
WORKER_HEALTHCHECK_SECONDS = 60

# What a start keeps in its run_dir: worker states, reload requests, multiprocess metrics.
RUN_DIR_PARTS = ("workers", "reload", "metrics")


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    for name, field in ServiceSettings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        env = ENV_PREFIX + name.upper()
        shown = "(secret)" if "key" in name else field.default
        help_text = f"{field.description} [env {env}; default {shown}]".replace("%", "%%")
        annotation = field.annotation
        options = [a for a in get_args(annotation) if a is not type(None)]
        base = (
            options[0]
            if get_origin(annotation) is not Literal and len(options) == 1
            else annotation
        )
        if base is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        elif base is int:
            parser.add_argument(flag, type=int, default=None, help=help_text)
        elif base is float:
            parser.add_argument(flag, type=float, default=None, help=help_text)
        elif base is Path:
            parser.add_argument(flag, type=Path, default=None, help=help_text)
        elif get_origin(base) is Literal:
            parser.add_argument(flag, choices=get_args(base), default=None, help=help_text)
        else:
            parser.add_argument(flag, default=None, help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="embedding-service", description="Serve trained embedding tables over HTTP."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP service")
    _add_setting_flags(serve)
    probe = commands.add_parser(
        "probe", help="exit 0 when the service answers 200 on a path (container HEALTHCHECK)"
    )
    probe.add_argument("--url", help="default: http://127.0.0.1:$EMBED_PORT/readyz")
    probe.add_argument("--timeout", type=float, default=3.0)
    convert = commands.add_parser(
        "convert", help="write a table in a compact form (float16, or int8 with per-row scales)"
    )
    convert.add_argument("source", type=Path, help="a .npy or .onnx table")
    convert.add_argument(
        "destination", type=Path, help="the .npy to write (scales and options beside it)"
    )
    convert.add_argument("--dtype", choices=COMPACT_DTYPES, required=True)
    push = commands.add_parser(
        "push", help="write a table's rows into Redis under a new version and make it current"
    )
    push.add_argument("file", type=Path, nargs="?", help="a .npy or .onnx table")
    push.add_argument("--redis", required=True, help="redis:// or rediss:// URL of one node")
    push.add_argument("--name", help="table name (default: the file's stem)")
    push.add_argument(
        "--drop-old",
        action="store_true",
        help="remove every version but the current one (kept: those replaced within the grace)",
    )
    push.add_argument(
        "--grace-seconds",
        type=_grace_seconds,
        default=None,
        help="--drop-old keeps versions replaced, written or deleted less than this long ago"
        f" [default {DROP_GRACE_SECONDS}, at least {MIN_GRACE_SECONDS}]",
    )
    add_update_parser(commands)  # row updates (issue 25)
    return parser


def _grace_seconds(text: str) -> int:
    """``--grace-seconds``: an integer of at least ``MIN_GRACE_SECONDS`` (requests on the
    old version finish)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < MIN_GRACE_SECONDS:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_GRACE_SECONDS} (got {value})")
    return value


def convert(source: Path, destination: Path, dtype: str) -> int:
    """Convert a table and print the sizes and the reconstruction error."""
    from service.errors import TableLoadError
    from service.repository.npy_loader import load_npy
    from service.repository.onnx_loader import load_onnx

    try:
        weights = load_onnx(source) if source.suffix == ".onnx" else load_npy(source)
    except TableLoadError as exc:
        print(f"embedding-service convert: {exc}", file=sys.stderr)
        return 2
    if weights.scales is not None:
        print("embedding-service convert: the source is already int8", file=sys.stderr)
        return 2
    if destination.suffix != ".npy":
        destination = destination.with_suffix(".npy")
    if destination.resolve() == source.resolve():
        print(
            "embedding-service convert: the destination is the source; name another file",
            file=sys.stderr,
        )
        return 2
    report = convert_table(weights.array, destination, dtype)
    print("\n".join(report.lines()))
    return 0


def push(args: argparse.Namespace) -> int:
    """``push FILE --redis URL [--name NAME]`` or ``push --redis URL --name NAME --drop-old``."""
    import asyncio

    from service.backends.redis_store import STORE_ERRORS
    from service.errors import TableLoadError
    from service.publishing.drop import drop_old
    from service.publishing.push import PushConflict, push_table
    from service.repository.discovery import TABLE_NAME

    name = args.name or (args.file.stem if args.file else None)
    if name is None or not TABLE_NAME.match(name):
        print(
            f"embedding-service push: a valid table name is needed (got {name!r})", file=sys.stderr
        )
        return 2
    try:
        if args.drop_old:
            if args.file is not None:
                print("embedding-service push: --drop-old takes no FILE", file=sys.stderr)
                return 2
            grace = DROP_GRACE_SECONDS if args.grace_seconds is None else args.grace_seconds
            removed = asyncio.run(drop_old(args.redis, name, grace))
            print(f"removed {len(removed)} old version(s) of {name}: {' '.join(removed) or '-'}")
            return 0
        if args.file is None:
            print("embedding-service push: a FILE (or --drop-old) is needed", file=sys.stderr)
            return 2
        result = asyncio.run(push_table(args.file, args.redis, name))
    except TableLoadError as exc:
        print(f"embedding-service push: {exc}", file=sys.stderr)
        return 2
    except STORE_ERRORS as exc:
        print(f"embedding-service push: Redis failed: {exc!r}", file=sys.stderr)
        return 1
    except PushConflict as exc:
        print(f"embedding-service push: {exc}", file=sys.stderr)
        return 1
    note = "" if result.written else " (already in Redis: nothing written)"
    # The version alone on stdout (VERSION=$(embedding-service push ...)); the summary beside.
    print(f"{name}: {result.rows} rows, version {result.version} is current{note}", file=sys.stderr)
    print(result.version)
    return 0


def probe(url: str | None, timeout: float) -> int:
    """A health probe needing nothing but the standard library (no curl in the image)."""
    import urllib.error
    import urllib.request

    url = url or f"http://127.0.0.1:{os.environ.get(ENV_PREFIX + 'PORT', '8000')}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError):
        return 1


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
        key = ENV_PREFIX + name.upper()
        if value is None:
            os.environ.pop(key, None)
        elif isinstance(value, SecretStr):
            os.environ[key] = value.get_secret_value()
        else:
            os.environ[key] = str(value).lower() if isinstance(value, bool) else str(value)


def _drained(signum: int, _frame: object) -> None:
    log.info("stopped by signal %d after draining in-flight requests", signum)


class StartupError(Exception):
    """A setting the service cannot start with; its message is the one line the user sees."""


def write_demo_tables(folder: Path) -> list[Path]:
    """The demo tables into ``folder`` (imported on use: the demo needs onnx, the probe must not)."""
    from service.repository.demo import write_demo_tables as write

    return write(folder)


def prepare_models(models: Path) -> None:
    """Check the model repository folder; write the demo tables into it when it holds none.

    A missing or non-folder path, or an empty folder the demo cannot be written into, is a
    start-up error naming the path (API.md: never a silent demo somewhere else).
    """
    if not models.exists():
        raise StartupError(f"--models {models}: no such folder (create it, or point at the tables)")
    if not models.is_dir():
        raise StartupError(f"--models {models}: not a folder")
    if has_tables(models):
        return
    try:
        write_demo_tables(models)
    except OSError as exc:
        raise StartupError(
            f"--models {models}: holds no table, and the demo table cannot be written there "
            f"({exc.strerror or exc}); put tables in it or make it writable"
        ) from exc


def _prepare_run_dir(settings: ServiceSettings) -> tuple[ServiceSettings, bool]:
    """The per-start folder the workers share (state, reload requests, metrics), empty.

    Returns the settings naming it and whether it is ours to remove at exit. The metrics
    folder is set in the environment here, before this process or any worker imports
    prometheus_client.
    """
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before its multiprocess folder was set")
    owned = settings.run_dir is None
    run_dir = (
        Path(tempfile.mkdtemp(prefix="embedding-service-"))
        if settings.run_dir is None
        else Path(settings.run_dir)
    )
    if not owned:  # emptied of what an earlier start left; nothing else in it is touched
        for leftover in RUN_DIR_PARTS:
            shutil.rmtree(run_dir / leftover, ignore_errors=True)
    metrics_dir = run_dir / "metrics"
    metrics_dir.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    return settings.model_copy(update={"run_dir": run_dir}), owned


def serve(settings: ServiceSettings) -> int:
    """Run the server until stopped; 0 after a complete drain, non-zero otherwise."""
    from service.logs import configure_logging

    configure_logging(settings.log_level)
    try:
        prepare_models(Path(settings.models))
    except StartupError as exc:
        print(f"embedding-service: {exc}", file=sys.stderr)
        return 2
    # Before anything imports prometheus_client: it picks its multiprocess mode when first
    # imported (service.http.app imports it, and in one-worker mode the app runs here).
    settings, owned = _prepare_run_dir(settings)
    assert settings.run_dir is not None
    try:
        return _serve_in_run_dir(settings)
    finally:
        if owned:
            shutil.rmtree(settings.run_dir, ignore_errors=True)


def _serve_in_run_dir(settings: ServiceSettings) -> int:
    # Imported here, not at the top: `embedding-service probe` (the container HEALTHCHECK, 4 s
    # timeout) imports this module, and uvicorn + onnx took it from ~0.3 s to 6-11 s on a busy host.
    import uvicorn

    from service.http.protocols import http_protocol
    from service.logs import uvicorn_log_config
    from service.supervisor import run_server

    _export(settings)
    # The server drains in-flight requests on SIGTERM/SIGINT, then re-raises the signal through
    # the handler it found installed. A no-op one lets the drain's outcome set the exit status.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _drained)
    config = uvicorn.Config(
        "service.http.app:create_app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level,
        access_log=settings.access_log,
        log_config=uvicorn_log_config(),  # query strings redacted in the access log
        timeout_graceful_shutdown=settings.drain_seconds,
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
        server_header=False,
        # httptools, pinned, with the head size/timeout and connection limits (h11 unused).
        http=http_protocol(settings),
    )
    assert settings.run_dir is not None
    return run_server(config, float(settings.drain_delay_seconds), settings.run_dir)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "probe":
        return probe(args.url, args.timeout)
    if args.command == "convert":
        return convert(args.source, args.destination, args.dtype)
    if args.command == "push":
        return push(args)
    if args.command == "update":
        return update(args)
    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        print(f"embedding-service: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        try:
            return serve(settings)
        except KeyboardInterrupt:
            # Ctrl-C before uvicorn installed its handlers (e.g. while the demo is written):
            # a requested stop, as quiet as a graceful one.
            print("embedding-service: stopped", file=sys.stderr)
            return 0
    return 2  # pragma: no cover - argparse enforces the command
