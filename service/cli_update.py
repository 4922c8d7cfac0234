"""``embedding-service update TABLE (--models DIR | --redis URL) --ids IDS.npy --vectors ROWS.npy``.

The same update as ``POST /v1/admin/tables/{table}/rows``, written with no service running (a
training job holding the repository volume or the Redis URL); running services see it within
a second. Prints the summary as one JSON object: ``{"table", "version", "sequence", "rows",
"applied"}`` (``applied`` false: the ``--update-id`` was seen before, nothing written).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EXIT_REFUSED = 1
EXIT_USAGE = 2


def add_update_parser(commands: Any) -> None:
    """The ``update`` subcommand's flags (``commands``: ``add_subparsers``' result)."""
    update = commands.add_parser(
        "update", help="write one row update into a table of a model repository or of Redis"
    )
    update.add_argument("table", help="the table's name")
    where = update.add_mutually_exclusive_group(required=True)
    where.add_argument("--models", type=Path, help="the model repository folder")
    where.add_argument("--redis", help="redis:// or rediss:// URL of one node")
    update.add_argument("--ids", type=Path, required=True, help="a .npy of n distinct int ids")
    update.add_argument("--vectors", type=Path, required=True, help="a .npy of (n, dim) rows")
    update.add_argument("--update-id", help="sent again, answers the first update's sequence")
    update.add_argument("--version", help="the version to update (default: the default one)")


def update(args: argparse.Namespace) -> int:
    """Run the ``update`` command; the summary on stdout, a refusal on stderr."""
    from service.errors import ServiceError, TableLoadError
    from service.updates.offline import UpdateTargetError, run_update
    from service.updates.redis_writer import VersionMissing

    try:
        outcome = run_update(
            args.table,
            args.ids,
            args.vectors,
            models=args.models,
            redis_url=args.redis,
            update_id=args.update_id,
            version=args.version,
        )
    except ServiceError as exc:
        print(f"embedding-service update: refused ({exc.code}): {exc.message}", file=sys.stderr)
        return EXIT_REFUSED
    except (UpdateTargetError, VersionMissing, TableLoadError, OSError, ValueError) as exc:
        print(f"embedding-service update: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(outcome.summary()))
    return 0
