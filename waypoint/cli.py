"""The ``waypoint`` command.

    waypoint db upgrade|downgrade|current|heads|revision   the journal schema
    waypoint chaos MODULE:WORKFLOW [--arg JSON ...]         crash-test a workflow
    waypoint executions [--status S] [--workflow W]         list executions
    waypoint history EXECUTION_ID                           print a journal

Each subcommand lives with the code it drives; this module only routes.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

__all__ = ["main"]


def _add_journal_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    listing = sub.add_parser("executions", help="list executions, newest last")
    listing.add_argument(
        "--dsn", help="store URL (default: WAYPOINT_DSN or ./waypoint.db)"
    )
    listing.add_argument("--status", choices=["running", "completed", "failed"])
    listing.add_argument("--workflow")
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(func=_executions)

    history = sub.add_parser("history", help="print the journal of one execution")
    history.add_argument("execution_id")
    history.add_argument(
        "--dsn", help="store URL (default: WAYPOINT_DSN or ./waypoint.db)"
    )
    history.set_defaults(func=_history)


def _executions(args: argparse.Namespace) -> int:
    from waypoint.runtime import Waypoint

    async def show() -> None:
        async with Waypoint(args.dsn) as wp:
            async for ex in wp.executions(args.status, args.workflow, args.limit):
                print(f"{ex.execution_id}  {ex.status.value:<9}  {ex.workflow}")

    asyncio.run(show())
    return 0


def _history(args: argparse.Namespace) -> int:
    from waypoint.runtime import Waypoint

    async def show() -> None:
        async with Waypoint(args.dsn) as wp:
            for event in await wp.history(args.execution_id):
                print(event.describe())

    asyncio.run(show())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="waypoint", description="Crash-proof async agent workflows."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    from waypoint import dbcli

    dbcli.register(sub)
    from pytest_waypoint import cli as chaos_cli

    chaos_cli.register(sub)
    _add_journal_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from waypoint.errors import WaypointError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except WaypointError as exc:
        print(f"waypoint: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
