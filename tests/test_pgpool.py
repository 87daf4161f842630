"""The PostgreSQL store's own connection pool, on the real server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pytest_waypoint._postgres import server_dsn, unavailable_reason
from waypoint.stores._pgpool import ConnectionPool

pytestmark = pytest.mark.postgres


@pytest.fixture
async def pool() -> Any:
    import asyncpg

    reason = await unavailable_reason(server_dsn())
    if reason:
        pytest.skip(reason)
    opened: list[Any] = []

    async def connect() -> Any:
        conn = await asyncpg.connect(server_dsn())
        opened.append(conn)
        return conn

    pool = ConnectionPool(connect, max_size=2)
    pool.opened = opened  # type: ignore[attr-defined]
    yield pool
    await pool.close()
    for conn in opened:
        if not conn.is_closed():
            await conn.close()


async def test_never_opens_more_than_max_size(pool: Any) -> None:
    busy = 0
    peak = 0

    async def use() -> int:
        nonlocal busy, peak
        async with pool.acquire() as conn:
            busy += 1
            peak = max(peak, busy)
            value = await conn.fetchval("SELECT pg_backend_pid()")
            await asyncio.sleep(0.01)
            busy -= 1
            return int(value)

    pids = await asyncio.gather(*(use() for _ in range(8)))

    assert peak == 2
    assert len(pool.opened) == 2
    assert len(set(pids)) == 2


async def test_a_dead_connection_is_dropped_and_replaced(pool: Any) -> None:
    async with pool.acquire() as conn:
        first = await conn.fetchval("SELECT pg_backend_pid()")
        conn.terminate()

    async with pool.acquire() as conn:
        second = await conn.fetchval("SELECT pg_backend_pid()")

    assert second != first
    assert len(pool.opened) == 2


async def test_a_connection_left_in_a_transaction_is_not_reused(pool: Any) -> None:
    async with pool.acquire() as conn:
        first = conn
        await conn.execute("BEGIN")

    async with pool.acquire() as conn:
        assert conn is not first
        assert not conn.is_in_transaction()


async def test_a_cancelled_waiter_leaks_no_place(pool: Any) -> None:
    held = [await pool.get(), await pool.get()]
    waiter = asyncio.ensure_future(pool.get())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    for conn in held:
        pool.put(conn)

    async def use() -> None:
        async with pool.acquire() as conn:
            await conn.fetchval("SELECT 1")

    await asyncio.wait_for(asyncio.gather(use(), use(), use()), 10)
    assert len(pool.opened) == 2
