"""Alembic environment for Waypoint's journal schema.

Three ways in:
- the runtime and the test suite pass an open SQLAlchemy connection in
  ``config.attributes["connection"]`` (and optionally a PostgreSQL schema in
  ``config.attributes["schema"]``);
- ``waypoint db ...`` and the Makefile set ``sqlalchemy.url``;
- ``alembic -c migrations/alembic.ini ...`` reads ``WAYPOINT_DSN`` (or
  ``-x dsn=...``).
PostgreSQL URLs are driven through asyncpg, the driver the runtime uses, so
no second PostgreSQL driver is needed.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import create_engine, pool, text
from sqlalchemy.engine import Connection

config = context.config


def _url() -> str:
    url = (
        context.get_x_argument(as_dictionary=True).get("dsn")
        or config.get_main_option("sqlalchemy.url")
        or os.environ.get("WAYPOINT_DSN")
        or "sqlite:///waypoint.db"
    )
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


def _configure(connection: Connection) -> None:
    schema = config.attributes.get("schema")
    if schema and connection.dialect.name == "postgresql":
        connection.execute(text(f'SET search_path TO "{schema}"'))
    context.configure(
        connection=connection,
        target_metadata=None,
        version_table_schema=schema or None,
        render_as_batch=connection.dialect.name == "sqlite",
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    context.configure(url=_url(), target_metadata=None, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_configure)
            await connection.commit()
    finally:
        await engine.dispose()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        return
    url = _url()
    if url.startswith("postgresql+asyncpg://"):
        asyncio.run(_run_async(url))
        return
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.begin() as connection:
            _configure(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
