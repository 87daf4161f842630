"""The chaos harness: crash a workflow at every point, resume it, check it.

Three layers, so that new ways of crashing and searching slot in:

``CrashDriver``   runs one segment of an execution (its start or a resume)
                  until it ends or the next point of the schedule fires.
                  ``InProcess`` raises ``SimulatedCrash`` from the runtime's
                  hook; a driver that runs the segment in a child process
                  and SIGKILLs it has the same shape.
``play``          plays one ``Schedule`` against a fresh execution: a
                  segment per crash, each resume in a fresh runtime on the
                  same store, then one more resume with no crash left.
``Chaos``         the ``chaos`` fixture: a reference run, the schedules to
                  explore, the invariants after each, the report.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from pytest_waypoint import llm
from pytest_waypoint.effects import execution_effects
from pytest_waypoint.invariants import (
    Outcome,
    ScenarioRun,
    Segment,
    Site,
    check,
    check_alone,
)
from pytest_waypoint.report import ChaosViolation, ExplorationReport, Scenario
from pytest_waypoint.schedule import CrashPoint, Schedule, parse_schedule
from waypoint.decorators import WorkflowDef, workflow_definition
from waypoint.errors import WaypointError
from waypoint.hooks import CrashPhase, CrashSite, SimulatedCrash, armed
from waypoint.ids import new_execution_id
from waypoint.runtime import Waypoint
from waypoint.stores.base import Store

__all__ = [
    "DEFAULT_MAX_CRASHES",
    "DEFAULT_MAX_SCENARIOS",
    "Chaos",
    "CrashDriver",
    "InProcess",
    "ReferenceRunFailed",
    "ScheduledWaypoint",
    "crash_points",
    "play",
]

T = TypeVar("T")

#: Scenarios per explored workflow before the harness samples instead: a
#: 100-step agent has 301 single crash points; pairs of them need sampling.
DEFAULT_MAX_SCENARIOS = 500

#: Crashes per schedule. One crash finds most bugs; more is opt-in because
#: the number of schedules grows with the power of it.
DEFAULT_MAX_CRASHES = 1


class ReferenceRunFailed(WaypointError):
    """Raised when the workflow cannot even run once without a crash."""


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
    """

    __slots__ = ("dead", "execution_id", "pending", "segment", "target")

    def __init__(self, execution_id: str, segment: Segment, pending: list[CrashPoint]):
        self.execution_id = execution_id
        self.segment = segment
        self.pending = pending
        self.dead: CrashSite | None = None
        # The next point as a plain tuple: compared at every site.
        self.target = (
            (pending[0].step, pending[0].occurrence, pending[0].phase)
            if pending
            else None
        )

    def __call__(self, site: CrashSite) -> None:
        if site.execution_id != self.execution_id:
            return
        if self.dead is not None:
            raise SimulatedCrash(self.dead)
        key = (site.step, site.occurrence, site.phase)
        point = _POINTS.get(key) or _new_point(key)
        self.segment.sites.append(Site(point, site.position))
        if key == self.target:
            self.segment.crashed_at = self.pending.pop(0)
            self.dead = site
            raise SimulatedCrash(site)


#: Crash points by (step, occurrence, phase): a hook call is on the hot
#: path, and building and validating a point per site costs a fifth of an
#: exploration. Cleared when it grows past what any one workflow needs.
_POINTS: dict[tuple[str | None, int | None, CrashPhase], CrashPoint] = {}
_POINTS_LIMIT = 100_000


def _new_point(key: tuple[str | None, int | None, CrashPhase]) -> CrashPoint:
    if len(_POINTS) >= _POINTS_LIMIT:
        _POINTS.clear()
    point = _POINTS[key] = CrashPoint(*key)
    return point


class InProcess:
    """Crashes by raising ``SimulatedCrash`` at the point, in this process.

    Each segment gets a fresh runtime on the shared store, as a restarted
    process would; the crashed runtime releases its lease on the way out.
    """

    name = "in-process"

    # TODO(perf): on MemoryStore an exploration costs ~3.5x as many plain
    # runs (on SQLite ~1.5x): the armed runtime builds a CrashSite per hook
    # call, and each scenario reads its whole journal back to check it.

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
            with armed(_Recorder(execution_id, segment, pending)):
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
        spent = llm.usage(execution_id) - before
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
    pending = list(schedule.points)
    segments = [
        await driver.segment(
            store, workflow, execution_id, args, kwargs, pending, resume=False
        )
    ]
    while segments[-1].crashed_at is not None and len(segments) <= len(schedule):
        segments.append(
            await driver.segment(
                store, workflow, execution_id, args, kwargs, pending, resume=True
            )
        )
    return ScenarioRun(
        schedule, execution_id, segments, await observe(store, execution_id)
    )


