"""Schedule search: every feasible schedule when few, a seeded sample if not."""

from __future__ import annotations

import itertools

import pytest
import workflows_for_kill as wfk

from pytest_waypoint.schedule import CrashPoint, Schedule, parse_point
from pytest_waypoint.search import derive_seed, ordered_points, plan_schedules
from waypoint import MemoryStore, Waypoint
from waypoint.errors import ConfigurationError
from waypoint.hooks import CrashHook, CrashPhase, CrashSite, SimulatedCrash, armed

SMALL = [("fetch", 1), ("fetch", 2), ("publish", 1)]
TWENTY = [("step", k) for k in range(1, 21)]


def _can_follow(
    first: CrashPoint, second: CrashPoint, points: list[CrashPoint]
) -> bool:
    """The rule for a sequential workflow, written out independently: the
    resume after ``first`` starts at first's step, or after it once committed."""
    if first.phase is CrashPhase.BEFORE_COMPLETE:
        return second.phase is CrashPhase.BEFORE_COMPLETE
    start = points.index(CrashPoint(first.step, first.occurrence, CrashPhase.BEFORE))
    if first.phase is CrashPhase.AFTER_COMMIT:
        start += 3
    return points.index(second) >= start


def test_small_workflows_get_every_single_and_every_feasible_pair() -> None:
    points = ordered_points(SMALL)

    plan = plan_schedules(SMALL, max_crashes=2)

    pairs = {
        Schedule((a, b))
        for a, b in itertools.product(points, repeat=2)
        if _can_follow(a, b, points)
    }
    singles = {Schedule((p,)) for p in points}
    assert plan.exhaustive
    assert set(plan.schedules) == singles | pairs
    assert len(plan.schedules) == len(singles | pairs) == plan.total
    assert [len(s) for s in plan.schedules] == sorted(len(s) for s in plan.schedules)
    assert plan.description.startswith("exhaustive: all 65 feasible schedules")


def test_a_step_that_was_not_committed_can_crash_again_in_the_resume() -> None:
    plan = plan_schedules(SMALL, max_crashes=2)
    texts = {str(s) for s in plan.schedules}

    assert "fetch#1@after_effect,fetch#1@before" in texts
    assert "fetch#1@before,fetch#1@before" in texts
    assert "fetch#1@after_commit,fetch#1@before" not in texts
    assert "@before_complete,fetch#1@before" not in texts
    assert "@before_complete,@before_complete" in texts


def test_three_crashes_are_counted_and_listed_alike() -> None:
    plan = plan_schedules(SMALL, max_crashes=3)

    assert plan.exhaustive
    assert len(set(plan.schedules)) == len(plan.schedules) == plan.total
    assert max(len(s) for s in plan.schedules) == 3


def test_over_the_budget_it_samples_and_says_so() -> None:
    plan = plan_schedules(TWENTY, max_crashes=2, budget=300, seed=7)

    assert not plan.exhaustive
    assert len(plan.schedules) == 300
    assert plan.total == 61 + 1891
    assert {Schedule((p,)) for p in ordered_points(TWENTY)} <= set(plan.schedules)
    assert plan.description.startswith("sampled: 300 of 1,952 feasible schedules")
    assert "seed 7" in plan.description


def test_a_twenty_step_workflow_fits_the_default_budget_exhaustively() -> None:
    plan = plan_schedules(TWENTY, max_crashes=2)

    assert plan.exhaustive
    assert len(plan.schedules) == 1952


def test_a_sample_depends_on_the_seed_only() -> None:
    first = plan_schedules(TWENTY, max_crashes=3, budget=200, seed=1)
    again = plan_schedules(TWENTY, max_crashes=3, budget=200, seed=1)
    other = plan_schedules(TWENTY, max_crashes=3, budget=200, seed=2)

    assert first.schedules == again.schedules
    assert first.schedules != other.schedules


def test_sampled_schedules_are_feasible() -> None:
    points = ordered_points(TWENTY)

    plan = plan_schedules(TWENTY, max_crashes=2, budget=150, seed=3)

    for schedule in plan.schedules:
        if len(schedule) == 2:
            first, second = schedule.points
            assert _can_follow(first, second, points), str(schedule)


def test_a_budget_smaller_than_the_singles_samples_singles() -> None:
    plan = plan_schedules(TWENTY, max_crashes=2, budget=10, seed=5)

    assert len(plan.schedules) == 10
    assert all(len(s) == 1 for s in plan.schedules)


def test_crash_points_in_hook_order_are_taken_as_given() -> None:
    # Under asyncio.gather both fetches start before either commits, so a
    # crash after fetch#2's commit leaves fetch#1 to run again.
    trace = [
        parse_point(p)
        for p in (
            "fetch#1@before",
            "fetch#2@before",
            "fetch#1@after_effect",
            "fetch#2@after_effect",
            "fetch#2@after_commit",
            "fetch#1@after_commit",
            "@before_complete",
        )
    ]

    plan = plan_schedules(trace, max_crashes=2)

    assert "fetch#2@after_commit,fetch#1@before" in {str(s) for s in plan}


async def _play(store: MemoryStore, execution_id: str, schedule: Schedule) -> bool:
    """Run the schedule in process; True when every point fired."""
    fired: list[str] = []

    def crash_at(point: CrashPoint) -> CrashHook:
        def hook(site: CrashSite) -> None:
            if point.matches(site) and len(fired) < len(schedule):
                fired.append(site.point)
                raise SimulatedCrash(site)

        return hook

    for i, point in enumerate(schedule):
        async with Waypoint(store) as wp:
            run = (
                wp.run(wfk.pipeline, 2, execution_id=execution_id)
                if i == 0
                else wp.resume(execution_id)
            )
            with pytest.raises(SimulatedCrash), armed(crash_at(point)):
                await run
    async with Waypoint(store) as wp:
        assert await wp.resume(execution_id) == "ITEM-0,ITEM-1"
    return fired == [str(p) for p in schedule]


async def test_every_planned_schedule_really_fires_on_the_runtime() -> None:
    store = MemoryStore()
    plan = plan_schedules(SMALL, max_crashes=2)

    for n, schedule in enumerate(plan.schedules):
        assert await _play(store, f"e{n}", schedule), str(schedule)


def test_worker_seeds_derive_from_the_run_seed() -> None:
    assert derive_seed(1234, None) == derive_seed(1234, "master") == 1234
    seeds = {derive_seed(1234, f"gw{i}") for i in range(8)}
    assert len(seeds) == 8
    assert derive_seed(1234, "gw0") == derive_seed(1234, "gw0")
    assert derive_seed(1234, "gw0") != derive_seed(1235, "gw0")
    assert all(0 <= s < 2**32 for s in seeds)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_crashes": 0}, "max_crashes"),
        ({"budget": 0}, "budget"),
    ],
)
def test_bad_limits_name_the_value(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        plan_schedules(SMALL, **kwargs)
