"""Scenarios that do more than crash: racing resumers and lost connections.

``play_race``       plays a schedule's crashes, then lets several runtimes
                    race to resume the crashed execution (``race.py``): one
                    must run it, each step once.
``play_write_cut``  runs the workflow while the store's connection is cut at
                    the commit of one step's checkpoint, before the server
                    committed it or after (``waypoint.hooks.WriteCut``); the
                    store's retry must neither lose nor repeat the step.

Both return a ``ScenarioRun`` that the six invariants are checked on as for a
crash, so a race or a cut is judged by the same journal and ledger.
"""

from __future__ import annotations

import sys
from typing import Any

from pytest_waypoint.invariants import Fault, ScenarioRun, Segment
from pytest_waypoint.play import CrashDriver, InProcess, crash, observe
from pytest_waypoint.race import ResumerRole, race_resumer_processes, race_resumers
from pytest_waypoint.schedule import Schedule, parse_point
from waypoint.decorators import WorkflowDef
from waypoint.hooks import WriteCut, armed_write_fault
from waypoint.stores.base import Store

__all__ = ["play_race", "play_write_cut", "write_cuts_unsupported"]


async def play_race(
    store: Store,
    workflow: WorkflowDef,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    schedule: Schedule,
    execution_id: str,
    driver: CrashDriver,
    racers: int,
) -> ScenarioRun:
    """Crash as ``schedule`` says, then race ``racers`` resumers.

    Under the kill driver the racers are child processes released from a
    start gate; in process they are runtimes on the shared store, released
    together. A schedule whose points did not all fire ends without a race
    (the harness reports the point that never fired).
    """
    segments = await crash(
        store, workflow, args, kwargs, schedule, execution_id, driver
    )
    detail = f"{racers} resumers"
    problems: tuple[str, ...] = ()
    if segments[-1].crashed_at is not None:
        if driver.name == "kill":
            from pytest_waypoint.kill import child_dsn, workflow_target

            report = await race_resumer_processes(
                workflow_target(workflow),
                dsn=child_dsn(store),
                execution_id=execution_id,
                resumers=racers,
            )
        else:
            report = await race_resumers(store, execution_id, racers)
        problems = tuple(report.problems())
        segments.extend(
            Segment(
                resume=True,
                sites=[
                    parse_point(point).site(execution_id, position)
                    for point, position in zip(r.sites, r.positions, strict=False)
                ],
            )
            for r in report.results
            if r.role is ResumerRole.RAN or r.sites
        )
    return ScenarioRun(
        schedule,
        execution_id,
        segments,
        await observe(store, execution_id),
        Fault.RACE,
        detail,
        problems,
    )


def write_cuts_unsupported(store: Store) -> str | None:
    """Why ``store`` cannot cut its connection at a commit, or None if it can.

    Only ``PostgresStore`` consults ``armed_write_fault``: the other stores
    have no connection to lose. Looked up without importing asyncpg.
    """
    postgres = sys.modules.get("waypoint.stores.postgres")
    if postgres is not None and isinstance(store, postgres.PostgresStore):
        return None
    return (
        f"database faults skipped: {type(store).__name__} has no server "
        "connection to cut (only PostgresStore can; use --waypoint-store=postgres)"
    )


async def play_write_cut(
    store: Store,
    workflow: WorkflowDef,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    execution_id: str,
    *,
    position: int,
    label: str,
    cut: WriteCut,
) -> ScenarioRun:
    """Run ``workflow`` with the checkpoint write at ``position`` cut once.

    If the run does not finish (the store gave up), a fault-free resume in a
    fresh runtime follows, as after a crash; invariant 6 wants it to finish.
    """
    fired: list[int] = []

    def fault(written_id: str, written_at: int, step: str) -> WriteCut | None:
        if written_id != execution_id or written_at != position or fired:
            return None
        fired.append(written_at)
        return cut

    driver = InProcess()
    with armed_write_fault(fault):
        first = await driver.segment(
            store, workflow, execution_id, args, kwargs, [], resume=False
        )
    segments = [first]
    if first.error is not None:
        segments.append(
            await driver.segment(
                store, workflow, execution_id, args, kwargs, [], resume=True
            )
        )
    detail = f"connection cut {cut.value} of {label}'s checkpoint"
    if not fired:
        detail += " (the write was never made: nothing was cut)"
    return ScenarioRun(
        Schedule(),
        execution_id,
        segments,
        await observe(store, execution_id),
        Fault.DB,
        detail,
    )