async def observe(store: Store, execution_id: str) -> Outcome:
    """What the store holds for ``execution_id``: status, journal, effects."""
    execution = await store.get_execution(execution_id)
    return Outcome(
        status=execution.status,
        output=execution.output,
        error=execution.error,
        events=tuple(await store.history(execution_id)),
        effects=await execution_effects(store, execution_id),
    )


def crash_points(reference: ScenarioRun) -> list[CrashPoint]:
    """Every point the uncrashed run passed, in the order it passed them."""
    seen: dict[CrashPoint, None] = {}
    for segment in reference.segments:
        for site in segment.sites:
            seen.setdefault(site.point, None)
    return list(seen)


@dataclass(frozen=True, slots=True)
class Plan:
    schedules: list[Schedule]
    planned: int
    sampled: bool


def plan(candidates: Sequence[Schedule], budget: int, rng: random.Random) -> Plan:
    """All candidates within the budget, else a seeded sample in order."""
    if len(candidates) <= budget:
        return Plan(list(candidates), len(candidates), False)
    keep = sorted(rng.sample(range(len(candidates)), budget))
    return Plan([candidates[i] for i in keep], len(candidates), True)


def second_crashes(first: ScenarioRun) -> list[Schedule]:
    """Schedules that add one crash, at a point the first one's resume reached."""
    if len(first.segments) < 2:
        return []
    points = dict.fromkeys(site.point for site in first.segments[1].sites)
    return [Schedule((*first.schedule.points, point)) for point in points]


def _default_reproduce(schedule: Schedule) -> str:
    return f"--waypoint-schedule='{schedule}'"


