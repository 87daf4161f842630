"""The chaos harness: crash a workflow at every point, resume it, check it.

``play.py`` plays one crash schedule through a ``CrashDriver`` (in process,
or a SIGKILLed child with ``kill.KillDriver``); ``search.py`` chooses the
schedules, every one when they are few and a seeded sample when not;
``faults.py`` adds races of resumers and cut database connections. This
module holds ``Chaos`` (the ``chaos`` fixture: a reference run, the
scenarios, the invariants after each, the report) and ``ScheduledWaypoint``
(the runtime of the crash marker).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

from pytest_waypoint import llm
from pytest_waypoint.invariants import ScenarioRun, check_alone
from pytest_waypoint.invariants import check as check_invariants
from pytest_waypoint.play import CrashDriver, InProcess, crash_points, play
from pytest_waypoint.report import ChaosViolation, ExplorationReport, Scenario
from pytest_waypoint.schedule import CrashPoint, Schedule, parse_schedule
from pytest_waypoint.search import plan_schedules
from waypoint.decorators import WorkflowDef, workflow_definition
from waypoint.errors import ConfigurationError, WaypointError
from waypoint.hooks import CrashPhase, WriteCut
from waypoint.ids import new_execution_id
from waypoint.journal import ExecutionStatus
from waypoint.runtime import Waypoint
from waypoint.serialization import encode_arguments
from waypoint.stores.base import Store

__all__ = [
    "DEFAULT_MAX_CRASHES",
    "DEFAULT_MAX_SCENARIOS",
    "DEFAULT_MODE",
    "FAULTS",
    "MODES",
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

#: How a crash is made: an exception raised in this process, or SIGKILL of
#: a child process running the segment.
MODES = ("inprocess", "kill")
DEFAULT_MODE = "inprocess"

#: Kinds of fault an exploration injects: crashes always; "db" adds cut
#: connections at the commit of each checkpoint (PostgreSQL only).
FAULTS = ("crash", "db")


class ReferenceRunFailed(WaypointError):
    """Raised when the workflow cannot even run once without a crash."""


def _default_reproduce(schedule: Schedule) -> str:
    if not schedule:
        return "run the exploration again: database faults are not random"
    return f"--waypoint-schedule='{schedule}'"


def check_mode(mode: object) -> str:
    if mode not in MODES:
        raise ConfigurationError(
            f"unknown crash mode {mode!r}; choose one of {', '.join(MODES)}"
        )
    return str(mode)


def check_faults(faults: Iterable[object]) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(faults))
    unknown = [f for f in chosen if f not in FAULTS]
    if unknown or "crash" not in chosen:
        raise ConfigurationError(
            f"bad faults {chosen!r}: give 'crash' and optionally 'db', from "
            f"{', '.join(FAULTS)}"
        )
    return tuple(str(f) for f in chosen)


def check_racers(racers: object) -> int:
    if not isinstance(racers, int) or racers < 0 or racers == 1:
        raise ConfigurationError(
            f"bad number of racing resumers {racers!r}: 0 for no races, or 2 or more"
        )
    return racers


class Chaos:
    """The ``chaos`` fixture: crash-test workflows on the test's store.

    ``first`` are schedules to try before the planned ones (those that failed
    in an earlier run); ``racers`` >= 2 adds a race of that many resumers
    after each single crash; ``faults`` with "db" adds cut connections.
    """

    def __init__(
        self,
        store: Store,
        *,
        seed: int = 0,
        max_scenarios: int = DEFAULT_MAX_SCENARIOS,
        max_crashes: int = DEFAULT_MAX_CRASHES,
        schedules: Sequence[Schedule] = (),
        first: Sequence[Schedule] = (),
        reproduce: Callable[[Schedule], str] = _default_reproduce,
        driver: CrashDriver | None = None,
        mode: str = DEFAULT_MODE,
        racers: int = 0,
        faults: Sequence[str] = ("crash",),
        seed_note: str = "",
    ) -> None:
        self.store = store
        self.seed = seed
        self.seed_note = seed_note or f"seed {seed}"
        self.max_scenarios = max_scenarios
        self.max_crashes = max_crashes
        self.schedules = list(schedules)
        self.first = list(first)
        self.reproduce = reproduce
        self.mode = check_mode(mode)
        self.racers = check_racers(racers)
        self.faults = check_faults(faults)
        self._drivers: dict[str, CrashDriver] = {}
        if driver is not None:
            self._drivers[self.mode] = driver
        self.reports: list[ExplorationReport] = []
        self.scenarios: list[Scenario] = []
        self._references: dict[tuple[str, str, str], ScenarioRun] = {}
        self._tag = uuid.uuid4().hex[:8]
        self._count = 0

    @property
    def driver(self) -> CrashDriver:
        return self._driver(self.mode)

    def __repr__(self) -> str:
        return f"<Chaos {self.driver.name} on {self.store.dsn}>"

    def _driver(self, mode: str | None) -> CrashDriver:
        mode = self.mode if mode is None else check_mode(mode)
        if mode not in self._drivers:
            if mode == "kill":
                from pytest_waypoint.kill import KillDriver

                self._drivers[mode] = KillDriver()
            else:
                self._drivers[mode] = InProcess()
        return self._drivers[mode]

    def _prepare(self, definition: WorkflowDef, mode: str | None) -> CrashDriver:
        driver = self._driver(mode)
        check = getattr(driver, "check", None)
        if check is not None:
            # Before any run: a workflow a child cannot import, or a journal
            # it cannot open, is the user's to fix, not a crash to report.
            check(self.store, definition)
        return driver

    def _execution_id(self, label: str) -> str:
        self._count += 1
        return f"chaos-{self._tag}-{self._count:04d}-{label}"

    async def run(
        self,
        wf: Callable[..., Awaitable[Any]] | str,
        *args: Any,
        schedule: Schedule | str,
        mode: str | None = None,
        **kwargs: Any,
    ) -> ScenarioRun:
        """Play one schedule against ``wf`` and return what happened."""
        if isinstance(schedule, str):
            schedule = parse_schedule(schedule)
        definition = workflow_definition(wf)
        driver = self._prepare(definition, mode)
        execution_id = self._execution_id("run")
        return await play(
            self.store, definition, args, kwargs, schedule, execution_id, driver
        )

    async def reference(
        self,
        wf: Callable[..., Awaitable[Any]] | str,
        *args: Any,
        mode: str | None = None,
        **kwargs: Any,
    ) -> list[CrashPoint]:
        """The crash points of ``wf``'s uncrashed run, in the order reached.

        What ``strategies.schedules`` draws from. The run is made once per
        workflow, arguments and mode, and is what ``check`` compares with.
        """
        definition = workflow_definition(wf)
        driver = self._prepare(definition, mode)
        return crash_points(await self._reference(definition, args, kwargs, driver))

    async def check(
        self,
        wf: Callable[..., Awaitable[Any]] | str,
        *args: Any,
        schedule: Schedule | str,
        mode: str | None = None,
        **kwargs: Any,
    ) -> Scenario:
        """Play ``schedule`` against ``wf`` and check every invariant.

        Raises ``ChaosViolation`` naming the schedule and the line that
        reproduces it. Made for ``@given`` tests that draw schedules from
        ``strategies.schedules(await chaos.reference(wf, ...))``. A schedule
        given to the session (``--waypoint-schedule`` or the marker) replaces
        the drawn one: that is how the reproduction line replays a failure.
        A drawn point that cannot fire is not a failure.
        """
        if isinstance(schedule, str):
            schedule = parse_schedule(schedule)
        definition = workflow_definition(wf)
        driver = self._prepare(definition, mode)
        reference = await self._reference(definition, args, kwargs, driver)
        scenario = None
        for played in self.schedules or [schedule]:
            run = await play(
                self.store,
                definition,
                args,
                kwargs,
                played,
                self._execution_id(_label(played)),
                driver,
            )
            scenario = Scenario(run, check_invariants(reference, run))
            self.scenarios.append(scenario)
            if scenario.violations:
                raise ChaosViolation(self._check_failure(definition, scenario))
        assert scenario is not None
        return scenario

    def _check_failure(self, definition: WorkflowDef, scenario: Scenario) -> str:
        crashes = len(scenario.schedule)
        lines = [
            f"crash schedule {scenario.schedule} ({crashes} crash"
            f"{'es' if crashes != 1 else ''}) of workflow {definition.name!r} "
            f"broke {len(scenario.violations)} invariant(s); {self.seed_note}",
        ]
        lines += [v.describe(self.reproduce(v.schedule)) for v in scenario.violations]
        return "\n".join(lines)

    async def explore(
        self,
        wf: Callable[..., Awaitable[Any]] | str,
        *args: Any,
        raise_on_violation: bool = True,
        mode: str | None = None,
        max_crashes: int | None = None,
        racers: int | None = None,
        faults: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> ExplorationReport:
        """Crash ``wf`` at every point, resume it, and check the invariants.

        Runs it once uncrashed, then every feasible schedule of up to
        ``max_crashes`` crashes (crashes during resumes included), each
        resume in a fresh runtime, or a seeded sample of them beyond
        ``max_scenarios``; then, as asked, races of ``racers`` resumers and
        cut database connections (``faults``). ``mode`` "kill" runs every
        segment in a child process killed with SIGKILL. The keywords of the
        fixture's settings apply where these are None. Raises
        ``ChaosViolation`` with the crash matrix when an invariant breaks or
        a scheduled point never fires.
        """
        definition = workflow_definition(wf)
        driver = self._prepare(definition, mode)
        depth = self.max_crashes if max_crashes is None else max_crashes
        if not isinstance(depth, int) or depth < 1:
            raise ConfigurationError(f"max_crashes must be >= 1, not {depth!r}")
        racing = self.racers if racers is None else check_racers(racers)
        kinds = self.faults if faults is None else check_faults(faults)
        reference = await self._reference(definition, args, kwargs, driver)
        points = crash_points(reference)
        report = ExplorationReport(
            definition.name,
            reference,
            points,
            seed=self.seed,
            seed_note=self.seed_note,
            reproduce=self.reproduce,
            given=bool(self.schedules),
            mode=driver.name,
        )
        schedules = self._plan(points, depth, report)
        await self._crashes(definition, args, kwargs, report, schedules, driver)
        if racing:
            singles = [s for s in schedules if len(s) == 1] or schedules
            await self._races(definition, args, kwargs, report, singles, driver, racing)
        if "db" in kinds:
            await self._write_cuts(definition, args, kwargs, report)
        self.reports.append(report)
        if raise_on_violation and not report.ok:
            raise ChaosViolation(report.text(), report)
        return report

    def _plan(
        self, points: list[CrashPoint], depth: int, report: ExplorationReport
    ) -> list[Schedule]:
        if self.schedules:
            report.plan = f"the given schedule{'s' if len(self.schedules) > 1 else ''}"
            report.planned = len(self.schedules)
            return list(self.schedules)
        plan = plan_schedules(
            points, max_crashes=depth, budget=self.max_scenarios, seed=self.seed
        )
        report.plan = plan.description
        report.planned = plan.total
        report.sampled = not plan.exhaustive
        # Failures of an earlier run come first, whether or not the sample
        # would pick them again; only those this workflow can reach.
        known = set(points)
        first = [
            s
            for s in self.first
            if s and len(s) <= depth and all(p in known for p in s)
        ]
        report.retried = len(first)
        return list(dict.fromkeys([*first, *plan.schedules]))

    async def _reference(
        self,
        definition: WorkflowDef,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        driver: CrashDriver,
    ) -> ScenarioRun:
        try:
            key = (
                definition.name,
                driver.name,
                encode_arguments(definition.fn, args, kwargs),
            )
        except Exception:
            key = (definition.name, driver.name, repr((args, kwargs)))
        cached = self._references.get(key)
        if cached is not None:
            return cached
        execution_id = self._execution_id("reference")
        reference = await play(
            self.store, definition, args, kwargs, Schedule(), execution_id, driver
        )
        if not reference.outcome.status.terminal:
            error = reference.segments[0].error
            raise ReferenceRunFailed(
                f"the uncrashed run of workflow {definition.name!r} did not "
                f"finish ({type(error).__name__}: {error}); fix it before "
                "crash-testing it",
                execution_id=execution_id,
            ) from error
        self._references[key] = reference
        return reference

    async def _crashes(
        self,
        definition: WorkflowDef,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        report: ExplorationReport,
        schedules: Sequence[Schedule],
        driver: CrashDriver,
    ) -> None:
        reference_llm = sum(s.llm_calls for s in report.reference.segments)
        reference_tokens = sum(s.llm_tokens for s in report.reference.segments)
        for schedule in schedules:
            execution_id = self._execution_id(_label(schedule))
            run = await play(
                self.store, definition, args, kwargs, schedule, execution_id, driver
            )
            report.scenarios.append(
                Scenario(run, check_invariants(report.reference, run))
            )
            if not (reference_llm or reference_tokens):
                continue  # no model calls to save: each term below would be 0
            for resumed in run.segments[1:]:
                report.llm_saved += llm.Usage(
                    max(0, reference_llm - resumed.llm_calls),
                    max(0, reference_tokens - resumed.llm_tokens),
                )

    async def _races(
        self,
        definition: WorkflowDef,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        report: ExplorationReport,
        schedules: Sequence[Schedule],
        driver: CrashDriver,
        racers: int,
    ) -> None:
        from pytest_waypoint.faults import play_race

        if report.reference.outcome.status is not ExecutionStatus.COMPLETED:
            # A recorded failure is every racer's answer; there is no run left
            # to race for.
            report.notes.append("races skipped: the uncrashed run did not complete")
            return
        for schedule in schedules:
            execution_id = self._execution_id("race-" + _label(schedule))
            run = await play_race(
                self.store,
                definition,
                args,
                kwargs,
                schedule,
                execution_id,
                driver,
                racers,
            )
            report.scenarios.append(
                Scenario(run, check_invariants(report.reference, run))
            )

    async def _write_cuts(
        self,
        definition: WorkflowDef,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        report: ExplorationReport,
    ) -> None:
        from pytest_waypoint.faults import play_write_cut, write_cuts_unsupported

        reason = write_cuts_unsupported(self.store)
        if reason is not None:
            report.notes.append(reason)
            return
        # TODO(kill-db-faults): cuts run in this process even in kill mode;
        # the child would need the fault armed by the request it reads.
        commits = {
            site.position: f"{site.step}#{site.occurrence}"
            for segment in report.reference.segments
            for site in segment.sites
            if site.phase is CrashPhase.AFTER_COMMIT and site.position is not None
        }
        for position, label in sorted(commits.items()):
            for cut in WriteCut:
                execution_id = self._execution_id(
                    f"cut-{label.replace('#', '')}-{cut.value}"
                )
                run = await play_write_cut(
                    self.store,
                    definition,
                    args,
                    kwargs,
                    execution_id,
                    position=position,
                    label=label,
                    cut=cut,
                )
                report.scenarios.append(
                    Scenario(run, check_invariants(report.reference, run))
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
