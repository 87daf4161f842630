"""The 1,000-step workflow under DBOS Transact, on the same PostgreSQL server.

Imported lazily by bench/postgres.py, and only there: ``dbos`` is installed from
bench/requirements.txt and is never a dependency of waypoint-sdk. DBOS keeps its
system tables in a database of its own (:data:`DATABASE`), created fresh here
(a leftover from an interrupted run is dropped first) and dropped afterwards,
so its migrations never touch the database the Waypoint figures use.

The workflow and its steps are DBOS's *sync* form (``def``, not ``async def``):
DBOS 3.x supports async workflows and steps, but runs every system-database call
of an async step through ``asyncio.to_thread``, a thread hop per call that the
sync form does not pay: here async ran about 15% slower per step, so the sync
form is DBOS at its fastest.

Replay: a run of the workflow raises :class:`_Crash` (a ``BaseException``, which
DBOS does not record as the workflow's error, just as a killed process records
nothing) right before it would return, which leaves it PENDING with every step
recorded. ``DBOS.resume_workflow`` then hands it back to this process, which
re-runs the workflow function; each step returns its recorded output. DBOS
dispatches a resumed workflow through its internal queue, whose polling delay
is not DBOS's replay cost, so the replay is timed inside the workflow function,
from its first step to its last: a lower bound on DBOS's replay of a step.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import statistics
import time
import uuid

from dbos import DBOS, DBOSConfig, SetWorkflowID

#: The database DBOS's system tables live in, on the server of the bench DSN.
DATABASE = "wp_bench_dbos"
#: Each figure is the median of this many runs, after one warm-up run.
REPEATS = 5
#: What was measured, for the figures' labels.
LABEL = f"DBOS Transact {importlib.metadata.version('dbos')}, sync steps"

#: Workflow IDs whose next run crashes right before it would return.
_crash_before_return: set[str] = set()
#: Seconds each workflow run spent in its loop of steps, by workflow ID.
_loop_seconds: dict[str, float] = {}


class _Crash(BaseException):
    """A crash right before the workflow returns: DBOS records no outcome."""


@DBOS.step()
def dbos_trivial(i: int) -> int:
    return i


@DBOS.workflow(name="bench_dbos_many_steps")
def dbos_many_steps(n: int) -> int:
    workflow_id = DBOS.workflow_id
    assert workflow_id is not None
    start = time.perf_counter()
    for i in range(n):
        dbos_trivial(i)
    _loop_seconds[workflow_id] = time.perf_counter() - start
    if workflow_id in _crash_before_return:
        _crash_before_return.discard(workflow_id)
        raise _Crash(workflow_id)
    return n


def _database_dsn(dsn: str, database: str) -> str:
    """``dsn`` with its database replaced by ``database``."""
    from sqlalchemy.engine import make_url

    return make_url(dsn).set(database=database).render_as_string(hide_password=False)


async def _create_database(dsn: str) -> None:
    """A fresh, empty :data:`DATABASE`.

    One left behind by an interrupted run is dropped first: DBOS would recover
    its PENDING workflows at launch, and they would run beside the measurement.
    """
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await conn.close()


async def _drop_database(dsn: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    finally:
        await conn.close()


def _per_step(steps: int) -> float:
    runs = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        dbos_many_steps(steps)
        runs.append((time.perf_counter() - start) / steps)
    return statistics.median(runs)


def _replay_per_step(steps: int) -> float:
    runs = []
    for _ in range(REPEATS):
        workflow_id = f"bench-replay-{uuid.uuid4()}"
        _crash_before_return.add(workflow_id)
        try:
            with SetWorkflowID(workflow_id):
                dbos_many_steps(steps)
        except _Crash:
            pass
        status = DBOS.get_workflow_status(workflow_id)
        if status is None or status.status != "PENDING":
            raise RuntimeError(f"crashed workflow is not PENDING: {status}")
        handle = DBOS.resume_workflow(workflow_id)
        if handle.get_result() != steps:
            raise RuntimeError("the resumed workflow returned a wrong result")
        runs.append(_loop_seconds[workflow_id] / steps)
    return statistics.median(runs)


def measure(dsn: str, steps: int) -> tuple[float, float]:
    """Seconds per step and per replayed step of a ``steps``-step workflow.

    Runs in a thread of its own (DBOS blocks), and leaves nothing behind: DBOS is
    destroyed, with its background threads, and its database is dropped.
    """
    asyncio.run(_create_database(dsn))
    try:
        config: DBOSConfig = {
            "name": "waypoint-bench",
            "system_database_url": _database_dsn(dsn, DATABASE),
            "log_level": "WARNING",
        }
        DBOS(config=config)
        try:
            DBOS.launch()
            dbos_many_steps(10)  # warm-up: connections, caches
            return _per_step(steps), _replay_per_step(steps)
        finally:
            DBOS.destroy()
    finally:
        asyncio.run(_drop_database(dsn))


__all__ = ["DATABASE", "LABEL", "measure"]
