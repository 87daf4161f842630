"""Proof that the harness finds the bugs it exists to find.

Deliberately broken workflows must FAIL with the right invariant named;
correct workflows in every shape the runtime supports must pass with zero
violations. The workflows run under an inner pytest session (pytester),
exactly as a user's test suite would run them.
"""

from __future__ import annotations

import shlex

import pytest


@pytest.fixture(autouse=True)
def _schema_tools_loaded_outside() -> None:
    """Import Alembic and SQLAlchemy before any inner session does.

    An in-process inner session drops the modules it imported when it ends;
    SQLAlchemy's compiled parts do not survive a second import in one
    process, so the first SQLite store of a later session would fail.
    """
    import alembic.command  # noqa: F401
    import sqlalchemy  # noqa: F401


INNER_OPTIONS = [
    "-p",
    "no:cacheprovider",
    "-o",
    "asyncio_mode=auto",
    "-o",
    "asyncio_default_fixture_loop_scope=function",
    "--waypoint-store=memory",
]

BROKEN = """
import asyncio
import time
import uuid
from collections import Counter

from waypoint import checkpoint, current_step, workflow
from pytest_waypoint import effects


@checkpoint
async def charge_without_key(order: str) -> str:
    # A fresh request id per call: the payment API cannot drop a retry.
    await effects.apply(f"charge {order}", key=str(uuid.uuid4()))
    return "charged"


@checkpoint
async def load(order: str) -> str:
    return order.upper()


@workflow
async def no_idempotency_key(order: str) -> str:
    name = await load(order)
    return await charge_without_key(name)


@workflow
async def effect_outside_step(order: str) -> str:
    name = await load(order)
    await effects.apply(f"email {name}")  # workflow code: runs on every replay
    return await load(name)


@checkpoint
async def remind(at: float) -> str:
    return "reminded"


@workflow
async def reads_the_clock(order: str) -> str:
    await load(order)
    return await remind(time.time())


@checkpoint
async def tag(label: str) -> str:
    return label


@workflow
async def branches_on_randomness(order: str) -> str:
    await load(order)
    label = "a" if uuid.uuid4().int % 2 else "b"
    return await tag(f"{label}-{uuid.uuid4().hex}")


@workflow
async def state_in_memory(order: str) -> list[str]:
    seen: list[str] = []

    @checkpoint(name="visit")
    async def visit(item: str) -> str:
        seen.append(item)  # lost when the journal replays the step
        return item

    for item in ("a", "b", "c"):
        await visit(item)
    return seen


RUNS: Counter[str] = Counter()


@checkpoint
async def counted(order: str) -> int:
    RUNS[current_step().execution_id] += 1
    return RUNS[current_step().execution_id]


@workflow
async def depends_on_run_count(order: str) -> int:
    await load(order)
    return await counted(order)


async def test_no_idempotency_key(chaos):
    await chaos.explore(no_idempotency_key, "o-1")


async def test_effect_outside_step(chaos):
    await chaos.explore(effect_outside_step, "o-1")


async def test_reads_the_clock(chaos):
    await chaos.explore(reads_the_clock, "o-1")


async def test_branches_on_randomness(chaos):
    await chaos.explore(branches_on_randomness, "o-1")


async def test_state_in_memory(chaos):
    await chaos.explore(state_in_memory, "o-1")


async def test_depends_on_run_count(chaos):
    await chaos.explore(depends_on_run_count, "o-1")
"""

