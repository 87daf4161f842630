"""Proof that the crash search finds what single in-process crashes cannot.

Two bugs, each run in an inner pytest session as a user's suite would run:

- a step that is safe when its re-run is not interrupted but sends its
  effect again when the re-run also crashes: single-crash exploration passes,
  the two-crash schedule search fails, names the smallest schedule, and the
  printed line reproduces it; Hypothesis shrinks to the same two crashes;
- a workflow that writes its state out only in a ``finally`` block: passes
  every in-process crash (the exception runs the block) and fails in kill
  mode, where SIGKILL runs nothing.
"""

from __future__ import annotations

import shlex

import pytest

from pytest_waypoint import plugin


@pytest.fixture(autouse=True)
def _schema_tools_loaded_outside() -> None:
    """Import Alembic and SQLAlchemy before any inner session does (see
    test_harness_proof.py: they do not survive a second import)."""
    import alembic.command  # noqa: F401
    import sqlalchemy  # noqa: F401


ASYNCIO = [
    "-o",
    "asyncio_mode=auto",
    "-o",
    "asyncio_default_fixture_loop_scope=function",
]
INNER = ["-p", "no:cacheprovider", *ASYNCIO, "--waypoint-store=memory"]

TWO_CRASH_BUG = """
import uuid

from hypothesis import HealthCheck, given, settings, strategies as st

from pytest_waypoint import effects
from pytest_waypoint.strategies import schedules
from waypoint import checkpoint, current_step, workflow

# The payment service takes no idempotency key, so the step keeps its own
# outbox (a table in another database: it survives the crash) to learn on a
# re-run that the payment already went out.
OUTBOX: dict[str, str] = {}


@checkpoint
async def pay(order: str) -> str:
    key = current_step().idempotency_key
    if OUTBOX.pop(key, None) is not None:  # the bug: pop, where get was due
        return f"paid {order}"
    await effects.apply(f"pay {order}", key=str(uuid.uuid4()))
    OUTBOX[key] = "sent"
    return f"paid {order}"


@workflow
async def checkout(order: str) -> str:
    return await pay(order)


async def test_checkout(chaos):
    await chaos.explore(checkout, "o-1")


# The chaos fixture lives for the whole test, across examples, by design.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
async def test_checkout_search(chaos, data):
    points = await chaos.reference(checkout, "o-2")
    schedule = data.draw(schedules(points, max_crashes=3))
    await chaos.check(checkout, "o-2", schedule=schedule)
"""

SMALLEST = "pay#1@after_effect,pay#1@after_effect"


def _reproduction(result: pytest.RunResult) -> list[str]:
    line = next(x for x in result.outlines if "reproduce: pytest" in x)
    return shlex.split(line.split("reproduce: ")[1])


def test_one_crash_misses_the_bug(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_pay=TWO_CRASH_BUG)

    result = pytester.runpytest_inprocess(
        *INNER, "-k", "test_checkout and not search", "--waypoint-max-crashes=1"
    )

    result.assert_outcomes(passed=1)


def test_two_crashes_find_it_and_the_line_reproduces_it(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_pay=TWO_CRASH_BUG)

    found = pytester.runpytest_inprocess(
        *INNER, "-k", "test_checkout and not search", "--waypoint-max-crashes=2"
    )

    found.assert_outcomes(failed=1)
    found.stdout.fnmatch_lines(
        [
            "*exhaustive: all 14 feasible schedules of up to 2 crashes*",
            f"smallest failing schedule: {SMALLEST} (2 crashes); seed *",
            "invariant 4 broken: each side effect happens once per idempotency key",
            f"  schedule:  {SMALLEST}",
            "  expected:  'pay o-1' x1 (as in the uncrashed run)",
            "  actual:    'pay o-1' x2",
        ]
    )
    command = _reproduction(found)
    assert command[:2] == ["pytest", "test_pay.py::test_checkout"]

    again = pytester.runpytest_inprocess(*INNER, *command[1:])

    again.assert_outcomes(failed=1)
    again.stdout.fnmatch_lines(
        [
            "*1 scenarios in-process*",
            "  schedules: the given schedule",
            "*invariant 4 broken*",
        ]
    )


