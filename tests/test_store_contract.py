"""The store contract, run against every backend through the ``store`` fixture.

A new backend joins by adding a parameter to ``store`` in conftest.py; these
tests are what it must pass.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from waypoint import (
    CheckpointConflict,
    EventKind,
    ExecutionNotFound,
    ExecutionStatus,
    LeaseLost,
    Store,
)
from waypoint.journal import Checkpoint, StepFailure

LEASE = 30.0


def _checkpoint(position: int, result: object = None, step: str = "s") -> Checkpoint:
    started = time.time()
    return Checkpoint(
        position, step, "h" * 16, 1, json.dumps(result), started, started + 0.001
    )


async def _started(store: Store, execution_id: str = "e1", owner: str = "a") -> str:
    assert await store.create_execution(execution_id, "wf", '{"x": 1}', owner, LEASE)
    return execution_id


async def test_create_is_idempotent_and_records_the_start(store: Store) -> None:
    eid = await _started(store)

    assert not await store.create_execution(eid, "other", "{}", "b", LEASE)
    execution = await store.get_execution(eid)
    assert execution.workflow == "wf"
    assert execution.status is ExecutionStatus.RUNNING
    assert execution.input == {"x": 1}
    assert execution.owner == "a"
    assert [e.kind for e in await store.history(eid)] == [EventKind.EXECUTION_STARTED]


async def test_unknown_execution_is_not_found(store: Store) -> None:
    with pytest.raises(ExecutionNotFound, match="nope"):
        await store.get_execution("nope")
    with pytest.raises(ExecutionNotFound):
        await store.claim("nope", "a", LEASE)
    with pytest.raises(ExecutionNotFound):
        await store.history("nope")
    with pytest.raises(ExecutionNotFound):
        await store.journal("nope")


async def test_checkpoints_come_back_in_position_order(store: Store) -> None:
    eid = await _started(store)
    for position in (2, 0, 1):
        await store.record_step(eid, "a", _checkpoint(position, {"p": position}))

    claim = await store.claim(eid, "a", LEASE)

    assert claim.claimed
    assert [c.position for c in claim.checkpoints] == [0, 1, 2]
    assert [json.loads(c.result) for c in claim.checkpoints] == [
        {"p": 0},
        {"p": 1},
        {"p": 2},
    ]
    assert claim.checkpoints[0].args_hash == "h" * 16


async def test_a_position_is_written_once(store: Store) -> None:
    eid = await _started(store)
    await store.record_step(eid, "a", _checkpoint(0, "first"))

    with pytest.raises(CheckpointConflict) as raised:
        await store.record_step(eid, "a", _checkpoint(0, "second"))

    assert raised.value.position == 0
    claim = await store.claim(eid, "a", LEASE)
    assert [json.loads(c.result) for c in claim.checkpoints] == ["first"]


async def test_a_live_lease_keeps_other_runners_out(store: Store) -> None:
    eid = await _started(store, owner="a")

    claim = await store.claim(eid, "b", LEASE)

    assert not claim.claimed
    assert claim.holder == "a"
    assert claim.checkpoints == []


async def test_writes_from_a_runner_that_lost_its_lease_are_refused(
    store: Store,
) -> None:
    eid = await _started(store, owner="a")
    await store.release(eid, "a")
    assert (await store.claim(eid, "b", LEASE)).claimed

    with pytest.raises(LeaseLost) as raised:
        await store.record_step(eid, "a", _checkpoint(0))
    with pytest.raises(LeaseLost):
        await store.finish(eid, "a", ExecutionStatus.COMPLETED, output="1")

    assert raised.value.owner == "b"
    await store.record_step(eid, "b", _checkpoint(0))


async def test_steal_from_takes_a_named_dead_owners_lease(store: Store) -> None:
    eid = await _started(store, owner="dead")

    assert not (await store.claim(eid, "b", LEASE, steal_from="someone")).claimed
    claim = await store.claim(eid, "b", LEASE, steal_from="dead")

    assert claim.claimed
    assert (await store.get_execution(eid)).owner == "b"


async def test_an_expired_lease_can_be_claimed(store: Store) -> None:
    eid = await _started(store, owner="a")
    await store.renew("a", [eid], 0.05)
    await asyncio.sleep(0.2)

    claim = await store.claim(eid, "b", LEASE)

    assert claim.claimed
    kinds = [e.kind for e in await store.history(eid)]
    assert kinds == [EventKind.EXECUTION_STARTED, EventKind.EXECUTION_RESUMED]


async def test_claim_expired_hands_each_execution_to_one_caller(store: Store) -> None:
    for n in range(6):
        await _started(store, f"e{n}", owner="dead")
    await store.renew("dead", [f"e{n}" for n in range(6)], 0.05)
    await _started(store, "live", owner="alive")
    await asyncio.sleep(0.2)

    first = await store.claim_expired("w1", LEASE, 4)
    second = await store.claim_expired("w2", LEASE, 4)

    assert len(first) == 4
    assert len(second) == 2
    assert set(first) | set(second) == {f"e{n}" for n in range(6)}
    assert (await store.get_execution("live")).owner == "alive"


async def test_renew_reports_only_the_leases_still_held(store: Store) -> None:
    await _started(store, "mine", owner="a")
    await _started(store, "theirs", owner="b")

    held = await store.renew("a", ["mine", "theirs", "missing"], LEASE)

    assert held == {"mine"}


async def test_failures_are_journaled_and_returned_on_claim(store: Store) -> None:
    eid = await _started(store)
    error = json.dumps({"type": "ValueError", "message": "boom"})
    await store.record_failure(
        eid, "a", StepFailure(0, "s", "h", 1, error, final=False, retry_in=0.5)
    )
    await store.record_failure(eid, "a", StepFailure(0, "s", "h", 2, error, final=True))

    claim = await store.claim(eid, "a", LEASE)

    assert [(f.attempt, f.final) for f in claim.failures] == [(1, False), (2, True)]
    assert claim.failures[0].retry_in == 0.5
    assert json.loads(claim.failures[1].error)["message"] == "boom"
    kinds = [e.kind for e in await store.history(eid)]
    assert kinds[1:3] == [EventKind.STEP_RETRIED, EventKind.STEP_FAILED]


async def test_finish_is_terminal_and_drops_the_lease(store: Store) -> None:
    eid = await _started(store)
    await store.record_step(eid, "a", _checkpoint(0, 41))

    await store.finish(eid, "a", ExecutionStatus.COMPLETED, output="42")

    execution = await store.get_execution(eid)
    assert execution.status is ExecutionStatus.COMPLETED
    assert execution.output == 42
    assert execution.owner is None
    assert execution.completed_at is not None
    claim = await store.claim(eid, "b", LEASE)
    assert not claim.claimed
    assert claim.execution.status is ExecutionStatus.COMPLETED
    with pytest.raises(LeaseLost):
        await store.finish(eid, "a", ExecutionStatus.FAILED, error="{}")


async def test_history_reads_as_the_run_happened(store: Store) -> None:
    eid = await _started(store)
    await asyncio.sleep(0.005)
    await store.record_step(eid, "a", _checkpoint(0, "r0", step="fetch"))
    await asyncio.sleep(0.005)
    await store.record_step(eid, "a", _checkpoint(1, "r1", step="write"))
    await asyncio.sleep(0.005)
    await store.finish(eid, "a", ExecutionStatus.COMPLETED, output='"done"')

    events = await store.history(eid)

    assert [(e.kind, e.step) for e in events] == [
        (EventKind.EXECUTION_STARTED, None),
        (EventKind.STEP_STARTED, "fetch"),
        (EventKind.STEP_COMPLETED, "fetch"),
        (EventKind.STEP_STARTED, "write"),
        (EventKind.STEP_COMPLETED, "write"),
        (EventKind.EXECUTION_COMPLETED, None),
    ]
    completed = [e for e in events if e.kind is EventKind.STEP_COMPLETED]
    assert [(e.position, e.payload) for e in completed] == [(0, "r0"), (1, "r1")]
    assert events[-1].payload == "done"


async def test_the_journal_holds_the_execution_its_events_and_checkpoints(
    store: Store,
) -> None:
    eid = await _started(store)
    await store.record_step(eid, "a", _checkpoint(1, "r1", step="write"))
    await store.record_step(eid, "a", _checkpoint(0, "r0", step="fetch"))
    await store.record_failure(
        eid, "a", StepFailure(2, "send", "h" * 16, 1, '{"type": "E"}', False, 0.5)
    )
    await store.finish(eid, "a", ExecutionStatus.COMPLETED, output='"done"')

    journal = await store.journal(eid)

    assert journal.execution == await store.get_execution(eid)
    assert [(e.kind, e.position) for e in journal.events] == [
        (EventKind.EXECUTION_STARTED, None),
        (EventKind.STEP_RETRIED, 2),
        (EventKind.EXECUTION_COMPLETED, None),
    ]
    assert [(c.position, c.step, c.args_hash) for c in journal.checkpoints] == [
        (0, "fetch", "h" * 16),
        (1, "write", "h" * 16),
    ]
    assert journal.history() == await store.history(eid)


async def test_executions_list_in_id_order_with_filters(store: Store) -> None:
    for n in range(5):
        name = "even" if n % 2 == 0 else "odd"
        await store.create_execution(f"e{n}", name, "{}", "a", LEASE)
    await store.finish("e2", "a", ExecutionStatus.COMPLETED, output="null")

    every = await store.list_executions(status=None, workflow=None, limit=10)
    evens = await store.list_executions(status=None, workflow="even", limit=10)
    page = await store.list_executions(status=None, workflow=None, limit=2, after="e1")
    done = await store.list_executions(
        status=ExecutionStatus.COMPLETED, workflow=None, limit=10
    )

    assert [e.execution_id for e in every] == ["e0", "e1", "e2", "e3", "e4"]
    assert [e.execution_id for e in evens] == ["e0", "e2", "e4"]
    assert [e.execution_id for e in page] == ["e2", "e3"]
    assert [e.execution_id for e in done] == ["e2"]


async def test_the_effect_ledger_counts_each_application(store: Store) -> None:
    assert await store.record_effect("email:1", execution_id="e", detail="hi") == 1
    assert await store.record_effect("email:1") == 2
    assert await store.record_effect("sms:1") == 1

    assert await store.effect_counts() == {"email:1": 2, "sms:1": 1}
    assert await store.effect_counts(prefix="sms") == {"sms:1": 1}
