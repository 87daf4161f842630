"""What an exploration found, laid out for a person: the crash matrix.

Steps run down the matrix in the order the uncrashed run made them, phases
across, and each cell says what crashing there did: ``ok``, or the numbers
of the invariants broken, with the step bodies that ran again and the
effects that happened twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pytest_waypoint.invariants import Fault, ScenarioRun, Violation
from pytest_waypoint.llm import Usage
from pytest_waypoint.schedule import CrashPoint, Schedule
from waypoint.hooks import STEP_PHASES, CrashPhase

__all__ = ["ChaosViolation", "ExplorationReport", "Scenario"]


@dataclass(slots=True)
class Scenario:
    """One explored schedule and the invariants it broke."""

    run: ScenarioRun
    violations: list[Violation]

    @property
    def schedule(self) -> Schedule:
        return self.run.schedule

    @property
    def fault(self) -> Fault:
        return self.run.fault


@dataclass(slots=True)
class ExplorationReport:
    """The result of ``chaos.explore``; ``ok`` when nothing was broken.

    ``plan`` says how the schedules were chosen (every feasible one, or a
    seeded sample, and of how many); ``retried`` counts schedules that failed
    in an earlier run and were tried first; ``notes`` say what was skipped.
    """

    workflow: str
    reference: ScenarioRun
    points: list[CrashPoint]
    scenarios: list[Scenario] = field(default_factory=list)
    planned: int = 0
    sampled: bool = False
    given: bool = False
    seed: int = 0
    seed_note: str = ""
    reproduce: Callable[[Schedule], str] = str
    llm_saved: Usage = field(default_factory=Usage)
    plan: str = ""
    retried: int = 0
    mode: str = "in-process"
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations and not self.unfired

    @property
    def violations(self) -> list[Violation]:
        return [v for s in self.scenarios for v in s.violations]

    @property
    def unfired(self) -> list[tuple[Schedule, CrashPoint]]:
        """Scheduled points that the run never reached (never silently ok)."""
        return [(s.schedule, p) for s in self.scenarios for p in s.run.unfired]

    @property
    def reruns(self) -> int:
        return sum(s.run.reruns() for s in self.scenarios)

    def smallest_failure(self) -> Scenario | None:
        """The failing crash scenario with the fewest crashes, earliest first."""
        order = {point: i for i, point in enumerate(self.points)}
        failing = [
            s for s in self.scenarios if s.violations and s.fault is not Fault.DB
        ]
        return min(
            failing,
            key=lambda s: (len(s.schedule), [order.get(p, 0) for p in s.schedule]),
            default=None,
        )

    def summary(self) -> str:
        """What was explored and what it found, a few lines long."""
        if self.plan:
            how = self.plan
        elif self.given:
            how = "the given schedules"
        elif self.sampled:
            how = f"a seeded sample (seed {self.seed}) of {self.planned}"
        else:
            how = "every schedule"
        kinds = {f: sum(s.fault is f for s in self.scenarios) for f in Fault}
        extra = "".join(
            f" + {n} {f.value} scenarios"
            for f, n in kinds.items()
            if n and f is not Fault.CRASH
        )
        bad = len({(s.fault, s.schedule) for s in self.scenarios if s.violations})
        retried = f", {self.retried} failed before and tried first" * bool(self.retried)
        saved = self.llm_saved
        return "\n".join(
            [
                f"{self.workflow}: {len(self.scenarios)} scenarios {self.mode}, "
                f"of {len(self.points)} crash points",
                f"  schedules: {how}{retried}{extra}",
                f"  {bad} with violations, {self.reruns} step re-runs, "
                f"{len(self.unfired)} points never fired",
                f"  {saved.calls} LLM calls ({saved.tokens} tokens) served from "
                "the journal instead of the model",
            ]
        )

    def matrix(self) -> str:
        """Steps down, phases across; single-crash scenarios only."""
        singles = {
            s.schedule.points[0]: s
            for s in self.scenarios
            if len(s.schedule) == 1 and s.fault is Fault.CRASH
        }
        rows = _rows(self.points)
        header = ["step", *(p.value for p in STEP_PHASES)]
        table = [header]
        for label, step, occurrence in rows:
            cells = [label]
            for phase in STEP_PHASES:
                point = CrashPoint(step, occurrence, phase)
                cells.append(_cell(point in self.points, singles.get(point)))
            table.append(cells)
        complete = CrashPoint(None, None, CrashPhase.BEFORE_COMPLETE)
        if complete in self.points:
            table.append(["@before_complete", _cell(True, singles.get(complete))])
        widths = [max(len(r[i]) for r in table if len(r) > i) for i in range(4)]
        lines = [
            "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
            for row in table
        ]
        return "\n".join(["crash matrix of " + self.summary(), "", *lines])

    def text(self) -> str:
        """The matrix, then each violation with the line that reproduces it."""
        parts = [self.matrix(), *self.notes]
        smallest = self.smallest_failure()
        if smallest is not None:
            crashes = len(smallest.schedule)
            parts.append(
                f"smallest failing schedule: {smallest.schedule} ({crashes} "
                f"crash{'es' if crashes != 1 else ''}"
                f"{', ' + smallest.run.detail if smallest.run.detail else ''}); "
                f"{self.seed_note or f'seed {self.seed}'}\n"
                f"  reproduce: {self.reproduce(smallest.schedule)}"
            )
        parts.extend(v.describe(self.reproduce(v.schedule)) for v in self.violations)
        for schedule, point in self.unfired:
            parts.append(
                f"crash point {point} of schedule {schedule} never fired: the run "
                "never reached it"
            )
        return "\n\n".join(parts)


class ChaosViolation(AssertionError):
    """Raised when a crash scenario broke an invariant (or a scheduled point
    never fired); the message is the whole report."""

    def __init__(self, text: str, report: ExplorationReport | None = None) -> None:
        super().__init__(text)
        self.report = report


def _rows(points: list[CrashPoint]) -> list[tuple[str, str, int]]:
    rows: list[tuple[str, str, int]] = []
    for point in points:
        if point.step is None or point.occurrence is None:
            continue
        row = (f"{point.step}#{point.occurrence}", point.step, point.occurrence)
        if row not in rows:
            rows.append(row)
    return rows


def _cell(reached: bool, scenario: Scenario | None) -> str:
    if not reached:
        return "-"
    if scenario is None:
        return "skipped"
    run = scenario.run
    if run.unfired:
        return "never fired"
    marks = []
    if scenario.violations:
        broken = sorted({v.invariant.value for v in scenario.violations})
        marks.append("FAIL " + ",".join(map(str, broken)))
    else:
        marks.append("ok")
    reruns = run.reruns()
    if reruns:
        marks.append(f"rerun {reruns}")
    duplicates = sum(v.duplicates for v in scenario.violations)
    if duplicates:
        marks.append(f"dup {duplicates}")
    return " ".join(marks)
