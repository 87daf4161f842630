"""Per-step cost on the memory and SQLite stores, and the cost of replay.

Every figure is measured in this run, on this machine, beside its floor:
the floor of a step on SQLite is a bare sqlite3 INSERT and COMMIT of a row
of the same shape, in the same journal mode and synchronous setting.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import Figure
from waypoint import MemoryStore, SQLiteStore, Store, Waypoint, checkpoint, workflow
from waypoint.hooks import CrashSite, SimulatedCrash, armed

SECTION = "core"
STEPS = 1_000
REPLAY_STEPS = 10_000
#: Each figure is the median of this many runs, to damp a noisy neighbour.
REPEATS = 5


@checkpoint
async def trivial(i: int) -> int:
    return i


@workflow
async def many_steps(n: int) -> int:
    for i in range(n):
        await trivial(i)
    return n


def _crash_before_complete(site: CrashSite) -> None:
    if site.step is None:
        raise SimulatedCrash(site)


async def _per_step(store: Store, n: int) -> float:
    async with Waypoint(store) as wp:
        await wp.run(many_steps, 10)  # warm caches and adapters
        runs = []
        for _ in range(REPEATS):
            start = time.perf_counter()
            await wp.run(many_steps, n)
            runs.append((time.perf_counter() - start) / n)
    return statistics.median(runs)


def _sqlite_floor(path: Path, n: int) -> float:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(
        "CREATE TABLE rows (execution_id TEXT, position INTEGER, step TEXT, "
        "attempt INTEGER, args_hash TEXT, result TEXT, started_at REAL, "
        "completed_at REAL)"
    )
    conn.commit()
    runs = []
    for r in range(REPEATS):
        start = time.perf_counter()
        for i in range(n):
            now = time.time()
            conn.execute(
                "INSERT INTO rows VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (f"exec-{r}", i, "trivial", 1, "0123456789abcdef", str(i), now, now),
            )
            conn.commit()
        runs.append((time.perf_counter() - start) / n)
    conn.close()
    return statistics.median(runs)


async def _replay(store: Store, n: int) -> tuple[float, float, int]:
    """First-run time, resume (replay) time, and statements run by the resume."""
    async with Waypoint(store) as wp:
        start = time.perf_counter()
        with armed(_crash_before_complete):
            with contextlib.suppress(SimulatedCrash):
                await wp.run(many_steps, n, execution_id=f"replay-{n}")
        first = time.perf_counter() - start

    statements: list[str] = []
    if isinstance(store, SQLiteStore):
        store._db.set_trace_callback(statements.append)
    async with Waypoint(store) as wp:
        start = time.perf_counter()
        await wp.resume(f"replay-{n}")
        replay = time.perf_counter() - start
    if isinstance(store, SQLiteStore):
        store._db.set_trace_callback(None)
    return first, replay, len(statements)


async def measure() -> list[Figure]:
    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        floor = _sqlite_floor(root / "floor.db", STEPS)
        memory = await _per_step(MemoryStore(), STEPS)
        sqlite_store = SQLiteStore(root / "journal.db")
        await sqlite_store.open()
        on_sqlite = await _per_step(sqlite_store, STEPS)

        def add(label: str, value: float, unit: str, note: str = "") -> None:
            figures.append(Figure(SECTION, label, value, unit, note))

        add("floor: sqlite3 INSERT + COMMIT per row (WAL, NORMAL)", floor * 1e6, "us")
        add(f"step cost, {STEPS}-step workflow, MemoryStore", memory * 1e6, "us")
        add(f"step cost, {STEPS}-step workflow, SQLiteStore", on_sqlite * 1e6, "us")
        add("SQLite step cost / floor", on_sqlite / floor, "x", "target <= 2")

        for store in (MemoryStore(), sqlite_store):
            name = type(store).__name__
            first, replay, statements = await _replay(store, REPLAY_STEPS)
            add(f"first run, {REPLAY_STEPS} steps, {name}", first * 1e3, "ms")
            add(f"resume replaying {REPLAY_STEPS} steps, {name}", replay * 1e3, "ms")
            add(
                f"replay cost per recorded step, {name}",
                replay / REPLAY_STEPS * 1e6,
                "us",
                "target <= 5",
            )
            if isinstance(store, SQLiteStore):
                add(
                    f"SQL statements run by that resume ({REPLAY_STEPS} steps)",
                    statements,
                    "stmts",
                    "no query per replayed step",
                )
        await sqlite_store.close()
    return figures


if __name__ == "__main__":
    for figure in asyncio.run(measure()):
        print(figure.line())
