"""``waypoint db ...``: the journal schema, through Alembic.

    waypoint db upgrade   [--dsn URL] [--schema S] [--revision head]
    waypoint db downgrade [--dsn URL] [--schema S] [--revision -1]
    waypoint db current   [--dsn URL] [--schema S]
    waypoint db heads
    waypoint db revision -m MESSAGE

The URL is ``--dsn``, else ``WAYPOINT_DSN``, else the embedded default
``sqlite:///waypoint.db``; SQLite and PostgreSQL URLs both work. The Makefile
targets ``run_migrations``, ``revert_migrations``, ``show_current_db_head``,
``show_db_heads`` and ``add_migration`` call these commands.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["register"]

_DSN_HELP = "store URL (default: WAYPOINT_DSN or sqlite:///waypoint.db)"
_SCHEMA_HELP = "PostgreSQL schema that holds the journal (default: search_path)"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    db = sub.add_parser("db", help="manage the journal schema (Alembic)")
    commands = db.add_subparsers(dest="db_command", required=True)

    upgrade = commands.add_parser("upgrade", help="apply migrations")
    _add_target(upgrade, default="head", what="revision to upgrade to")
    upgrade.set_defaults(func=_upgrade)

    downgrade = commands.add_parser("downgrade", help="revert migrations")
    _add_target(downgrade, default="-1", what="revision to go back to (one step)")
    downgrade.set_defaults(func=_downgrade)

    current = commands.add_parser("current", help="show the database's revision")
    _add_location(current)
    current.set_defaults(func=_current)

    heads = commands.add_parser("heads", help="show the newest revision(s)")
    heads.set_defaults(func=_heads)

    revision = commands.add_parser("revision", help="add an empty migration")
    revision.add_argument("-m", "--message", required=True, help="what it changes")
    revision.set_defaults(func=_revision)


def _add_location(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dsn", help=_DSN_HELP)
    parser.add_argument("--schema", help=_SCHEMA_HELP)


def _add_target(parser: argparse.ArgumentParser, *, default: str, what: str) -> None:
    _add_location(parser)
    parser.add_argument("--revision", default=default, help=f"{what} ({default})")


def _dsn(args: argparse.Namespace) -> str:
    from waypoint.stores import DEFAULT_DSN

    dsn: str = args.dsn or os.environ.get("WAYPOINT_DSN") or DEFAULT_DSN
    if dsn.startswith("postgres://"):
        dsn = "postgresql://" + dsn.removeprefix("postgres://")
    if not dsn.startswith(("sqlite://", "postgresql://")):
        from waypoint.errors import ConfigurationError
        from waypoint.stores import redact

        raise ConfigurationError(
            f"{redact(dsn)!r} has no schema to migrate: use a sqlite:/// or "
            "postgresql:// URL"
        )
    return dsn


def _config(args: argparse.Namespace) -> Any:
    from waypoint.stores.schema import alembic_config

    return _to_stdout(alembic_config(_dsn(args), schema=args.schema))


def _to_stdout(config: Any) -> Any:
    # Alembic's Config binds the sys.stdout of import time; print to the
    # current one, so that redirected or captured output gets the report.
    config.stdout = sys.stdout
    return config


@contextlib.contextmanager
def _showing_progress() -> Iterator[None]:
    # Alembic reports each migration it runs through logging; a person at the
    # command line wants to see them, on the stderr of the moment, but not how
    # Alembic set itself up.
    alembic_logger = logging.getLogger("alembic.runtime.migration")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(_only_migrations)
    level = alembic_logger.level
    alembic_logger.addHandler(handler)
    alembic_logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        alembic_logger.removeHandler(handler)
        alembic_logger.setLevel(level)


def _only_migrations(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(("Context impl", "Will assume"))


@contextlib.contextmanager
def _reaching(args: argparse.Namespace) -> Iterator[None]:
    """Turn a database error into one line that says what failed where."""
    from sqlalchemy.exc import SQLAlchemyError

    from waypoint.errors import StoreError
    from waypoint.stores import redact

    try:
        yield
    except BrokenPipeError:
        raise  # the reader of our output went away; not the database's doing
    except (OSError, SQLAlchemyError) as exc:
        lines = str(exc).splitlines()
        reason = f"{type(exc).__name__}: {lines[0]}" if lines else repr(exc)
        raise StoreError(
            f"waypoint db {args.db_command} on {redact(_dsn(args))} failed: "
            f"{reason}. If the database cannot be reached, check the URL "
            "(--dsn or WAYPOINT_DSN) and that its server is running"
        ) from exc


def _against_database(
    fn: Callable[[argparse.Namespace], int],
) -> Callable[[argparse.Namespace], int]:
    @functools.wraps(fn)
    def wrapped(args: argparse.Namespace) -> int:
        with _reaching(args), _showing_progress():
            return fn(args)

    return wrapped


@_against_database
def _upgrade(args: argparse.Namespace) -> int:
    from alembic import command

    command.upgrade(_config(args), args.revision)
    return 0


@_against_database
def _downgrade(args: argparse.Namespace) -> int:
    from alembic import command

    command.downgrade(_config(args), args.revision)
    return 0


@_against_database
def _current(args: argparse.Namespace) -> int:
    from alembic import command

    config = _config(args)
    printed = config.stdout = io.StringIO()
    command.current(config)
    sys.stdout.write(
        printed.getvalue()
        or "no revision: the schema is empty; run `waypoint db upgrade`\n"
    )
    return 0


def _heads(args: argparse.Namespace) -> int:
    from alembic import command

    from waypoint.stores.schema import alembic_config

    command.heads(_to_stdout(alembic_config()))
    return 0


def _revision(args: argparse.Namespace) -> int:
    from alembic import command
    from alembic.script import ScriptDirectory

    from waypoint.stores.schema import alembic_config

    config = _to_stdout(alembic_config())
    script = ScriptDirectory.from_config(config)
    numbered = [
        int(r.revision) for r in script.walk_revisions() if r.revision.isdigit()
    ]
    rev_id = f"{max(numbered, default=0) + 1:04d}"
    command.revision(config, message=args.message, rev_id=rev_id)
    sys.stdout.write(
        f"Added revision {rev_id}. Fill in upgrade() and downgrade(), then add "
        f'"{rev_id}" to KNOWN_REVISIONS in waypoint/stores/schema.py so that '
        "stores expect it.\n"
    )
    return 0
