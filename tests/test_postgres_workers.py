"""Many worker processes on one PostgreSQL journal.

Real processes (tests/postgres_child.py), a real server, no mocks: two
runners racing for one execution, and four workers recovering fifty
executions whose owner was SIGKILLed. Step bodies count their runs in the
effect ledger, so "exactly once" is counted, not assumed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pytest_waypoint._postgres import isolated_store, server_dsn
from waypoint import EventKind, ExecutionStatus
from waypoint.stores.postgres import PostgresStore

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

CHILD = Path(__file__).with_name("postgres_child.py")


@pytest.fixture
async def pg() -> AsyncIterator[PostgresStore]:
    async with isolated_store() as store:
        yield store


def _argv(mode: str, store: PostgresStore, config: dict[str, Any]) -> list[str]:
    config = {"dsn": server_dsn(), "schema": store.schema, **config}
    return [sys.executable, str(CHILD), mode, json.dumps(config)]


class Child:
    """A worker process that speaks one JSON object per line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def spawn(cls, mode: str, store: PostgresStore, **config: Any) -> Child:
        process = await asyncio.create_subprocess_exec(
            *_argv(mode, store, config),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def said(self, timeout: float = 30) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        assert line, f"child exited with {await self.process.wait()}"
        result: dict[str, Any] = json.loads(line)
        return result

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()


def _unreaped(mode: str, store: PostgresStore, **config: Any) -> Any:
    # Popen, not asyncio: asyncio reaps a child as soon as it dies, and this
    # one must stay a zombie after SIGKILL (see the test below).
    return subprocess.Popen(_argv(mode, store, config), stdout=subprocess.PIPE)


async def _body_runs(store: PostgresStore, execution_id: str) -> dict[int, int]:
    counts = await store.effect_counts(prefix=f"body:{execution_id}:")
    return {int(key.rsplit(":", 1)[1]): n for key, n in counts.items()}


async def _wait_for_steps(store: PostgresStore, total: int) -> None:
    # Count committed checkpoints, not body runs: a body's effect lands
    # before its checkpoint, and killing the starter in between would make
    # that step run again, rightly, and the exactly-once count fail.
    import asyncpg

    conn = await asyncpg.connect(
        server_dsn(), server_settings={"search_path": store.schema or "public"}
    )

    async def steps() -> int:
        return int(await conn.fetchval("SELECT count(*) FROM steps"))

    try:
        for _ in range(1000):
            if await steps() >= total:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"the starter recorded {await steps()} of {total} steps")
    finally:
        await conn.close()


async def test_two_processes_resuming_one_execution_exactly_one_runs(
    pg: PostgresStore,
) -> None:
    starter = await Child.spawn(
        "start", pg, ids=["race"], count=3, block_at=1, lease=30
    )
    try:
        assert await starter.said() == {"started": 1}
        await _wait_for_steps(pg, 1)
    finally:
        await starter.kill()
    children = [
        await Child.spawn("resume", pg, id="race", lease=30, step_seconds=0.5)
        for _ in range(2)
    ]
    try:
        for child in children:
            assert await child.said() == {"ready": True}
        for child in children:
            assert child.process.stdin is not None
            child.process.stdin.write(b"go\n")
        results = [await child.said() for child in children]
    finally:
        for child in children:
            await child.kill()

    outputs = [r["output"] for r in results if "output" in r]
    busy = [r["busy"] for r in results if "busy" in r]
    assert outputs == [0 + 10 + 20]
    assert len(busy) == 1
    assert busy[0]
    assert await _body_runs(pg, "race") == {0: 1, 1: 1, 2: 1}
    assert (await pg.get_execution("race")).status is ExecutionStatus.COMPLETED


async def test_four_workers_recover_fifty_killed_executions_once_each(
    pg: PostgresStore,
) -> None:
    ids = [f"x{n:02d}" for n in range(50)]
    # The killed starter stays an unreaped zombie, so the workers cannot see
    # that it died (as with a runner on another host): they wait for its short
    # lease to expire and take the executions over through claim_expired
    # (FOR UPDATE SKIP LOCKED).
    starter = _unreaped("start", pg, ids=ids, count=4, block_at=2, lease=1.0)
    try:
        line = await asyncio.wait_for(asyncio.to_thread(starter.stdout.readline), 30)
        assert json.loads(line) == {"started": 50}
        await _wait_for_steps(pg, 2 * len(ids))
        os.kill(starter.pid, signal.SIGKILL)
        workers = [
            await Child.spawn(
                "recover", pg, limit=5, lease=5, step_seconds=0.01, seconds=40
            )
            for _ in range(4)
        ]
        try:
            reports = [await worker.said(timeout=50) for worker in workers]
        finally:
            for worker in workers:
                await worker.kill()
    finally:
        starter.kill()
        await asyncio.to_thread(starter.wait)
        starter.stdout.close()

    recovered = [report["recovered"] for report in reports]
    every = [execution_id for taken in recovered for execution_id in taken]
    assert sorted(every) == ids, "each execution is recovered by exactly one worker"
    assert sum(1 for taken in recovered if taken) >= 2, "the work was shared"
    for execution_id in ids:
        execution = await pg.get_execution(execution_id)
        assert execution.status is ExecutionStatus.COMPLETED
        assert execution.output == 0 + 10 + 20 + 30
        assert await _body_runs(pg, execution_id) == {0: 1, 1: 1, 2: 1, 3: 1}
        kinds = [e.kind for e in await pg.history(execution_id)]
        assert kinds.count(EventKind.EXECUTION_RESUMED) == 1
