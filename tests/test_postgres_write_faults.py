"""Connection cuts at the commit of a checkpoint, injected on the server side.

``before_commit``: the statement never reaches the server, so the retry on a
new connection writes the checkpoint. ``after_commit``: the server committed
and the reply is lost, so the retry finds its own checkpoint and keeps it.
Either way the step body ran once and the run completes.
"""

from __future__ import annotations

import logging

import pytest

from waypoint import EventKind, Store, Waypoint, checkpoint, workflow
from waypoint.hooks import WriteCut, armed_write_fault

pytestmark = pytest.mark.postgres

ran: list[str] = []


@checkpoint
async def part(n: int) -> str:
    ran.append(f"part {n}")
    return f"p{n}"


@workflow(name="cut_twice")
async def parts() -> list[str]:
    return [await part(n) for n in range(3)]


@pytest.fixture
async def pg_store() -> Store:
    from pytest_waypoint._postgres import isolated_store

    async with isolated_store() as store:
        yield store


@pytest.mark.parametrize("cut", list(WriteCut))
async def test_a_connection_cut_at_commit_loses_and_repeats_nothing(
    pg_store: Store, cut: WriteCut, caplog: pytest.LogCaptureFixture
) -> None:
    ran.clear()
    cuts: list[int] = []

    def fault(execution_id: str, position: int, step: str) -> WriteCut | None:
        if position == 1:
            cuts.append(position)
            return cut
        return None

    caplog.set_level(logging.WARNING, logger="waypoint.stores.postgres")
    async with Waypoint(pg_store) as wp:
        with armed_write_fault(fault):
            out = await wp.run(parts, execution_id=f"cut-{cut}")
        events = await wp.history(f"cut-{cut}")

    assert out == ["p0", "p1", "p2"]
    assert cuts == [1]
    assert ran == ["part 0", "part 1", "part 2"]
    completed = [e.position for e in events if e.kind is EventKind.STEP_COMPLETED]
    assert completed == [0, 1, 2]
    assert "retry 1 of" in caplog.text
    if cut is WriteCut.AFTER_COMMIT:
        assert "reply was lost; keeping it" in caplog.text
