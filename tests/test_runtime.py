"""Runtime behaviour: running, replaying, positions, determinism, failures."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from waypoint import (
    ConfigurationError,
    EventKind,
    ExecutionNotFound,
    ExecutionStatus,
    MemoryStore,
    NonDeterminismError,
    StepFailed,
    Store,
    Waypoint,
    WaypointError,
    WorkflowNotRegistered,
    checkpoint,
    current_step,
    workflow,
)
from waypoint.hooks import CrashSite, SimulatedCrash, armed

# Step bodies append here; a test reads how often each body really ran.
calls: list[str] = []


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    calls.clear()


@contextmanager
def crash_at(point: str) -> Iterator[list[CrashSite]]:
    """Arm a hook that crashes once at ``point`` (``name#k@phase``)."""
    fired: list[CrashSite] = []

    def hook(site: CrashSite) -> None:
        if not fired and site.point == point:
            fired.append(site)
            raise SimulatedCrash(site)

    with armed(hook):
        yield fired


@checkpoint
async def double(x: int) -> int:
    calls.append(f"double({x})")
    return 2 * x


@checkpoint
async def total(values: list[int]) -> int:
    calls.append("total")
    return sum(values)


@workflow
async def doubling(n: int) -> int:
    values = [await double(i) for i in range(n)]
    return await total(values)


async def test_run_returns_the_output_and_journals_every_step(
    local_store: Store,
) -> None:
    async with Waypoint(local_store) as wp:
        out = await wp.run(doubling, 3, execution_id="x1")
        execution = await wp.execution("x1")
        events = await wp.history("x1")

    assert out == 6
    assert calls == ["double(0)", "double(1)", "double(2)", "total"]
    assert execution.status is ExecutionStatus.COMPLETED
    assert execution.output == 6
    assert execution.input == {"n": 3}
    completed = [e for e in events if e.kind is EventKind.STEP_COMPLETED]
    assert [(e.position, e.step, e.payload) for e in completed] == [
        (0, "double", 0),
        (1, "double", 2),
        (2, "double", 4),
        (3, "total", 6),
    ]
    assert events[0].kind is EventKind.EXECUTION_STARTED
    assert events[-1].kind is EventKind.EXECUTION_COMPLETED


async def test_history_keeps_the_written_order_when_the_clock_does_not_move(
    local_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A coarse clock (or a fast store) gives many events one timestamp; the
    # journal must still read as it was written, each step's start before
    # its completion and that before the next step's start.
    monkeypatch.setattr(time, "time", lambda: 1_800_000_000.0)
    async with Waypoint(local_store) as wp:
        await wp.run(doubling, 2, execution_id="frozen")
        events = await wp.history("frozen")

    assert [(e.kind.value, e.position) for e in events] == [
        ("execution_started", None),
        ("step_started", 0),
        ("step_completed", 0),
        ("step_started", 1),
        ("step_completed", 1),
        ("step_started", 2),
        ("step_completed", 2),
        ("execution_completed", None),
    ]


@pytest.mark.parametrize(
    ("point", "reruns"),
    [
        ("double#2@before", ["double(1)"]),
        ("double#2@after_effect", ["double(1)"]),
        ("double#2@after_commit", []),
        ("@before_complete", []),
    ],
)
async def test_resume_replays_committed_steps_and_runs_the_rest(
    local_store: Store, point: str, reruns: list[str]
) -> None:
    async with Waypoint(local_store) as wp:
        with crash_at(point) as fired, pytest.raises(SimulatedCrash):
            await wp.run(doubling, 3, execution_id="x")
    assert fired
    before = list(calls)
    calls.clear()

    async with Waypoint(local_store) as wp:
        out = await wp.resume("x")

    assert out == 6
    rest = ["double(2)", "total"] if point.startswith("double") else []
    assert calls == reruns + rest
    assert before.count("double(0)") == 1


async def test_a_resume_logs_at_debug_each_step_it_runs_rather_than_replays(
    local_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    async with Waypoint(local_store) as wp:
        with crash_at("double#2@after_commit"), pytest.raises(SimulatedCrash):
            await wp.run(doubling, 3, execution_id="logged")

    with caplog.at_level(logging.DEBUG, logger="waypoint.replay"):
        async with Waypoint(local_store) as wp:
            await wp.resume("logged")

    ran = [r.getMessage() for r in caplog.records if r.name == "waypoint.replay"]
    assert ran == [
        "execution logged: step 'double' at position 2 is not in the journal "
        "(2 recorded); running it",
        "execution logged: step 'total' at position 3 is not in the journal "
        "(2 recorded); running it",
    ]


async def test_an_unfinished_run_is_left_resumable_not_failed(
    local_store: Store,
) -> None:
    async with Waypoint(local_store) as wp:
        with crash_at("double#1@after_commit"), pytest.raises(SimulatedCrash):
            await wp.run(doubling, 2, execution_id="x")
        execution = await wp.execution("x")

    assert execution.status is ExecutionStatus.RUNNING
    assert execution.owner is None  # the crashed runner let go of its lease


@checkpoint
async def slow_echo(value: str, delay: float) -> str:
    await asyncio.sleep(delay)
    calls.append(value)
    return value


@workflow
async def fan_out() -> list[str]:
    # Finishes in the reverse of call order; positions follow call order.
    results = await asyncio.gather(
        slow_echo("a", 0.03), slow_echo("b", 0.02), slow_echo("c", 0.0)
    )
    tail = await slow_echo("d", 0.0)
    return [*results, tail]


async def test_gathered_steps_take_positions_in_call_order(local_store: Store) -> None:
    async with Waypoint(local_store) as wp:
        out = await wp.run(fan_out, execution_id="g")
        events = await wp.history("g")

    assert out == ["a", "b", "c", "d"]
    assert calls == ["c", "b", "a", "d"]
    completed = {e.position: e.payload for e in events if e.step and e.payload}
    assert completed == {0: "a", 1: "b", 2: "c", 3: "d"}


async def test_gathered_steps_replay_after_a_crash_in_one_of_them(
    local_store: Store,
) -> None:
    async with Waypoint(local_store) as wp:
        with crash_at("slow_echo#1@after_effect"), pytest.raises(SimulatedCrash):
            await wp.run(fan_out, execution_id="g")
    first = list(calls)
    calls.clear()

    async with Waypoint(local_store) as wp:
        out = await wp.resume("g")

    assert out == ["a", "b", "c", "d"]
    # b and c committed before a crashed; only a (and then d) run again.
    assert first == ["c", "b", "a"]
    assert calls == ["a", "d"]


@checkpoint
async def noted(label: str) -> str:
    calls.append(label)
    return label


@workflow
async def branchy(path: str) -> str:
    # A module global stands in for state that differs between processes.
    await noted(path)
    return await noted(_branch["choice"])


_branch = {"choice": "left"}


async def test_a_different_step_on_replay_raises_a_readable_diff(
    local_store: Store,
) -> None:
    async with Waypoint(local_store) as wp:
        with crash_at("@before_complete"), pytest.raises(SimulatedCrash):
            await wp.run(branchy, "x", execution_id="nd")
    _branch["choice"] = "right"
    try:
        async with Waypoint(local_store) as wp:
            with pytest.raises(NonDeterminismError) as raised:
                await wp.resume("nd")
            execution = await wp.execution("nd")
    finally:
        _branch["choice"] = "left"

    error = raised.value
    assert error.position == 1
    assert "args" in str(error)
    assert re.search(r">\s+1\s+noted \(args \w+\)\s+noted \(args \w+\)", str(error))
    # A code bug leaves the run resumable once the code is fixed.
    assert execution.status is ExecutionStatus.RUNNING


@checkpoint
async def step_one() -> int:
    return 1


@checkpoint
async def step_two() -> int:
    return 2


_order = {"swap": False}


@workflow
async def ordered() -> int:
    if _order["swap"]:
        return await step_two() + await step_one()
    return await step_one() + await step_two()


async def test_a_renamed_step_at_a_position_names_both(local_store: Store) -> None:
    async with Waypoint(local_store) as wp:
        with crash_at("@before_complete"), pytest.raises(SimulatedCrash):
            await wp.run(ordered, execution_id="sw")
    _order["swap"] = True
    try:
        async with Waypoint(local_store) as wp:
            with pytest.raises(NonDeterminismError) as raised:
                await wp.resume("sw")
    finally:
        _order["swap"] = False

    assert raised.value.position == 0
    assert raised.value.recorded.startswith("step_one")
    assert raised.value.attempted.startswith("step_two")


_steps = {"count": 3}


@workflow
async def shrinking() -> int:
    return sum([await double(i) for i in range(_steps["count"])])


async def test_finishing_with_recorded_steps_unreached_is_nondeterminism(
    local_store: Store,
) -> None:
    async with Waypoint(local_store) as wp:
        with crash_at("@before_complete"), pytest.raises(SimulatedCrash):
            await wp.run(shrinking, execution_id="sh")
    _steps["count"] = 1
    try:
        async with Waypoint(local_store) as wp:
            with pytest.raises(NonDeterminismError, match="records 2 more"):
                await wp.resume("sh")
    finally:
        _steps["count"] = 3


keys: list[str] = []


@checkpoint
async def charge(amount: int) -> str:
    step = current_step()
    keys.append(step.idempotency_key)
    return f"charged {amount} as {step.name}#{step.position} try {step.attempt}"


@workflow
async def billing() -> str:
    await double(1)
    return await charge(5)


async def test_idempotency_key_is_stable_when_a_step_runs_again(
    local_store: Store,
) -> None:
    keys.clear()
    async with Waypoint(local_store) as wp:
        with crash_at("charge#1@after_effect"), pytest.raises(SimulatedCrash):
            await wp.run(billing, execution_id="bill")
    async with Waypoint(local_store) as wp:
        out = await wp.resume("bill")

    assert keys == ["bill:1", "bill:1"]
    assert out == "charged 5 as charge#1 try 1"


def test_current_step_outside_a_step_says_where_to_call_it() -> None:
    with pytest.raises(WaypointError, match="outside a step"):
        current_step()


@checkpoint
async def inner(x: int) -> int:
    calls.append("inner")
    return x + 1


@checkpoint
async def outer(x: int) -> int:
    calls.append("outer")
    return await inner(x) * 10


@workflow
async def nested() -> int:
    first = await outer(1)
    return first + await inner(0)


async def test_a_step_called_inside_a_step_is_part_of_it(local_store: Store) -> None:
    async with Waypoint(local_store) as wp:
        with crash_at("inner#1@after_effect"), pytest.raises(SimulatedCrash):
            await wp.run(nested, execution_id="n")
    assert calls == ["outer", "inner", "inner"]
    calls.clear()

    async with Waypoint(local_store) as wp:
        out = await wp.resume("n")
        events = await wp.history("n")

    assert out == 21
    assert calls == ["inner"]  # outer is recorded whole; only the last step runs
    steps = [e.step for e in events if e.kind is EventKind.STEP_COMPLETED]
    assert steps == ["outer", "inner"]


async def test_steps_run_as_plain_functions_outside_a_workflow() -> None:
    assert await double(4) == 8
    assert await doubling(2) == 2


flaky_failures = {"left": 0}


@checkpoint(retries=3, backoff=0.001)
async def flaky() -> str:
    calls.append(f"attempt {current_step().attempt}")
    if flaky_failures["left"] > 0:
        flaky_failures["left"] -= 1
        raise ConnectionError("upstream timed out")
    return "ok"


@workflow
async def retrying() -> str:
    return await flaky()


async def test_retries_journal_each_failed_attempt(local_store: Store) -> None:
    flaky_failures["left"] = 2
    async with Waypoint(local_store) as wp:
        out = await wp.run(retrying, execution_id="r")
        events = await wp.history("r")

    assert out == "ok"
    assert calls == ["attempt 1", "attempt 2", "attempt 3"]
    retried = [e for e in events if e.kind is EventKind.STEP_RETRIED]
    assert [e.attempt for e in retried] == [1, 2]
    assert retried[0].payload["error"] == {
        "type": "ConnectionError",
        "message": "upstream timed out",
    }
    completed = [e for e in events if e.kind is EventKind.STEP_COMPLETED]
    assert completed[0].attempt == 3


async def test_attempts_survive_a_crash(local_store: Store) -> None:
    flaky_failures["left"] = 1
    async with Waypoint(local_store) as wp:
        with crash_at("flaky#1@after_effect"), pytest.raises(SimulatedCrash):
            await wp.run(retrying, execution_id="r")
    async with Waypoint(local_store) as wp:
        assert await wp.resume("r") == "ok"

    # Attempt 1 failed and was journaled; attempt 2 crashed before its
    # checkpoint; the resume continues as attempt 2, not from scratch.
    assert calls == ["attempt 1", "attempt 2", "attempt 2"]


async def test_a_step_that_keeps_failing_fails_the_workflow_for_good(
    local_store: Store,
) -> None:
    flaky_failures["left"] = 10
    async with Waypoint(local_store) as wp:
        with pytest.raises(StepFailed) as raised:
            await wp.run(retrying, execution_id="f")
        execution = await wp.execution("f")
    assert isinstance(raised.value.__cause__, ConnectionError)
    assert raised.value.attempts == 4
    assert raised.value.step == "flaky"
    assert execution.status is ExecutionStatus.FAILED
    assert execution.error["type"] == "waypoint.errors.StepFailed"
    calls.clear()

    async with Waypoint(local_store) as wp:
        with pytest.raises(StepFailed) as again:
            await wp.resume("f")
        with pytest.raises(StepFailed):
            await wp.run(retrying, execution_id="f")

    assert calls == []
    assert str(again.value) == str(raised.value)
    assert again.value.attempts == 4


class QuotaExceeded(Exception):
    pass


@workflow
async def refusing(limit: int) -> int:
    value = await double(limit)
    if value > 10:
        raise QuotaExceeded(f"{value} is over the quota")
    return value


async def test_a_failed_workflow_raises_the_same_failure_on_resume(
    local_store: Store,
) -> None:
    async with Waypoint(local_store) as wp:
        with pytest.raises(QuotaExceeded, match="12 is over"):
            await wp.run(refusing, 6, execution_id="q")
    calls.clear()

    async with Waypoint(local_store) as wp:
        with pytest.raises(QuotaExceeded, match="12 is over"):
            await wp.resume("q")

    assert calls == []


async def test_execution_ids_are_time_ordered_uuid7(local_store: Store) -> None:
    async with Waypoint(local_store) as wp:
        first = await wp.start(doubling, 1)
        second = await wp.start(doubling, 1)
        await asyncio.sleep(0.05)

    for value in (first, second):
        parsed = uuid.UUID(value)
        assert parsed.version == 7
    assert first < second


async def test_an_existing_id_returns_the_recorded_output_without_running(
    local_store: Store,
) -> None:
    async with Waypoint(local_store) as wp:
        await wp.run(doubling, 2, execution_id="same")
        calls.clear()
        again = await wp.run(doubling, 2, execution_id="same")

    assert again == 2
    assert calls == []


async def test_an_existing_id_with_other_arguments_is_refused(
    local_store: Store,
) -> None:
    async with Waypoint(local_store) as wp:
        await wp.run(doubling, 2, execution_id="same")
        with pytest.raises(ConfigurationError, match="other arguments"):
            await wp.run(doubling, 3, execution_id="same")
        with pytest.raises(ConfigurationError, match="belongs to workflow"):
            await wp.run(retrying, execution_id="same")


async def test_an_existing_unfinished_id_resumes(local_store: Store) -> None:
    async with Waypoint(local_store) as wp:
        with crash_at("double#1@after_commit"), pytest.raises(SimulatedCrash):
            await wp.run(doubling, 2, execution_id="u")
    calls.clear()
    async with Waypoint(local_store) as wp:
        assert await wp.run(doubling, 2, execution_id="u") == 2
    assert calls == ["double(1)", "total"]


async def test_start_runs_in_the_background_and_resume_waits_for_it(
    local_store: Store,
) -> None:
    async with Waypoint(local_store) as wp:
        execution_id = await wp.start(fan_out)
        assert await wp.resume(execution_id) == ["a", "b", "c", "d"]
        assert (await wp.execution(execution_id)).status is ExecutionStatus.COMPLETED


async def test_unknown_executions_and_workflows_are_named(local_store: Store) -> None:
    async with Waypoint(local_store) as wp:
        with pytest.raises(ExecutionNotFound, match="missing"):
            await wp.resume("missing")
        with pytest.raises(WorkflowNotRegistered, match="no_such_workflow"):
            await wp.run("no_such_workflow")

        async def plain() -> None:
            return None

        with pytest.raises(ConfigurationError, match="decorate it with @workflow"):
            await wp.run(plain)


async def test_executions_filters_and_limits(local_store: Store) -> None:
    async with Waypoint(local_store) as wp:
        for n in range(3):
            await wp.run(doubling, n, execution_id=f"d{n}")
        flaky_failures["left"] = 10
        with pytest.raises(StepFailed):
            await wp.run(retrying, execution_id="f0")

        failed = [e.execution_id async for e in wp.executions(status="failed")]
        mine = [
            e.execution_id
            async for e in wp.executions(workflow="test_runtime.doubling")
        ]
        two = [e.execution_id async for e in wp.executions(limit=2)]
        with pytest.raises(ConfigurationError, match="unknown execution status"):
            [e async for e in wp.executions(status="paused")]

    assert failed == ["f0"]
    assert mine == ["d0", "d1", "d2"]
    assert two == ["d0", "d1"]


async def test_a_closed_runtime_says_so(local_store: Store) -> None:
    wp = Waypoint(local_store)
    await wp.open()
    await wp.close()
    with pytest.raises(WaypointError, match="closed"):
        await wp.run(doubling, 1)


def test_bad_decorator_use_is_refused_clearly() -> None:
    def sync_step() -> int:
        return 1

    with pytest.raises(ConfigurationError, match="async def"):
        checkpoint(sync_step)
    with pytest.raises(ConfigurationError, match="retries"):
        checkpoint(retries=-1)
    with pytest.raises(ConfigurationError, match="non-empty string"):
        workflow(name="")
    with pytest.raises(ConfigurationError, match="lease_seconds"):
        Waypoint("memory://", lease_seconds=0)
    with pytest.raises(ConfigurationError, match="unknown store URL"):
        Waypoint("mysql://x")


def test_a_workflow_is_named_by_its_module_and_qualified_name() -> None:
    from waypoint.decorators import workflow_definition

    assert workflow_definition(doubling).name == "test_runtime.doubling"
    assert workflow_definition("test_runtime.doubling").fn is doubling


def test_a_name_taken_by_another_modules_workflow_is_refused() -> None:
    async def run() -> None:
        return None

    run.__module__ = "billing.jobs"
    workflow(name="nightly_run")(run)

    async def other() -> None:
        return None

    other.__module__ = "reports.jobs"
    with pytest.raises(ConfigurationError, match=r"taken by billing\.jobs\.") as raised:
        workflow(name="nightly_run")(other)
    assert "@workflow(name=...)" in str(raised.value)

    # The same module defining it again (a reload) replaces it.
    async def again() -> None:
        return None

    again.__module__ = "billing.jobs"
    workflow(name="nightly_run")(again)


def test_owner_ids_are_unique_per_runtime_and_new_for_a_reused_pid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = Waypoint(MemoryStore()), Waypoint(MemoryStore())
    assert first.owner != second.owner
    _, pid, token = first.owner.rsplit(":", 2)
    assert pid == str(os.getpid())
    # Another process that happens to get this pid must not take the ids of
    # this one's runtimes: its token prefix is drawn anew.
    monkeypatch.setattr(os, "getpid", lambda: 4_000_000)
    _, other_pid, other_token = Waypoint(MemoryStore()).owner.rsplit(":", 2)
    assert other_pid == "4000000"
    assert other_token.split(".")[0] != token.split(".")[0]
