"""The Alembic migrations: one schema for SQLite and PostgreSQL.

Round trips run on a real SQLite file and a real PostgreSQL schema of their
own. The tests are synchronous on purpose: Alembic drives asyncpg through
``asyncio.run`` (migrations/env.py), which cannot run inside an event loop.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from waypoint.cli import main
from waypoint.errors import SchemaVersionError
from waypoint.stores import schema
from waypoint.stores.schema import KNOWN_REVISIONS, SCHEMA_REVISION, alembic_config

REPO = Path(__file__).resolve().parents[1]
JOURNAL_TABLES = {"executions", "steps", "events", "effects"}


def _sqlite_tables(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as conn, conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {name for (name,) in rows} - {"alembic_version"}


def _db(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(["db", *argv]) == 0
    return capsys.readouterr().out


def test_known_revisions_are_alembics_history() -> None:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    history = [r.revision for r in script.walk_revisions()]

    assert tuple(reversed(history)) == KNOWN_REVISIONS
    assert script.get_heads() == [SCHEMA_REVISION]


def test_sqlite_upgrade_downgrade_round_trip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "journal.db"
    dsn = f"sqlite:///{path}"

    _db(capsys, "upgrade", "--dsn", dsn)
    assert _sqlite_tables(path) == JOURNAL_TABLES
    assert _db(capsys, "current", "--dsn", dsn).split()[0] == SCHEMA_REVISION

    _db(capsys, "downgrade", "--dsn", dsn)
    assert _db(capsys, "current", "--dsn", dsn).split()[0] == KNOWN_REVISIONS[-2]
    assert "effects" not in _sqlite_tables(path)

    _db(capsys, "downgrade", "--dsn", dsn, "--revision", "base")
    assert _sqlite_tables(path) == set()

    _db(capsys, "upgrade", "--dsn", dsn)
    assert _sqlite_tables(path) == JOURNAL_TABLES


def test_dsn_comes_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WAYPOINT_DSN", f"sqlite:///{tmp_path / 'env.db'}")

    _db(capsys, "upgrade")

    assert _sqlite_tables(tmp_path / "env.db") == JOURNAL_TABLES


def test_current_says_when_the_schema_is_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _db(capsys, "current", "--dsn", f"sqlite:///{tmp_path / 'new.db'}")

    assert out == "no revision: the schema is empty; run `waypoint db upgrade`\n"


def test_migrating_shows_each_migration_and_not_alembics_set_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["db", "upgrade", "--dsn", f"sqlite:///{tmp_path / 'new.db'}"])

    progress = capsys.readouterr().err.splitlines()
    assert [line.split(",")[0] for line in progress] == [
        "Running upgrade  -> 0001",
        "Running upgrade 0001 -> 0002",
    ]


@pytest.mark.parametrize(
    ("dsn", "reason"),
    [
        (
            "postgresql://wp:secret@127.0.0.1:9/journal",
            "ConnectionRefusedError",
        ),
        ("sqlite:////no/such/directory/journal.db", "unable to open database"),
    ],
    ids=["no_server", "no_directory"],
)
def test_an_unreachable_database_is_one_line_not_a_traceback(
    dsn: str, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "upgrade", "--dsn", dsn]) == 1

    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("waypoint: waypoint db upgrade on ")
    assert reason in line
    assert "secret" not in line  # the password is redacted
    assert line.endswith(
        "If the database cannot be reached, check the URL (--dsn or "
        "WAYPOINT_DSN) and that its server is running"
    )


def test_a_migration_that_fails_says_so_without_blaming_the_connection(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "taken.db"
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE executions (id TEXT)")  # not Waypoint's

    assert main(["db", "upgrade", "--dsn", f"sqlite:///{path}"]) == 1

    err = capsys.readouterr().err
    assert "waypoint db upgrade on sqlite:///" in err
    assert "failed: OperationalError" in err
    assert "table executions already exists" in err


def test_heads_names_the_schema_revision(capsys: pytest.CaptureFixture[str]) -> None:
    assert _db(capsys, "heads").split()[0] == SCHEMA_REVISION


def test_revision_adds_the_next_numbered_migration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A copy, so the repository's migrations stay as they are.
    copy = tmp_path / "migrations"
    shutil.copytree(
        REPO / "migrations", copy, ignore=shutil.ignore_patterns("__pycache__")
    )
    monkeypatch.setattr(schema, "migrations_path", lambda: str(copy))
    following = f"{int(SCHEMA_REVISION) + 1:04d}"

    out = _db(capsys, "revision", "-m", "add an index")

    created = copy / "versions" / f"{following}_add_an_index.py"
    text = created.read_text()
    assert f"revision: str = '{following}'" in text
    assert f"down_revision: str | None = '{SCHEMA_REVISION}'" in text
    assert "KNOWN_REVISIONS" in out
    assert following in out


def test_makefile_targets_drive_the_db_commands(tmp_path: Path) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    dsn = f"DSN=sqlite:///{tmp_path / 'make.db'}"
    # -o: never rebuild the venv stamp from a test.
    make = ["make", "-s", "-o", ".venv/.installed-stamp"]

    def run(*target: str) -> str:
        done = subprocess.run(
            [*make, *target], cwd=REPO, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    run("run_migrations", dsn)
    assert SCHEMA_REVISION in run("show_current_db_head", dsn)
    run("revert_migrations", dsn)
    assert KNOWN_REVISIONS[-2] in run("show_current_db_head", dsn)
    assert SCHEMA_REVISION in run("show_db_heads")


# PostgreSQL ---------------------------------------------------------------


@pytest.fixture
def pg_schema() -> Iterator[tuple[str, str]]:
    """An empty schema of its own on the test server, dropped afterwards."""
    from pytest_waypoint._postgres import server_dsn, unavailable_reason

    dsn = server_dsn()
    reason = asyncio.run(unavailable_reason(dsn))
    if reason is not None:
        pytest.skip(reason)
    name = f"wp_{secrets.token_hex(6)}"
    asyncio.run(_sql(dsn, f'CREATE SCHEMA "{name}"'))
    try:
        yield dsn, name
    finally:
        asyncio.run(_sql(dsn, f'DROP SCHEMA "{name}" CASCADE'))


async def _sql(dsn: str, query: str) -> list[tuple[object, ...]]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return [tuple(row) for row in await conn.fetch(query)]
    finally:
        await conn.close()


def _pg_tables(dsn: str, name: str) -> set[str]:
    rows = asyncio.run(
        _sql(
            dsn,
            "SELECT table_name FROM information_schema.tables "
            f"WHERE table_schema = '{name}'",
        )
    )
    return {str(row[0]) for row in rows} - {"alembic_version"}


@pytest.mark.postgres
def test_postgres_upgrade_downgrade_round_trip(
    pg_schema: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    dsn, name = pg_schema
    where = ["--dsn", dsn, "--schema", name]

    _db(capsys, "upgrade", *where)
    assert _pg_tables(dsn, name) == JOURNAL_TABLES
    assert _db(capsys, "current", *where).split()[0] == SCHEMA_REVISION

    _db(capsys, "downgrade", *where)
    assert _db(capsys, "current", *where).split()[0] == KNOWN_REVISIONS[-2]
    assert "effects" not in _pg_tables(dsn, name)

    _db(capsys, "downgrade", *where, "--revision", "base")
    assert _pg_tables(dsn, name) == set()

    _db(capsys, "upgrade", *where)
    assert _pg_tables(dsn, name) == JOURNAL_TABLES


async def _open(dsn: str, name: str, *, migrate: bool) -> str | None:
    from waypoint.stores.postgres import PostgresStore

    async with PostgresStore(dsn, schema=name, migrate=migrate) as store:
        return await store.schema_revision()


@pytest.mark.postgres
def test_an_out_of_date_postgres_schema_is_refused_unless_migrate(
    pg_schema: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    dsn, name = pg_schema
    _db(capsys, "upgrade", "--dsn", dsn, "--schema", name, "--revision", "0001")

    with pytest.raises(SchemaVersionError) as raised:
        asyncio.run(_open(dsn, name, migrate=False))

    assert raised.value.found == "0001"
    assert raised.value.expected == SCHEMA_REVISION
    assert f"waypoint db upgrade --dsn {dsn} --schema {name}" in str(raised.value)
    assert asyncio.run(_open(dsn, name, migrate=True)) == SCHEMA_REVISION
    assert asyncio.run(_open(dsn, name, migrate=False)) == SCHEMA_REVISION


@pytest.mark.postgres
def test_an_empty_postgres_schema_is_refused_unless_migrate(
    pg_schema: tuple[str, str],
) -> None:
    dsn, name = pg_schema

    with pytest.raises(SchemaVersionError, match="waypoint db upgrade") as raised:
        asyncio.run(_open(dsn, name, migrate=False))

    assert raised.value.found is None
    assert _pg_tables(dsn, name) == set()
    assert asyncio.run(_open(dsn, name, migrate=True)) == SCHEMA_REVISION
    assert _pg_tables(dsn, name) == JOURNAL_TABLES
