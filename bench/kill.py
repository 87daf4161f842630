"""Kill mode versus in-process crashes: scenarios per second, same workflow.

A scenario is one crash and the resume after it, on a 20-step workflow,
played by ``Chaos.explore`` with the invariants checked after each. In
process, the crash is an exception and the resume a fresh runtime
(``mode="inprocess"``); in kill mode, both are child processes forked from a
warm zygote and the crash is SIGKILL (``mode="kill"``). Both modes play every
single crash; the first kill-mode figure includes starting the zygote. Run
from the repository root (the children import this module as ``bench.kill``):

    .venv/bin/python -m bench.kill
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from bench.common import Figure
from pytest_waypoint._postgres import isolated_store, server_dsn, unavailable_reason
from pytest_waypoint.harness import Chaos
from pytest_waypoint.kill import ChildStatus, child_dsn, run_child
from pytest_waypoint.schedule import CrashPoint
from pytest_waypoint.search import ordered_points
from waypoint import SQLiteStore, Store, Waypoint, checkpoint, workflow

SECTION = "kill mode"
STEPS = 20

#: Scenarios in kill mode: every point of the workflow (61), as in process;
#: each costs two children, a few milliseconds each once forked.
KILL_SCENARIOS = 61

TARGET = "bench.kill:twenty_steps"


@checkpoint
async def bench_step(i: int) -> int:
    return i


@workflow
async def twenty_steps(n: int = STEPS) -> int:
    total = 0
    for i in range(n):
        total += await bench_step(i)
    return total


def _points() -> list[CrashPoint]:
    return ordered_points([("bench_step", k) for k in range(1, STEPS + 1)])


async def _explored(store: Store, mode: str, budget: int) -> tuple[float, int]:
    """Scenarios per second of one exploration (its reference run included)."""
    chaos = Chaos(store, mode=mode, max_scenarios=budget, seed=1)
    start = time.perf_counter()
    report = await chaos.explore(twenty_steps)
    return len(report.scenarios) / (time.perf_counter() - start), len(report.scenarios)


async def _killed(
    store: Store, points: list[CrashPoint], *, resume_here: bool = False
) -> float:
    dsn = child_dsn(store)
    start = time.perf_counter()
    for n, point in enumerate(points):
        execution_id = f"kill-{n}-{resume_here}"
        crashed = await run_child(
            TARGET, dsn=dsn, execution_id=execution_id, crash_at=point
        )
        if resume_here:
            async with Waypoint(store) as fresh:
                output = await fresh.resume(execution_id)
        else:
            resumed = await run_child(
                TARGET, dsn=dsn, execution_id=execution_id, resume=True
            )
            output = resumed.output()
        if crashed.status is not ChildStatus.CRASHED or output != 190:
            raise RuntimeError(
                f"kill-mode scenario {point} went wrong: {crashed.describe()}; "
                f"then the resume returned {output!r}"
            )
    return len(points) / (time.perf_counter() - start)


@contextlib.asynccontextmanager
async def _sqlite() -> AsyncIterator[Store]:
    with tempfile.TemporaryDirectory() as tmp:
        async with SQLiteStore(Path(tmp) / "bench.db") as store:
            yield store


async def _figures(backend: str, store: Store) -> list[Figure]:
    points = _points()
    step = len(points) // KILL_SCENARIOS
    sample = points[::step][:KILL_SCENARIOS]
    in_process, explored = await _explored(store, "inprocess", len(points))
    killed, sampled = await _explored(store, "kill", KILL_SCENARIOS)
    killed_here = await _killed(store, sample, resume_here=True)
    return [
        Figure(
            SECTION,
            f"{backend}: explore(mode='inprocess')",
            in_process,
            "scen/s",
        ),
        Figure(
            SECTION,
            f"{backend}: explore(mode='kill'): SIGKILL child + child resume",
            killed,
            "scen/s",
        ),
        Figure(
            SECTION,
            f"{backend}: SIGKILL child + resume in the parent",
            killed_here,
            "scen/s",
        ),
        Figure(
            SECTION,
            f"{backend}: kill mode cost per scenario",
            in_process / killed,
            "x",
            f"{explored} in-process, {sampled} killed scenarios",
        ),
    ]


async def measure() -> list[Figure]:
    """Scenarios per second of both modes on SQLite and, if up, PostgreSQL."""
    async with _sqlite() as store:
        figures = await _figures("sqlite", store)
    reason = await unavailable_reason(server_dsn())
    if reason is not None:
        figures.append(Figure(SECTION, "postgres: skipped", 0, "", reason))
        return figures
    async with isolated_store() as pg:
        figures += await _figures("postgres", pg)
    return figures


if __name__ == "__main__":
    for figure in asyncio.run(measure()):
        print(figure.line())
