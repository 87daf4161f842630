"""The embedded default: a real SQLite file, its settings and its schema."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import sys
from contextlib import closing
from pathlib import Path

import pytest

from waypoint import (
    ConfigurationError,
    SchemaVersionError,
    SQLiteStore,
    Waypoint,
    checkpoint,
    workflow,
)
from waypoint.stores import open_store, redact
from waypoint.stores.schema import SCHEMA_REVISION


@checkpoint
async def hello(name: str) -> str:
    return f"hello {name}"


@workflow
async def greet(name: str) -> str:
    return await hello(name)


async def _open_and_close(path: Path) -> None:
    store = SQLiteStore(path)
    await store.open()
    await store.close()


def _pragma(path: Path, name: str) -> object:
    with closing(sqlite3.connect(path)) as conn, conn:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]


async def test_the_default_is_a_file_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WAYPOINT_DSN", raising=False)

    async with Waypoint() as wp:
        assert await wp.run(greet, "you") == "hello you"

    assert (tmp_path / "waypoint.db").exists()
    assert _pragma(tmp_path / "waypoint.db", "journal_mode") == "wal"


async def test_waypoint_dsn_picks_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "elsewhere.db"
    monkeypatch.setenv("WAYPOINT_DSN", f"sqlite:///{target}")

    async with Waypoint() as wp:
        await wp.run(greet, "env")

    assert target.exists()


def test_sqlite_urls_parse_to_paths_and_options(tmp_path: Path) -> None:
    relative = open_store("sqlite:///data/j.db")
    absolute = open_store(f"sqlite:///{tmp_path}/j.db?durability=power")

    assert isinstance(relative, SQLiteStore)
    assert relative.path == Path("data/j.db")
    assert isinstance(absolute, SQLiteStore)
    assert absolute.path == tmp_path / "j.db"
    assert absolute.durability == "power"
    with pytest.raises(ConfigurationError, match=re.escape("durability=process|power")):
        open_store("sqlite:///j.db?fsync=yes")
    with pytest.raises(ConfigurationError, match="unknown durability"):
        SQLiteStore("j.db", durability="paranoid")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="sqlite:///relative"):
        open_store("sqlite://host/j.db")


def test_passwords_never_reach_messages() -> None:
    assert redact("postgresql://me:secret@db/x") == "postgresql://me:***@db/x"
    with pytest.raises(ConfigurationError) as raised:
        open_store("mysql://me:secret@db/x")
    assert "secret" not in str(raised.value)


@pytest.mark.parametrize(("durability", "level"), [("process", 1), ("power", 2)])
async def test_durability_sets_synchronous(
    tmp_path: Path, durability: str, level: int
) -> None:
    store = SQLiteStore(tmp_path / "j.db", durability=durability)  # type: ignore[arg-type]
    await store.open()
    try:
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == level
    finally:
        await store.close()


async def test_a_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        await SQLiteStore(tmp_path / "no" / "such" / "j.db").open()


async def test_the_schema_comes_from_the_migrations(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    await _open_and_close(path)

    with closing(sqlite3.connect(path)) as conn, conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        (revision,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()

    assert {"executions", "steps", "events", "effects"} <= tables
    assert revision == SCHEMA_REVISION


async def test_a_newer_schema_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    await _open_and_close(path)
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999'")

    with pytest.raises(SchemaVersionError) as raised:
        await SQLiteStore(path).open()

    assert raised.value.found == "9999"
    assert raised.value.expected == SCHEMA_REVISION
    assert "Upgrade waypoint-sdk" in str(raised.value)


async def test_an_old_schema_is_upgraded_or_named_when_migration_is_off(
    tmp_path: Path,
) -> None:
    from alembic import command
    from sqlalchemy import create_engine

    from waypoint.stores.schema import alembic_config

    path = tmp_path / "old.db"
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection=connection), "0001")
    engine.dispose()

    with pytest.raises(
        SchemaVersionError, match=f"waypoint db upgrade --dsn sqlite:///{path}"
    ):
        await SQLiteStore(path, migrate=False).open()
    store = SQLiteStore(path)
    await store.open()
    await store.close()
    with closing(sqlite3.connect(path)) as conn, conn:
        (revision,) = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert revision == SCHEMA_REVISION


async def test_many_runtimes_opening_a_new_file_at_once_migrate_it_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "shared.db"
    script = (
        "import asyncio, sys; from waypoint import SQLiteStore; "
        "s = SQLiteStore(sys.argv[1]); asyncio.run(s.open()); asyncio.run(s.close())"
    )
    procs = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", script, str(path))
        for _ in range(4)
    ]
    codes = [await p.wait() for p in procs]

    assert codes == [0, 0, 0, 0]
    with closing(sqlite3.connect(path)) as conn, conn:
        assert conn.execute("SELECT count(*) FROM alembic_version").fetchone()[0] == 1
