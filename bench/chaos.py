"""Crash exploration cost: a 20-step workflow, every single crash, resumed.

Beside it, 80 plain uncrashed runs of the same workflow on the same store:
the exploration is 61 crash scenarios (20 steps x 3 phases, and once before
completion) plus one reference run, each a crashed run and a resume in a
fresh runtime, so its work is close to that of 80 plain runs. Targets: under
1 s on memory, under 3 s on SQLite, within 2x the plain runs.

    python -m bench.run chaos
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.common import Figure, timed
from pytest_waypoint.harness import Chaos
from waypoint import MemoryStore, SQLiteStore, Store, Waypoint, checkpoint, workflow

STEPS = 20
PLAIN_RUNS = 80
SECTION = "chaos"
ROUNDS = 5


@checkpoint
async def bench_step(n: int) -> int:
    return n + 1


@workflow(name="bench_chaos_twenty_steps")
async def twenty_steps(start: int) -> int:
    value = start
    for _ in range(STEPS):
        value = await bench_step(value)
    return value


async def _explore(store: Store) -> int:
    report = await Chaos(store).explore(twenty_steps, 0)
    return len(report.scenarios)


async def _plain(store: Store) -> None:
    async with Waypoint(store) as runtime:
        for _ in range(PLAIN_RUNS):
            await runtime.run(twenty_steps, 0)


async def _measure_store(label: str, store: Store) -> list[Figure]:
    await store.open()
    try:
        await _explore(store)  # warm up: codecs, statements, the schema
        scenarios = 0

        async def explore() -> None:
            nonlocal scenarios
            scenarios = await _explore(store)

        # The best of a few rounds: each takes milliseconds, so one round
        # measures the machine's other work as much as ours.
        explored = min([await timed(explore) for _ in range(ROUNDS)])
        plain = min([await timed(lambda: _plain(store)) for _ in range(ROUNDS)])
    finally:
        await store.close()
    return [
        Figure(
            SECTION,
            f"{label}: explore {STEPS} steps ({scenarios} scenarios + reference)",
            explored,
            "s",
            "target < 1 s" if label == "memory" else "target < 3 s",
        ),
        Figure(SECTION, f"{label}: {PLAIN_RUNS} plain runs", plain, "s"),
        Figure(
            SECTION,
            f"{label}: exploration / plain runs",
            explored / plain,
            "x",
            "target <= 2",
        ),
    ]


async def measure() -> list[Figure]:
    figures = await _measure_store("memory", MemoryStore())
    with tempfile.TemporaryDirectory(prefix="waypoint-bench-") as scratch:
        sqlite = SQLiteStore(Path(scratch) / "chaos.db")
        figures += await _measure_store("sqlite", sqlite)
    return figures
