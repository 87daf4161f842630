"""A PostgreSQL journal for tests: a fresh schema per test, dropped after.

Shared by Waypoint's own tests and the pytest plugin. Importing this module
imports no database driver; asyncpg is loaded when a store is first asked for.

The server is found through ``WAYPOINT_TEST_DSN``, else the local default
``postgresql://postgres@127.0.0.1:5432/test``. When no server answers, the
tests that need one are skipped with a reason that says how to enable them.

testcontainers (opt-in): with ``--waypoint-testcontainers=true`` (or
``WAYPOINT_TESTCONTAINERS=1``), no URL given and no server answering, a
throwaway PostgreSQL container is started once per test process (``pip
install 'waypoint-sdk[testcontainers]'`` and a running Docker), and stopped
when the process exits. Without the opt-in nothing here touches Docker.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import pytest

from waypoint.stores import redact

if TYPE_CHECKING:
    from waypoint.stores.postgres import PostgresStore

__all__ = [
    "DEFAULT_TEST_DSN",
    "isolated_store",
    "server_dsn",
    "unavailable_reason",
]

DEFAULT_TEST_DSN = "postgresql://postgres@127.0.0.1:5432/test"

#: How long a probe waits for a server before deciding none answers; a local
#: server answers in milliseconds, and a skip should not cost a test run long.
PROBE_TIMEOUT = 3.0

_probed: dict[str, str | None] = {}
_container_dsn: str | None = None


def server_dsn() -> str:
    """The PostgreSQL URL tests use: ``WAYPOINT_TEST_DSN`` or the default."""
    return os.environ.get("WAYPOINT_TEST_DSN") or DEFAULT_TEST_DSN


async def unavailable_reason(dsn: str) -> str | None:
    """None when a server answers at ``dsn``; else why not, and how to fix it.

    The answer is remembered for the life of the process, so a test session
    probes each URL once.
    """
    if dsn in _probed:
        return _probed[dsn]
    try:
        import asyncpg
    except ImportError:
        reason: str | None = (
            "asyncpg is not installed: pip install 'waypoint-sdk[postgres]'"
        )
    else:
        reason = None
        try:
            conn = await asyncpg.connect(dsn, timeout=PROBE_TIMEOUT)
            try:
                await conn.fetchval("SELECT 1")
            finally:
                await conn.close()
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            reason = (
                f"no PostgreSQL server answers at {redact(dsn)} "
                f"({type(exc).__name__}: {exc}); start PostgreSQL there, or set "
                "WAYPOINT_TEST_DSN=postgresql://user@host:port/database"
            )
    _probed[dsn] = reason
    return reason


def _wants_container(option: bool) -> bool:
    """Whether the user opted in, by the plugin's option or the variable."""
    return option or os.environ.get("WAYPOINT_TESTCONTAINERS") == "1"


def _testcontainers_dsn() -> tuple[str | None, str]:
    """A container's URL, or None and why none could be started."""
    global _container_dsn
    if _container_dsn is not None:
        return _container_dsn, ""
    try:
        from testcontainers.postgres import PostgresContainer
    except ImportError:
        return None, "pip install 'waypoint-sdk[testcontainers]' to use it"
    try:
        container: Any = PostgresContainer("postgres:16-alpine", driver=None)
        container.start()
    except Exception as exc:  # no Docker daemon, no image, no network
        return None, f"it could not start one ({type(exc).__name__}: {exc})"
    atexit.register(container.stop)
    _container_dsn = str(container.get_connection_url()).replace(
        "postgresql+psycopg2://", "postgresql://"
    )
    return _container_dsn, ""


async def _available_dsn(dsn: str | None, testcontainers: bool) -> str:
    if dsn is not None:
        reason = await unavailable_reason(dsn)
    else:
        dsn = server_dsn()
        reason = await unavailable_reason(dsn)
        if reason is not None:
            reason, started = await _or_container(reason, testcontainers)
            dsn = started or dsn
    if reason is not None:
        pytest.skip(reason)
    return dsn


async def _or_container(reason: str, wanted: bool) -> tuple[str | None, str | None]:
    """With no server at the default URL: a container's, if one is wanted and
    starts. Returns (why not, or None; the container's URL, or None)."""
    if not _wants_container(wanted):
        return f"{reason} (or --waypoint-testcontainers=true for one in Docker)", None
    if os.environ.get("WAYPOINT_TEST_DSN"):
        return f"{reason}; no container, since WAYPOINT_TEST_DSN names the server", None
    started, why = await asyncio.to_thread(_testcontainers_dsn)
    if started is None:
        return f"{reason}; testcontainers was asked for, but {why}", None
    return None, started


@asynccontextmanager
async def isolated_store(
    dsn: str | None = None, *, testcontainers: bool = False, **kwargs: Any
) -> AsyncIterator[PostgresStore]:
    """An open ``PostgresStore`` in a new, migrated schema ``wp_<hex>``.

    The schema is dropped (CASCADE) afterwards. Skips the calling test when no
    server answers, unless ``testcontainers`` (or ``WAYPOINT_TESTCONTAINERS``)
    starts one. ``kwargs`` go to ``PostgresStore``.
    """
    import asyncpg

    from waypoint.stores.postgres import PostgresStore

    dsn = await _available_dsn(dsn, testcontainers)
    schema = f"wp_{secrets.token_hex(6)}"
    store = PostgresStore(dsn, schema=schema, migrate=True, **kwargs)
    try:
        await store.open()
        yield store
    finally:
        await store.close()
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()
