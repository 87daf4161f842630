"""Hypothesis strategies: the right points, and shrinking toward small schedules."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import find, given, settings

from pytest_waypoint.schedule import CrashPoint, Schedule, parse_point
from pytest_waypoint.search import ordered_points
from pytest_waypoint.strategies import crash_points, schedules
from waypoint.errors import ConfigurationError
from waypoint.hooks import CrashPhase

STEPS = [("plan", 1), ("fetch", 1), ("fetch", 2), ("fetch", 3), ("write", 1)]
POINTS = ordered_points(STEPS)
QUICK = settings(max_examples=50, database=None, deadline=None)
FIND = settings(max_examples=2000, database=None, deadline=None)


def test_points_come_in_run_order_with_before_complete_last() -> None:
    assert [str(p) for p in POINTS[:4]] == [
        "plan#1@before",
        "plan#1@after_effect",
        "plan#1@after_commit",
        "fetch#1@before",
    ]
    assert len(POINTS) == 3 * len(STEPS) + 1
    assert POINTS[-1].phase is CrashPhase.BEFORE_COMPLETE


def test_bare_step_names_are_counted_into_occurrences() -> None:
    assert ordered_points(["fetch", "fetch"])[3] == parse_point("fetch#2@before")


@QUICK
@given(crash_points(STEPS))
def test_every_drawn_point_belongs_to_the_workflow(point: CrashPoint) -> None:
    assert point in POINTS


@QUICK
@given(schedules(STEPS, max_crashes=3))
def test_schedules_respect_their_bounds(schedule: Schedule) -> None:
    assert 1 <= len(schedule) <= 3
    assert all(p in POINTS for p in schedule)


@QUICK
@given(schedule=schedules(STEPS, max_crashes=2))
async def test_given_works_in_an_async_test(schedule: Schedule) -> None:
    assert len(schedule) in (1, 2)


def test_a_point_shrinks_to_the_earliest_that_fails() -> None:
    minimal = find(crash_points(STEPS), lambda p: p.step == "fetch", settings=FIND)

    assert str(minimal) == "fetch#1@before"


def test_a_schedule_shrinks_to_one_crash_when_one_suffices() -> None:
    # "Fails" whenever any crash lands on a write: the minimal failing
    # schedule is the single earliest crash there.
    minimal = find(
        schedules(STEPS, max_crashes=4),
        lambda s: any(p.step == "write" for p in s),
        settings=FIND,
    )

    assert str(minimal) == "write#1@before"


def test_a_two_crash_bug_shrinks_to_two_early_crashes() -> None:
    # A bug that needs a crash after fetch#2's effect and then another crash
    # during its re-run: nothing smaller than those two crashes reproduces it.
    effect = parse_point("fetch#2@after_effect")

    def fails(schedule: Schedule) -> bool:
        return list(schedule).count(effect) >= 2

    minimal = find(schedules(STEPS, max_crashes=4), fails, settings=FIND)

    assert minimal == Schedule((effect, effect))


def test_a_schedule_with_any_two_crashes_shrinks_to_the_first_point_twice() -> None:
    minimal = find(
        schedules(STEPS, max_crashes=3), lambda s: len(s) >= 2, settings=FIND
    )

    assert minimal == Schedule((POINTS[0], POINTS[0]))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: crash_points([]), "no crash points"),
        (lambda: schedules(STEPS, max_crashes=0), "max_crashes"),
        (lambda: schedules(STEPS, max_crashes=2, min_crashes=3), "min_crashes"),
        (lambda: crash_points([("fetch",)]), "bad step"),  # type: ignore[arg-type]
    ],
)
def test_bad_arguments_say_what_to_pass(call: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        call()  # type: ignore[operator]


def test_the_plugin_does_not_import_hypothesis() -> None:
    code = (
        "import sys, pytest_waypoint, pytest_waypoint.plugin, "
        "pytest_waypoint.search, pytest_waypoint.kill; "
        "print('hypothesis' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )

    assert out.stdout.strip() == "False"
