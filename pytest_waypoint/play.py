"""Playing one crash schedule against one execution.

``CrashDriver``   runs one segment of an execution (its start or a resume)
                  until it ends or the next point of the schedule fires.
                  ``InProcess`` raises ``SimulatedCrash`` from the runtime's
                  hook; ``pytest_waypoint.kill.KillDriver`` runs the segment
                  in a child process and SIGKILLs it.
``play``          plays one ``Schedule`` against a fresh execution: a
                  segment per crash, each resume in a fresh runtime on the
                  same store, then one more resume with no crash left.
"""

from __future__ import annotations

from typing import Any, Protocol

from pytest_waypoint import llm
from pytest_waypoint.effects import execution_effects
from pytest_waypoint.invariants import Outcome, ScenarioRun, Segment
from pytest_waypoint.schedule import CrashPoint, Schedule, point_at
from waypoint.decorators import WorkflowDef
from waypoint.hooks import CrashPhase, CrashSite, SimulatedCrash, armed
from waypoint.runtime import Waypoint
from waypoint.stores.base import Store

__all__ = ["CrashDriver", "InProcess", "crash", "crash_points", "observe", "play"]


class CrashDriver(Protocol):
    """Runs one segment of an execution under a schedule's pending points.

    It pops the point that fired from ``pending`` and records it as the
    segment's ``crashed_at``, with every site reached up to the crash.
    """

    name: str

    async def segment(
        self,
        store: Store,
        workflow: WorkflowDef,
        execution_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        pending: list[CrashPoint],
        *,
        resume: bool,
    ) -> Segment: ...


class _Recorder:
    """The armed hook: records sites, and crashes at the next pending point.

    After the crash every later site of the execution crashes too, so that a
    sibling step left running by ``asyncio.gather`` dies at its next boundary
    as it would with the process.

    ``record`` runs at every step boundary of every scenario, three times a
    step, so it does as little as it can: it is armed as a bound method (an
    instance's ``__call__`` costs an extra lookup per call), keeps the site
    as the runtime made it, and tests the phase of the target first, which
    rules out two sites in three.
    """

    __slots__ = (
        "dead",
        "execution_id",
        "pending",
        "segment",
        "sites",
        "target_occurrence",
        "target_phase",
        "target_step",
    )

    def __init__(self, execution_id: str, segment: Segment, pending: list[CrashPoint]):
        self.execution_id = execution_id
        self.segment = segment
        self.sites = segment.sites
        self.pending = pending
        self.dead: CrashSite | None = None
        target = pending[0] if pending else None
        # With nothing pending the phase is None, which no site has, so that
        # ``record`` needs no separate case for it.
        self.target_phase: CrashPhase | None = None
        self.target_step: str | None = None
        self.target_occurrence: int | None = None
        if target is not None:
            self.target_phase = target.phase
            self.target_step = target.step
            self.target_occurrence = target.occurrence

    def record(self, site: CrashSite) -> None:
        if site.execution_id != self.execution_id:
            return
        if self.dead is not None:
            raise SimulatedCrash(self.dead)
        self.sites.append(site)
        if (
            site.phase is self.target_phase
            and site.occurrence == self.target_occurrence
            and site.step == self.target_step
        ):
            self.segment.crashed_at = self.pending.pop(0)
            self.dead = site
            raise SimulatedCrash(site)


class InProcess:
    """Crashes by raising ``SimulatedCrash`` at the point, in this process.

    Each segment gets a fresh runtime on the shared store, as a restarted
    process would; the crashed runtime releases its lease on the way out.
    """

    name = "in-process"

    async def segment(
        self,
        store: Store,
        workflow: WorkflowDef,
        execution_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        pending: list[CrashPoint],
        *,
        resume: bool,
    ) -> Segment:
        segment = Segment(resume=resume)
        before = llm.usage(execution_id)
        runtime = Waypoint(store)
        try:
            with armed(_Recorder(execution_id, segment, pending).record):
                if resume:
                    await runtime.resume(execution_id)
                else:
                    await runtime.run(
                        workflow.fn, *args, execution_id=execution_id, **kwargs
                    )
        except SimulatedCrash:
            pass
        except Exception as exc:
            segment.error = exc
        finally:
            await runtime.close()
        after = llm.usage(execution_id)
        if after is not before:  # the same object when no model is live
            spent = after - before
            segment.llm_calls, segment.llm_tokens = spent.calls, spent.tokens
        return segment


async def play(
    store: Store,
    workflow: WorkflowDef,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    schedule: Schedule,
    execution_id: str,
    driver: CrashDriver | None = None,
) -> ScenarioRun:
    """Play ``schedule`` against a new execution and observe what it left.

    After each crash comes a resume, in which the next point may fire; after
    the last crash, one resume with nothing left to fire must finish.
    """
    driver = driver or InProcess()
    segments = await crash(
        store, workflow, args, kwargs, schedule, execution_id, driver
    )
    if segments[-1].crashed_at is not None:
        segments.append(
            await driver.segment(
                store, workflow, execution_id, args, kwargs, [], resume=True
            )
        )
    return ScenarioRun(
        schedule, execution_id, segments, await observe(store, execution_id)
    )


async def crash(
    store: Store,
    workflow: WorkflowDef,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    schedule: Schedule,
    execution_id: str,
    driver: CrashDriver,
) -> list[Segment]:
    """The segments up to the schedule's last crash, without the last resume.

    Stops early when a segment ends without its point firing.
    """
    pending = list(schedule.points)
    segments = [
        await driver.segment(
            store, workflow, execution_id, args, kwargs, pending, resume=False
        )
    ]
    while segments[-1].crashed_at is not None and pending:
        segments.append(
            await driver.segment(
                store, workflow, execution_id, args, kwargs, pending, resume=True
            )
        )
    return segments


async def observe(store: Store, execution_id: str) -> Outcome:
    """What the store holds for ``execution_id``: status, journal, effects."""
    journal = await store.journal(execution_id)
    execution = journal.execution
    return Outcome(
        status=execution.status,
        output=execution.output,
        error=execution.error,
        events=tuple(journal.events),
        effects=await execution_effects(store, execution_id),
        checkpoints=tuple(journal.checkpoints),
    )


def crash_points(reference: ScenarioRun) -> list[CrashPoint]:
    """Every point the uncrashed run passed, in the order it passed them."""
    seen: dict[CrashPoint, None] = {}
    for segment in reference.segments:
        for site in segment.sites:
            seen.setdefault(point_at(site), None)
    return list(seen)
