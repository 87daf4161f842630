"""One runner per execution: leases, their renewal, and recover()."""

from __future__ import annotations

import asyncio
import gc
import sys
import weakref
from typing import Any

import pytest

from waypoint import (
    ExecutionBusy,
    ExecutionStatus,
    Store,
    Waypoint,
    checkpoint,
    workflow,
)

ran: list[str] = []


@checkpoint
async def nap(seconds: float) -> float:
    ran.append("nap")
    await asyncio.sleep(seconds)
    return seconds


@workflow(name="napping")
async def napping(seconds: float) -> float:
    return await nap(seconds)


@pytest.fixture(autouse=True)
def _clear() -> None:
    ran.clear()


async def _holds_its_lease(store: Store, runner: Waypoint, seconds: float) -> None:
    """``runner`` starts a nap of ``seconds``; past twice its lease another
    runtime still cannot take the execution over, and the nap ends once."""
    execution_id = await runner.start(napping, seconds)
    await asyncio.sleep(2 * runner.lease_seconds)
    async with Waypoint(store) as thief:
        with pytest.raises(ExecutionBusy):
            await thief.resume(execution_id)
    assert await runner.resume(execution_id) == seconds


async def test_a_second_runtime_cannot_resume_a_live_execution(
    local_store: Store,
) -> None:
    async with Waypoint(local_store, lease_seconds=0.3) as first:
        execution_id = await first.start(napping, 0.9)
        await asyncio.sleep(0.6)  # past the first lease: renewal must hold it
        async with Waypoint(local_store) as second:
            with pytest.raises(ExecutionBusy) as raised:
                await second.resume(execution_id)
        assert await first.resume(execution_id) == 0.9

    assert raised.value.owner == first.owner
    assert "lease expires" in str(raised.value)
    assert ran == ["nap"]


async def test_recover_resumes_executions_whose_lease_expired(
    local_store: Store,
) -> None:
    # A runner on another host started these and died; their leases lapse.
    for n in range(3):
        await local_store.create_execution(
            f"orphan-{n}", "napping", '{"seconds": 0.0}', "gone-host:1:dead", 0.05
        )
    await local_store.create_execution(
        "alive", "napping", '{"seconds": 0.0}', "busy-host:2:live", 60
    )
    await asyncio.sleep(0.1)

    async with Waypoint(local_store) as wp:
        recovered = await wp.recover()
        again = await wp.recover()
        statuses = {e.execution_id: e.status async for e in wp.executions()}

    assert sorted(recovered) == ["orphan-0", "orphan-1", "orphan-2"]
    assert again == []
    assert ran == ["nap"] * 3
    assert statuses["alive"] is ExecutionStatus.RUNNING
    assert statuses["orphan-1"] is ExecutionStatus.COMPLETED


async def test_recover_honours_its_limit(local_store: Store) -> None:
    for n in range(3):
        await local_store.create_execution(
            f"o{n}", "napping", '{"seconds": 0.0}', "gone-host:1:dead", 0.01
        )
    await asyncio.sleep(0.05)

    async with Waypoint(local_store) as wp:
        first = await wp.recover(limit=2)
        rest = await wp.recover(limit=2)

    assert len(first) == 2
    assert len(rest) == 1


async def test_a_short_lease_joining_a_long_one_is_renewed_in_time(
    local_store: Store,
) -> None:
    # The loop's one renewal timer is due at the earliest renewal any open
    # runtime needs: a runtime with a 30 s lease must not hold back one
    # with a 0.3 s lease.
    async with Waypoint(local_store, lease_seconds=30) as patient:
        await patient.run(napping, 0.0)
        async with Waypoint(local_store, lease_seconds=0.3) as hurried:
            await _holds_its_lease(local_store, hurried, 0.9)


async def test_runtimes_that_come_and_go_share_one_renewal_timer(
    monkeypatch: pytest.MonkeyPatch, local_store: Store
) -> None:
    loop = asyncio.get_running_loop()
    scheduled: list[float] = []
    call_at = loop.call_at

    def counting_call_at(when: float, *args: Any, **kwargs: Any) -> Any:
        scheduled.append(when)
        return call_at(when, *args, **kwargs)

    monkeypatch.setattr(loop, "call_at", counting_call_at)
    for n in range(50):
        async with Waypoint(local_store) as wp:
            await wp.run(napping, 0.0, execution_id=f"brief-{n}")

    assert len(scheduled) == 1


def test_a_closed_loop_is_not_kept_alive_by_its_lease_keeper() -> None:
    from waypoint.renewal import _keepers

    async def open_one() -> None:
        async with Waypoint("memory://"):
            pass

    loop = asyncio.new_event_loop()
    loop.run_until_complete(open_one())  # leaves its renewal tick pending
    assert loop in _keepers
    keepers = len(_keepers)
    dead = weakref.ref(loop)
    loop.close()
    del loop
    gc.collect()

    assert dead() is None
    # Its entry went with it (other tests' closed loops may have gone too).
    assert len(_keepers) <= keepers - 1


@pytest.mark.skipif(
    sys.version_info < (3, 12), reason="asyncio.eager_task_factory is 3.12+"
)
async def test_leases_are_renewed_under_an_eager_task_factory(
    local_store: Store,
) -> None:
    # An eager factory runs the renewal to its end inside create_task (the
    # memory and SQLite stores never suspend); the runtime must not then take
    # the finished task for one still in flight and stop renewing.
    loop = asyncio.get_running_loop()
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
    try:
        async with Waypoint(local_store, lease_seconds=0.3) as first:
            await _holds_its_lease(local_store, first, 0.9)
    finally:
        loop.set_task_factory(None)
    assert ran == ["nap"]


async def test_a_runtime_dropped_without_closing_is_not_kept_alive(
    local_store: Store,
) -> None:
    # The lease keeper must not hold it (with its store's connections and,
    # through them, its loop) once nothing else does.
    wp = Waypoint(local_store)
    await wp.open()
    dropped = weakref.ref(wp)
    del wp
    gc.collect()

    assert dropped() is None


class _Broken:
    renewal_period = 0.05

    def renewal_due(self) -> None:
        raise RuntimeError("broken member")


async def test_one_failing_member_does_not_stop_the_others_renewals(
    local_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    from waypoint.renewal import keeper_for

    broken = _Broken()
    keeper_for(asyncio.get_running_loop()).join(broken, asyncio.get_running_loop())
    try:
        async with Waypoint(local_store, lease_seconds=0.3) as wp:
            await _holds_its_lease(local_store, wp, 0.9)
    finally:
        keeper_for(asyncio.get_running_loop()).leave(broken)
    assert "lease renewal of" in caplog.text
    assert "This is a bug in Waypoint" in caplog.text


async def test_renewals_run_outside_the_context_that_scheduled_them(
    local_store: Store,
) -> None:
    # The first runtime on a loop schedules the shared timer; a crash hook
    # armed around it must not ride along into every later renewal.
    from waypoint.hooks import active_hook, armed

    with armed(lambda site: None):
        async with Waypoint(local_store, lease_seconds=0.15):
            pass  # schedules this loop's first renewal tick
    seen: list[object] = []
    async with Waypoint(local_store, lease_seconds=0.15) as wp:
        original = wp._renew_leases

        async def renew() -> None:
            seen.append(active_hook())
            await original()

        wp._renew_leases = renew  # type: ignore[method-assign]
        await wp.run(napping, 0.3)

    assert seen
    assert seen == [None] * len(seen)