CORRECT = """
import asyncio

import pydantic

from waypoint import checkpoint, current_step, workflow
from pytest_waypoint import effects


class Quote(pydantic.BaseModel):
    item: str
    price: float


@checkpoint
async def price(item: str) -> Quote:
    return Quote(item=item, price=len(item) * 1.5)


@checkpoint
async def pay(total: float) -> str:
    await effects.apply("pay", f"{total:.2f}")
    return f"paid {total:.2f}"


@workflow
async def in_a_loop(items: list[str]) -> str:
    total = 0.0
    for item in items:
        total += (await price(item)).price
    return await pay(total)


@workflow
async def under_gather(items: list[str]) -> str:
    quotes = await asyncio.gather(*(price(item) for item in items))
    return await pay(sum(q.price for q in quotes))


@checkpoint(retries=2, backoff=0)
async def flaky(item: str) -> str:
    if current_step().attempt < 3:
        raise ConnectionError(f"attempt {current_step().attempt} failed")
    await effects.apply("flaky ok")
    return item


@workflow
async def with_retries(item: str) -> str:
    first = await flaky(item)
    return await pay(len(first))


@checkpoint
async def inner(item: str) -> str:
    return item * 2


@checkpoint
async def outer(item: str) -> str:
    return await inner(item) + "!"


@workflow
async def step_calls_step(item: str) -> str:
    return await outer(await outer(item))


@workflow
async def returns_a_model(item: str) -> Quote:
    quote = await price(item)
    await pay(quote.price)
    return quote


async def test_in_a_loop(chaos):
    report = await chaos.explore(in_a_loop, ["ab", "cde", "f"])
    assert report.ok and len(report.scenarios) == 13


async def test_under_gather(chaos):
    assert (await chaos.explore(under_gather, ["ab", "cde", "f"])).ok


async def test_with_retries(chaos):
    assert (await chaos.explore(with_retries, "x")).ok


async def test_step_calls_step(chaos):
    assert (await chaos.explore(step_calls_step, "x")).ok


async def test_returns_a_model(chaos):
    assert (await chaos.explore(returns_a_model, "x")).ok
"""

EXPECTED = {
    "test_no_idempotency_key": "invariant 4 broken",
    "test_effect_outside_step": "invariant 4 broken",
    "test_reads_the_clock": "invariant 5 broken",
    "test_branches_on_randomness": "invariant 5 broken",
    "test_state_in_memory": "invariant 2 broken",
    "test_depends_on_run_count": "invariant 2 broken",
}


def test_broken_workflows_fail_naming_the_invariant(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_broken=BROKEN)
    result = pytester.runpytest_inprocess(*INNER_OPTIONS)

    result.assert_outcomes(failed=len(EXPECTED))
    reports = result.reprec.getreports("pytest_runtest_logreport")  # type: ignore[attr-defined]
    failed = {r.nodeid.split("::")[-1]: r.longreprtext for r in reports if r.failed}
    assert set(failed) == set(EXPECTED)
    for test, invariant in EXPECTED.items():
        assert invariant in failed[test], failed[test]
        assert "crash matrix" in failed[test]
        assert (
            f"reproduce: pytest test_broken.py::{test} --waypoint-schedule="
            in (failed[test])
        )


def test_state_in_memory_names_expected_and_actual(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_broken=BROKEN)
    result = pytester.runpytest_inprocess(*INNER_OPTIONS, "-k", "state_in_memory")

    result.assert_outcomes(failed=1)
    assert (
        "invariant 2 broken: the final output equals the uncrashed run's output\n"
        "  schedule:  visit#1@after_commit\n"
        "  expected:  completed with ['a', 'b', 'c']\n"
        "  actual:    completed with ['b', 'c']\n"
    ) in result.stdout.str()


def test_duplicate_effect_shows_in_the_matrix(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_broken=BROKEN)
    result = pytester.runpytest_inprocess(*INNER_OPTIONS, "-k", "no_idempotency")

    result.stdout.fnmatch_lines(
        [
            "step *before*after_effect*after_commit",
            "load#1 *ok*ok rerun 1*ok",
            "charge_without_key#1 *ok*FAIL 4 rerun 1 dup 1*ok",
            "@before_complete*ok",
        ]
    )


def test_the_reproduction_line_reproduces(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_broken=BROKEN)
    first = pytester.runpytest_inprocess(*INNER_OPTIONS, "-k", "run_count")
    line = next(x for x in first.outlines if "reproduce: pytest" in x)
    command = shlex.split(line.split("reproduce: ")[1])

    assert command[0] == "pytest"
    again = pytester.runpytest_inprocess(*INNER_OPTIONS[:6], *command[1:])

    again.assert_outcomes(failed=1)
    again.stdout.fnmatch_lines(
        [
            "*1 scenarios in-process, of 7 crash points",
            "  schedules: the given schedule",
            "*invariant 2*",
        ]
    )


def test_correct_workflows_pass_with_zero_violations(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_correct=CORRECT)
    result = pytester.runpytest_inprocess(*INNER_OPTIONS)

    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["waypoint: 5 workflows explored, * 0 violations*"])


def test_correct_workflows_pass_on_sqlite(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_correct=CORRECT)
    options = [o for o in INNER_OPTIONS if not o.startswith("--waypoint-store")]
    result = pytester.runpytest_inprocess(*options, "--waypoint-store=sqlite")

    result.assert_outcomes(passed=5)
