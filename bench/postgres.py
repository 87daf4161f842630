"""Per-step cost on PostgresStore, beside its floor and beside DBOS Transact.

    python -m bench.postgres               (or: python -m bench.run postgres)

All figures come from one server (``WAYPOINT_TEST_DSN`` or the local
default), in scratch schemas dropped afterwards. The floor of a step is a
bare asyncpg INSERT, in autocommit, of a row of the checkpoint's shape into a
scratch table; floor and store runs alternate, so a noisy neighbour weighs on
both alike; each figure is the median of :data:`REPEATS` runs, and the
ratio the median of the ratios of the pairs.

A second ratio takes turns at the finest grain: one workflow whose loop makes
a floor INSERT, then a step, :data:`TURN_ABOUT_STEPS` times, each timed on its
own. The two then run with the same load and the same state of the CPU's
caches, which a loop of bare INSERTs keeps warmer than a workflow can. DBOS
(``pip install -r bench/requirements.txt``; see bench/dbos_bench.py) is
measured when it imports and runs, with its system tables in a database of its
own on the same server; otherwise the reason is printed instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import ClassVar

from bench.common import Figure
from pytest_waypoint._postgres import isolated_store, server_dsn, unavailable_reason
from waypoint import Waypoint, checkpoint, workflow
from waypoint.hooks import CrashSite, SimulatedCrash, armed
from waypoint.ids import new_execution_id
from waypoint.stores.postgres import PostgresStore

SECTION = "postgres"
STEPS = 1_000
#: Each figure is the median of this many runs, to damp a noisy neighbour.
REPEATS = 15
#: Steps of the turn-about workflow (each beside one floor INSERT).
TURN_ABOUT_STEPS = 3_000
CONCURRENCY = (1, 10, 100)
#: Steps per execution in the concurrency runs: enough to dwarf start-up.
CONCURRENT_STEPS = 100


@checkpoint
async def pg_trivial(i: int) -> int:
    return i


@workflow(name="bench_pg_many_steps")
async def pg_many_steps(n: int) -> int:
    for i in range(n):
        await pg_trivial(i)
    return n


class _TurnAbout:
    """What the turn-about workflow needs from the bench, and what it measured.

    Module state rather than arguments: the workflow's arguments are journaled
    as JSON, and a connection is not data.
    """

    insert: Callable[[int], Awaitable[object]] | None = None
    #: (floor INSERT, step) nanoseconds, one pair per step.
    timings: ClassVar[list[tuple[int, int]]] = []


@workflow(name="bench_pg_turn_about")
async def pg_turn_about(n: int) -> int:
    insert = _TurnAbout.insert
    assert insert is not None, "set _TurnAbout.insert before running"
    clock = time.perf_counter_ns
    for i in range(n):
        start = clock()
        await insert(i)
        between = clock()
        await pg_trivial(i)
        _TurnAbout.timings.append((between - start, clock() - between))
    return n


def _crash_before_complete(site: CrashSite) -> None:
    if site.step is None:
        raise SimulatedCrash(site)


async def _store_run(wp: Waypoint) -> float:
    """Seconds per step of one run of the workflow on PostgresStore."""
    start = time.perf_counter()
    await wp.run(pg_many_steps, STEPS)
    return (time.perf_counter() - start) / STEPS


async def _replay_per_step(wp: Waypoint) -> float:
    runs = []
    for n in range(REPEATS):
        execution_id = f"replay-{n}"
        with armed(_crash_before_complete), contextlib.suppress(SimulatedCrash):
            await wp.run(pg_many_steps, STEPS, execution_id=execution_id)
        start = time.perf_counter()
        await wp.resume(execution_id)
        runs.append((time.perf_counter() - start) / STEPS)
    return statistics.median(runs)


@contextlib.asynccontextmanager
async def _floor_table(
    dsn: str, schema: str | None
) -> AsyncIterator[Callable[[str], Awaitable[float]]]:
    """A scratch table, and a run of the floor on it: seconds per INSERT.

    The table sits in the store's schema and the connection has the store's
    session settings, so that the two differ only in what they send.
    """
    import asyncpg

    conn = await asyncpg.connect(
        dsn, server_settings={"search_path": schema} if schema else None
    )
    table = f"wp_floor_{secrets.token_hex(4)}"

    async def run(execution_id: str) -> float:
        start = time.perf_counter()
        for i in range(STEPS):
            now = time.time()
            await conn.execute(
                insert, execution_id, i, "pg_trivial", 1, "0" * 16, str(i), now, now
            )
        return (time.perf_counter() - start) / STEPS

    try:
        await conn.execute(
            f"CREATE TABLE {table} (execution_id text, position int, step text, "
            "attempt int, args_hash text, result text, started_at timestamptz, "
            "completed_at timestamptz, PRIMARY KEY (execution_id, position))"
        )
        insert = (
            f"INSERT INTO {table} VALUES ($1, $2, $3, $4, $5, $6, "
            "to_timestamp($7::float8), to_timestamp($8::float8))"
        )
        yield run
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()


async def _per_step_and_floor(
    dsn: str, wp: Waypoint
) -> tuple[float, float, list[float]]:
    """The store's and the floor's cost per step, run turn about.

    Floor, store, floor, store, ...: a neighbour's load on this small machine
    then weighs on both of a pair alike. Returns the medians of each, and the
    ratio of each pair (store over the floor run just before it).
    """
    assert isinstance(wp.store, PostgresStore)
    async with _floor_table(dsn, wp.store.schema) as floor_run:
        await wp.run(pg_many_steps, 10)  # warm-up: pool, prepared statements
        await floor_run(new_execution_id())
        floors, stores = [], []
        for _ in range(REPEATS):
            # An id of the journal's own shape: the key's length is part of
            # what the index costs.
            floors.append(await floor_run(new_execution_id()))
            stores.append(await _store_run(wp))
    ratios = [store / floor for store, floor in zip(stores, floors, strict=True)]
    return statistics.median(stores), statistics.median(floors), ratios


async def _turn_about(dsn: str, wp: Waypoint) -> tuple[float, float]:
    """Median seconds of a floor INSERT and of a step, taken turn about."""
    import asyncpg

    assert isinstance(wp.store, PostgresStore)
    schema = wp.store.schema
    conn = await asyncpg.connect(
        dsn, server_settings={"search_path": schema} if schema else None
    )
    table = f"wp_turn_{secrets.token_hex(4)}"
    execution_id = new_execution_id()

    async def insert(i: int) -> object:
        now = time.time()
        return await conn.execute(
            row_insert, execution_id, i, "pg_trivial", 1, "0" * 16, str(i), now, now
        )

    try:
        await conn.execute(
            f"CREATE TABLE {table} (execution_id text, position int, step text, "
            "attempt int, args_hash text, result text, started_at timestamptz, "
            "completed_at timestamptz, PRIMARY KEY (execution_id, position))"
        )
        row_insert = (
            f"INSERT INTO {table} VALUES ($1, $2, $3, $4, $5, $6, "
            "to_timestamp($7::float8), to_timestamp($8::float8))"
        )
        _TurnAbout.insert = insert
        _TurnAbout.timings.clear()
        await wp.run(pg_turn_about, TURN_ABOUT_STEPS)
        # The first steps warm the statement caches of both connections.
        timings = _TurnAbout.timings[TURN_ABOUT_STEPS // 10 :]
        floor = statistics.median(pair[0] for pair in timings) / 1e9
        step = statistics.median(pair[1] for pair in timings) / 1e9
    finally:
        _TurnAbout.insert = None
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()
    return step, floor


async def _throughput(wp: Waypoint, executions: int) -> float:
    start = time.perf_counter()
    await asyncio.gather(
        *(wp.run(pg_many_steps, CONCURRENT_STEPS) for _ in range(executions))
    )
    return executions * CONCURRENT_STEPS / (time.perf_counter() - start)


async def measure() -> list[Figure]:
    dsn = server_dsn()
    reason = await unavailable_reason(dsn)
    if reason is not None:
        return [Figure(SECTION, "skipped", 0, "", reason)]
    # A scratch schema, migrated, and dropped afterwards.
    async with isolated_store(dsn, max_size=20) as store, Waypoint(store) as wp:
        per_step, floor, ratios = await _per_step_and_floor(dsn, wp)
        turn_step, turn_floor = await _turn_about(dsn, wp)
        replay = await _replay_per_step(wp)
        rates = {n: await _throughput(wp, n) for n in CONCURRENCY}
    us = 1e6
    figures = [
        Figure(
            SECTION,
            f"PostgresStore, per step ({STEPS:,}-step workflow)",
            per_step * us,
            "µs",
        ),
        Figure(
            SECTION, "floor: bare asyncpg INSERT per step, autocommit", floor * us, "µs"
        ),
        Figure(
            SECTION,
            "PostgresStore / floor, median of the pairs",
            statistics.median(ratios),
            "x",
            f"target <= 1.2; pairs from {min(ratios):.2f} to {max(ratios):.2f}",
        ),
        Figure(
            SECTION,
            "turn about, step by step: step / floor INSERT",
            turn_step / turn_floor,
            "x",
            f"{turn_step * us:.0f} µs / {turn_floor * us:.0f} µs, median of "
            f"{TURN_ABOUT_STEPS - TURN_ABOUT_STEPS // 10:,}",
        ),
        Figure(SECTION, "PostgresStore, replay per recorded step", replay * us, "µs"),
    ]
    figures += [
        Figure(SECTION, f"steps/second, {n} execution(s) at once", rate, "steps/s")
        for n, rate in rates.items()
    ]
    figures += await _dbos(dsn, per_step, replay)
    return figures


async def _dbos(dsn: str, per_step: float, replay: float) -> list[Figure]:
    """The same workflow under DBOS Transact, when it is installed and runs."""
    try:
        from bench import dbos_bench
    except ImportError as exc:
        reason = f"not measured: {exc} (pip install -r bench/requirements.txt)"
        return [Figure(SECTION, "DBOS Transact", 0, "", reason)]
    try:
        dbos_step, dbos_replay = await asyncio.to_thread(dbos_bench.measure, dsn, STEPS)
    except Exception as exc:  # the bench reports, it never fails the run
        reason = f"not measured: {type(exc).__name__}: {exc}"
        return [Figure(SECTION, dbos_bench.LABEL, 0, "", reason)]
    us = 1e6
    return [
        Figure(SECTION, f"{dbos_bench.LABEL}, per step", dbos_step * us, "µs"),
        Figure(
            SECTION,
            "DBOS / PostgresStore, per step",
            dbos_step / per_step,
            "x",
            "target >= 5",
        ),
        Figure(
            SECTION,
            f"{dbos_bench.LABEL}, replay per recorded step",
            dbos_replay * us,
            "µs",
            "its steps only, not its dispatch",
        ),
        Figure(
            SECTION,
            "DBOS / PostgresStore, replay per step",
            dbos_replay / replay,
            "x",
            "target >= 100",
        ),
    ]


def _main() -> None:
    for figure in asyncio.run(measure()):
        print(figure.line())


if __name__ == "__main__":
    _main()


__all__ = ["measure"]