def test_hypothesis_shrinks_it_to_two_crashes(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_pay=TWO_CRASH_BUG)

    found = pytester.runpytest_inprocess(
        *INNER, "-k", "search", f"--hypothesis-profile={plugin.CI_PROFILE}"
    )

    found.assert_outcomes(failed=1)
    found.stdout.fnmatch_lines(
        [
            f"crash schedule {SMALLEST} (2 crashes) of workflow "
            "'test_pay.checkout' broke*",
            "invariant 4 broken*",
            f"*reproduce: pytest test_pay.py::test_checkout_search "
            f"--waypoint-schedule='{SMALLEST}' *",
            "Failing test case: test_checkout_search(",
        ]
    )

    again = pytester.runpytest_inprocess(*INNER, *_reproduction(found)[1:])

    again.assert_outcomes(failed=1)
    again.stdout.fnmatch_lines([f"crash schedule {SMALLEST} (2 crashes)*"])


def test_a_failing_schedule_is_tried_first_on_the_next_run(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_pay=TWO_CRASH_BUG)
    with_cache = [
        *ASYNCIO,
        "--waypoint-store=memory",
        "-k",
        "test_checkout and not search",
    ]
    first = pytester.runpytest_inprocess(*with_cache, "--waypoint-max-crashes=2")
    first.assert_outcomes(failed=1)
    header = next(x for x in first.outlines if x.startswith("waypoint: store="))
    seed = header.split(", ")[1]

    # One scenario of budget: the sample alone would hold a single crash.
    again = pytester.runpytest_inprocess(
        *with_cache,
        "--waypoint-max-crashes=2",
        "--waypoint-max-scenarios=1",
        "--waypoint-seed=last",
    )

    again.assert_outcomes(failed=1)
    again.stdout.fnmatch_lines(
        [
            f"waypoint: store=memory *, {seed}, max-scenarios=1, *",
            "*1 failed before and tried first*",
            f"  schedule:  {SMALLEST}",
        ]
    )


def test_under_xdist_each_worker_derives_its_seed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_pay=TWO_CRASH_BUG)

    result = pytester.runpytest_subprocess(
        *INNER,
        "-n",
        "2",
        "-k",
        "test_checkout and not search",
        "--waypoint-max-crashes=2",
        "--waypoint-seed=5",
    )

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "waypoint: store=memory *seed=5,*",
            "smallest failing schedule: * seed * (worker gw?'s, derived from the "
            "run's seed: --waypoint-seed=5)",
        ]
    )


FINALLY_BUG = """
from pathlib import Path

from waypoint import checkpoint, current_step, workflow

BATCHES = Path(__file__).parent / "batches"
_buffer: list[str] = []


@checkpoint
async def open_batch() -> str:
    return current_step().execution_id


@checkpoint
async def collect(item: str) -> str:
    _buffer.append(item)  # written out by the workflow's finally block
    return item


@workflow
async def buffered(items: list[str]) -> list[str]:
    out = BATCHES / f"{await open_batch()}.txt"
    try:
        for item in items:
            await collect(item)
    finally:
        BATCHES.mkdir(exist_ok=True)
        with out.open("a") as f:
            f.writelines(f"{item}\\n" for item in _buffer)
        _buffer.clear()
    return sorted(set(out.read_text().split()))


async def test_buffered(chaos):
    await chaos.explore(buffered, ["a"])
"""


@pytest.mark.slow
def test_kill_mode_finds_state_only_a_finally_block_writes(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_batches=FINALLY_BUG)
    options = [o for o in INNER if o != "--waypoint-store=memory"]

    in_process = pytester.runpytest_inprocess(*options, "--waypoint-store=sqlite")
    killed = pytester.runpytest_inprocess(
        *options, "--waypoint-store=sqlite", "--waypoint-mode=kill"
    )

    in_process.assert_outcomes(passed=1)
    killed.assert_outcomes(failed=1)
    killed.stdout.fnmatch_lines(
        [
            "*7 scenarios kill*",
            "collect#1 *ok*ok rerun 1*FAIL 2",
            "invariant 2 broken: the final output equals the uncrashed run's output",
            "  schedule:  collect#1@after_commit",
            "  expected:  completed with ['a']",
            "  actual:    completed with []",
            "*reproduce: pytest test_batches.py::test_buffered "
            "--waypoint-schedule='collect#1@after_commit' --waypoint-store=sqlite "
            "--waypoint-mode=kill",
        ]
    )