class Chaos:
    """The ``chaos`` fixture: crash-test workflows on the test's store."""

    def __init__(
        self,
        store: Store,
        *,
        seed: int = 0,
        max_scenarios: int = DEFAULT_MAX_SCENARIOS,
        max_crashes: int = DEFAULT_MAX_CRASHES,
        schedules: Sequence[Schedule] = (),
        reproduce: Callable[[Schedule], str] = _default_reproduce,
        driver: CrashDriver | None = None,
    ) -> None:
        self.store = store
        self.seed = seed
        self.max_scenarios = max_scenarios
        self.max_crashes = max_crashes
        self.schedules = list(schedules)
        self.reproduce = reproduce
        # TODO(kill-mode): a driver around pytest_waypoint.kill.run_child,
        # chosen by explore(mode="kill") and --waypoint-mode; the invariant
        # checks already read only what a child can report.
        self.driver: CrashDriver = driver or InProcess()
        self.reports: list[ExplorationReport] = []
        self._tag = uuid.uuid4().hex[:8]
        self._count = 0

    def __repr__(self) -> str:
        return f"<Chaos {self.driver.name} on {self.store.dsn}>"

    def _execution_id(self, label: str) -> str:
        self._count += 1
        return f"chaos-{self._tag}-{self._count:04d}-{label}"

    async def run(
        self,
        wf: Callable[..., Awaitable[Any]] | str,
        *args: Any,
        schedule: Schedule | str,
        **kwargs: Any,
    ) -> ScenarioRun:
        """Play one schedule against ``wf`` and return what happened."""
        if isinstance(schedule, str):
            schedule = parse_schedule(schedule)
        definition = workflow_definition(wf)
        execution_id = self._execution_id("run")
        return await play(
            self.store, definition, args, kwargs, schedule, execution_id, self.driver
        )

    async def explore(
        self,
        wf: Callable[..., Awaitable[Any]] | str,
        *args: Any,
        raise_on_violation: bool = True,
        **kwargs: Any,
    ) -> ExplorationReport:
        """Crash ``wf`` at every point, resume it, and check the invariants.

        Runs it once uncrashed, then each single crash (each step call x
        each phase, and before completion), each resumed in a fresh
        runtime; with ``max_crashes`` >= 2 also a second crash in each
        resume. Raises ``ChaosViolation`` with the crash matrix when an
        invariant breaks or a scheduled point never fires.
        """
        definition = workflow_definition(wf)
        reference = await self._reference(definition, args, kwargs)
        points = crash_points(reference)
        report = ExplorationReport(
            definition.name,
            reference,
            points,
            seed=self.seed,
            reproduce=self.reproduce,
            given=bool(self.schedules),
        )
        rng = random.Random(self.seed)
        candidates = self.schedules or [Schedule((p,)) for p in points]
        await self._explore(definition, args, kwargs, report, candidates, rng)
        if not self.schedules and self.max_crashes >= 2:
            # TODO(multi-crash): only pairs; deeper schedules and the
            # switch to a Hypothesis search come with the schedule search.
            firsts = [s.run for s in report.scenarios if len(s.schedule) == 1]
            pairs = [p for run in firsts for p in second_crashes(run)]
            budget = self.max_scenarios - len(report.scenarios)
            await self._explore(definition, args, kwargs, report, pairs, rng, budget)
        self.reports.append(report)
        if raise_on_violation and not report.ok:
            raise ChaosViolation(report.text(), report)
        return report

    async def _reference(
        self, definition: WorkflowDef, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> ScenarioRun:
        execution_id = self._execution_id("reference")
        reference = await play(
            self.store, definition, args, kwargs, Schedule(), execution_id, self.driver
        )
        if not reference.outcome.status.terminal:
            error = reference.segments[0].error
            raise ReferenceRunFailed(
                f"the uncrashed run of workflow {definition.name!r} did not "
                f"finish ({type(error).__name__}: {error}); fix it before "
                "crash-testing it",
                execution_id=execution_id,
            ) from error
        return reference

    async def _explore(
        self,
        definition: WorkflowDef,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        report: ExplorationReport,
        candidates: Sequence[Schedule],
        rng: random.Random,
        budget: int | None = None,
    ) -> None:
        chosen = plan(candidates, self.max_scenarios if budget is None else budget, rng)
        report.planned += chosen.planned
        report.sampled = report.sampled or chosen.sampled
        reference_llm = sum(s.llm_calls for s in report.reference.segments)
        reference_tokens = sum(s.llm_tokens for s in report.reference.segments)
        for schedule in chosen.schedules:
            execution_id = self._execution_id(_label(schedule))
            run = await play(
                self.store,
                definition,
                args,
                kwargs,
                schedule,
                execution_id,
                self.driver,
            )
            report.scenarios.append(Scenario(run, check(report.reference, run)))
            for resumed in run.segments[1:]:
                report.llm_saved += llm.Usage(
                    max(0, reference_llm - resumed.llm_calls),
                    max(0, reference_tokens - resumed.llm_tokens),
                )


def _label(schedule: Schedule) -> str:
    # Execution ids name their schedule, so that a journal found later in
    # the store says which crash made it.
    return str(schedule).replace("@", "-").replace("#", "")[:80]


class ScheduledWaypoint(Waypoint):
    """A runtime whose ``run`` plays a crash schedule.

    The run crashes at each point of the schedule and is resumed in a fresh
    runtime each time; ``run`` then returns the recorded output (or raises
    the recorded failure) as an uncrashed run would. Invariants that need
    no reference run are checked on the way: a broken one raises
    ``ChaosViolation``.
    """

    def __init__(
        self,
        store: Store,
        schedule: Schedule,
        *,
        reproduce: Callable[[Schedule], str] = _default_reproduce,
        driver: CrashDriver | None = None,
    ) -> None:
        super().__init__(store)
        self.schedule = schedule
        self.reproduce = reproduce
        self.driver: CrashDriver = driver or InProcess()
        self.scenarios: list[Scenario] = []

    async def run(
        self,
        wf: Callable[..., Awaitable[T]] | str,
        *args: Any,
        execution_id: str | None = None,
        **kwargs: Any,
    ) -> T:
        definition = workflow_definition(wf)
        if execution_id is None:
            execution_id = new_execution_id()
        # TODO(scheduled-start): start() and a run with an execution id that
        # already exists are not crashed; they run as on a plain runtime.
        if not await self._exists(execution_id):
            played = await play(
                self.store,
                definition,
                args,
                kwargs,
                self.schedule,
                execution_id,
                self.driver,
            )
            scenario = Scenario(played, check_alone(played))
            self.scenarios.append(scenario)
            if scenario.violations:
                raise ChaosViolation(
                    "\n\n".join(
                        v.describe(self.reproduce(v.schedule))
                        for v in scenario.violations
                    )
                )
        return await super().run(wf, *args, execution_id=execution_id, **kwargs)

    async def _exists(self, execution_id: str) -> bool:
        from waypoint.errors import ExecutionNotFound

        await self.open()
        try:
            await self.store.get_execution(execution_id)
        except ExecutionNotFound:
            return False
        return True

    def never_fired(self) -> str | None:
        """Why the schedule did not fully fire in any run, or None."""
        fired = {p for s in self.scenarios for p in s.run.fired}
        missing = [p for p in self.schedule.points if p not in fired]
        if not missing:
            return None
        reached = sorted(
            {
                str(site.point)
                for s in self.scenarios
                for g in s.run.segments
                for site in g.sites
            }
        )
        return (
            f"crash point(s) {', '.join(map(str, missing))} of schedule "
            f"{self.schedule} never fired: {len(self.scenarios)} run(s) of the "
            f"waypoint fixture reached only {reached or 'no crash point'}. "
            "Name a step as the journal does (name#k@phase, k from 1)"
        )
