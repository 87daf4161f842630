"""Database faults under a running workflow, on a real PostgreSQL server.

A trigger makes the checkpoint write of one step slow, and the test kills the
backend running it (pg_terminate_backend) in the middle of that write: the
checkpoint is then either committed or absent, never half-written; the store
retries it on a new connection, or fails with StoreError, and a later resume
completes with nothing lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from pytest_waypoint._postgres import isolated_store, server_dsn
from waypoint import (
    ExecutionStatus,
    StoreError,
    Waypoint,
    checkpoint,
    current_step,
    workflow,
)
from waypoint.stores import postgres
from waypoint.stores.postgres import PostgresStore

pytestmark = pytest.mark.postgres

#: How long the trigger holds the slow checkpoint write open for the killer.
WRITE_SECONDS = 0.4
#: The first slow write is held open longer, so that a killer slowed down by a
#: loaded machine still finds it. (The retry then waits for the killed
#: backend's sleep to end before its own insert can proceed, so this is also
#: about the test's duration.)
FIRST_WRITE_SECONDS = 1.5

runs: Counter[str] = Counter()
keys: dict[str, list[str]] = {}


@checkpoint
async def fetch() -> int:
    runs["fetch"] += 1
    return 1


@checkpoint
async def slow_write(x: int) -> int:
    runs["slow_write"] += 1
    keys.setdefault("slow_write", []).append(current_step().idempotency_key)
    return x + 1


@checkpoint
async def finish(x: int) -> int:
    runs["finish"] += 1
    return x * 10


@workflow(name="pg_faults")
async def pipeline() -> int:
    return await finish(await slow_write(await fetch()))


@pytest.fixture
async def pg() -> AsyncIterator[PostgresStore]:
    runs.clear()
    keys.clear()
    app = f"wp_faults_{secrets.token_hex(4)}"
    async with isolated_store(server_settings={"application_name": app}) as store:
        await _sql(
            store,
            f"""
            CREATE SEQUENCE "{store.schema}".slow_writes;
            CREATE FUNCTION "{store.schema}".slow_write() RETURNS trigger AS $$
            BEGIN
                -- The first write is held open longest, so the killer finds
                -- it even on a loaded machine; a sequence counts it even
                -- though its transaction dies.
                IF nextval('"{store.schema}".slow_writes') = 1 THEN
                    PERFORM pg_sleep({FIRST_WRITE_SECONDS});
                ELSE
                    PERFORM pg_sleep({WRITE_SECONDS});
                END IF;
                RETURN NEW;
            END
            $$ LANGUAGE plpgsql;
            CREATE TRIGGER slow_write BEFORE INSERT ON "{store.schema}".steps
            FOR EACH ROW WHEN (NEW.step = 'slow_write')
            EXECUTE FUNCTION "{store.schema}".slow_write();
            """,
        )
        store.application_name = app  # type: ignore[attr-defined]
        yield store


async def _sql(store: PostgresStore, query: str, *args: object) -> list[object]:
    import asyncpg

    conn = await asyncpg.connect(server_dsn())
    try:
        if not args:
            await conn.execute(query)
            return []
        return [row[0] for row in await conn.fetch(query, *args)]
    finally:
        await conn.close()


async def _kill_writers(store: PostgresStore, *, times: int) -> int:
    """Kill the store's backend each time it sits in the slow write."""
    killed = 0
    app = store.application_name  # type: ignore[attr-defined]
    while killed < times:
        pids = await _sql(
            store,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = $1 AND query LIKE '%INSERT INTO steps%' "
            "AND state = 'active'",
            app,
        )
        killed += len(pids)
        await asyncio.sleep(0.02)
    return killed


async def _checkpointed(store: PostgresStore, execution_id: str) -> list[object]:
    return await _sql(
        store,
        f'SELECT step FROM "{store.schema}".steps WHERE execution_id = $1 '
        "ORDER BY position",
        execution_id,
    )


async def test_a_backend_killed_mid_write_is_retried_on_a_new_connection(
    pg: PostgresStore, caplog: pytest.LogCaptureFixture
) -> None:
    killer = asyncio.create_task(_kill_writers(pg, times=1))

    with caplog.at_level(logging.WARNING, logger="waypoint.stores.postgres"):
        async with Waypoint(pg) as wp:
            output = await wp.run(pipeline, execution_id="killed-once")

    assert await asyncio.wait_for(killer, 5) == 1
    assert output == 20
    assert runs == {"fetch": 1, "slow_write": 1, "finish": 1}
    assert await _checkpointed(pg, "killed-once") == ["fetch", "slow_write", "finish"]
    retries = [r.getMessage() for r in caplog.records]
    assert any("killed-once" in m and "record_step" in m for m in retries)


async def test_a_write_that_keeps_failing_is_absent_and_resumes_later(
    pg: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fewer, shorter retries, so that the killer outlasts them quickly.
    monkeypatch.setattr(postgres, "RETRY_DELAYS", (0.01, 0.01))
    # The killer outlives every attempt, until the store gives up.
    killer = asyncio.create_task(_kill_writers(pg, times=1_000_000))

    async with Waypoint(pg) as wp:
        with pytest.raises(StoreError, match="record_step") as raised:
            await wp.run(pipeline, execution_id="killed-always")
    killer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await killer

    assert raised.value.execution_id == "killed-always"
    assert await _checkpointed(pg, "killed-always") == ["fetch"]
    assert (await pg.get_execution("killed-always")).status is ExecutionStatus.RUNNING

    async with Waypoint(pg) as wp:
        assert await wp.resume("killed-always") == 20

    assert runs == {"fetch": 1, "slow_write": 2, "finish": 1}
    assert len(set(keys["slow_write"])) == 1, "a re-run keeps its idempotency key"
    assert await _checkpointed(pg, "killed-always") == [
        "fetch",
        "slow_write",
        "finish",
    ]
