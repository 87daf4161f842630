"""Concurrent resumers: many runtimes race to resume one crashed execution.

Whoever claims the lease first runs it; the rest are refused while it runs or
get the recorded output afterwards. The journal and the effect ledger, read
afterwards, show that each step ran once, each checkpoint was written once and
each effect was requested once more only for the step the crash interrupted.
"""

from __future__ import annotations

from collections import Counter

import pytest
import workflows_for_kill as wfk

from pytest_waypoint.kill import ChildStatus, child_dsn, run_child
from pytest_waypoint.race import (
    RaceReport,
    ResumerResult,
    ResumerRole,
    race_resumer_processes,
    race_resumers,
)
from pytest_waypoint.schedule import parse_point
from waypoint import EventKind, ExecutionStatus, MemoryStore, Store, Waypoint
from waypoint.errors import ConfigurationError
from waypoint.hooks import CrashSite, SimulatedCrash, armed

CRASH = parse_point("fetch#2@after_effect")
EXPECTED = "ITEM-0,ITEM-1,ITEM-2,ITEM-3"


async def _crash_in_process(store: Store, execution_id: str) -> None:
    def hook(site: CrashSite) -> None:
        if CRASH.matches(site):
            raise SimulatedCrash(site)

    async with Waypoint(store) as wp:
        with pytest.raises(SimulatedCrash), armed(hook):
            await wp.run(wfk.pipeline, 4, execution_id=execution_id)


async def _check_journal(store: Store, execution_id: str, steps: int) -> None:
    history = await store.history(execution_id)
    completed = Counter(
        e.position for e in history if e.kind is EventKind.STEP_COMPLETED
    )
    terminal = [e for e in history if e.kind is EventKind.EXECUTION_COMPLETED]
    assert completed == dict.fromkeys(range(steps), 1)
    assert len(terminal) == 1
    ledger = await store.effect_counts(prefix=f"{execution_id}|")
    # Each step requested its effect once under its own key; the step the
    # crash interrupted requested it once more (one re-run, not one per racer).
    assert len(ledger) == steps
    assert sorted(ledger.values()) == [1] * (steps - 1) + [2]
    execution = await store.get_execution(execution_id)
    assert execution.status is ExecutionStatus.COMPLETED
    assert execution.output == EXPECTED


def _check_race(report: RaceReport, racers: int) -> None:
    assert report.problems() == []
    assert len(report.results) == racers
    (runner,) = report.runners
    assert runner.phase_points(CRASH.phase)[0] == "fetch#2@after_effect"
    others = [r for r in report.results if r is not runner]
    assert all(r.role in (ResumerRole.BUSY, ResumerRole.REPLAYED) for r in others)


@pytest.mark.parametrize("racers", [2, 5])
async def test_tasks_sharing_one_store_resume_it_once(
    store: Store, racers: int
) -> None:
    await _crash_in_process(store, "race")

    report = await race_resumers(store, "race", racers)

    _check_race(report, racers)
    await _check_journal(store, "race", 5)


async def test_runtimes_with_their_own_connections_resume_it_once(
    db_store: Store,
) -> None:
    store = db_store
    await _crash_in_process(store, "race")

    report = await race_resumers(child_dsn(store), "race", 4)

    _check_race(report, 4)
    await _check_journal(store, "race", 5)


@pytest.mark.slow
async def test_processes_race_to_resume_a_killed_run(db_store: Store) -> None:
    store = db_store
    dsn = child_dsn(store)
    crashed = await run_child(
        "workflows_for_kill:pipeline",
        dsn=dsn,
        execution_id="race",
        args_json="[4]",
        crash_at=CRASH,
    )
    assert crashed.status is ChildStatus.CRASHED

    report = await race_resumer_processes(
        "workflows_for_kill:pipeline", dsn=dsn, execution_id="race", resumers=3
    )

    _check_race(report, 3)
    assert len({r.pid for r in report.results}) == 3
    await _check_journal(store, "race", 5)


async def test_a_finished_execution_is_replayed_to_every_racer() -> None:
    store = MemoryStore()
    async with Waypoint(store) as wp:
        await wp.run(wfk.pipeline, 4, execution_id="done")

    report = await race_resumers(store, "done", 3)

    assert {r.role for r in report.results} == {ResumerRole.REPLAYED}
    assert "0 resumers ran" in report.problems()[0]


def test_problems_name_a_step_run_by_two_resumers() -> None:
    twice = ("fetch#1@before", "fetch#1@after_effect", "fetch#1@after_commit")
    report = RaceReport(
        "x",
        (
            ResumerResult(0, ResumerRole.RAN, twice, '"A"'),
            ResumerResult(1, ResumerRole.RAN, twice, '"B"'),
        ),
    )

    problems = report.problems()

    assert "2 resumers ran execution x, not exactly one" in problems
    assert "2 resumers ran the body of step fetch#1" in problems
    assert "2 resumers committed step fetch#1" in problems
    assert any("different outputs" in p for p in problems)


async def test_a_race_needs_two_resumers() -> None:
    with pytest.raises(ConfigurationError, match="at least 2 resumers, not 1"):
        await race_resumers(MemoryStore(), "x", 1)
