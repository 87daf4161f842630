"""What an exploration found, laid out for a person: the crash matrix.

Steps run down the matrix in the order the uncrashed run made them, phases
across, and each cell says what crashing there did: ``ok``, or the numbers
of the invariants broken, with the step bodies that ran again and the
effects that happened twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pytest_waypoint.invariants import ScenarioRun, Violation
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


@dataclass(slots=True)
class ExplorationReport:
    """The result of ``chaos.explore``; ``ok`` when nothing was broken."""

    workflow: str
    reference: ScenarioRun
    points: list[CrashPoint]
    scenarios: list[Scenario] = field(default_factory=list)
    planned: int = 0
    sampled: bool = False
    given: bool = False
    seed: int = 0
    reproduce: Callable[[Schedule], str] = str
    llm_saved: Usage = field(default_factory=Usage)

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

    def summary(self) -> str:
        if self.given:
            how = "the given"
        elif self.sampled:
            how = f"a seeded sample (seed {self.seed}) of {self.planned}"
        else:
            how = "every"
        bad = len({s.schedule for s in self.scenarios if s.violations})
        return (
            f"{self.workflow}: {len(self.scenarios)} scenarios ({how} schedule "
            f"of {len(self.points)} crash points), {bad} with violations, "
            f"{self.reruns} step re-runs, {len(self.unfired)} points never fired; "
            f"{self.llm_saved.calls} LLM calls ({self.llm_saved.tokens} tokens) "
            "served from the journal"
        )

    def matrix(self) -> str:
        """Steps down, phases across; single-crash scenarios only."""
        singles = {
            s.schedule.points[0]: s for s in self.scenarios if len(s.schedule) == 1
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
        return "\n".join(["crash matrix: " + self.summary(), *lines])

    def text(self) -> str:
        """The matrix, then each violation with the line that reproduces it."""
        parts = [self.matrix()]
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
