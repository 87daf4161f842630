"""What a crash scenario left behind, and the six invariants checked on it.

The checks read only what any crash driver can observe: the crash sites each
run segment reached (a driver in this process sees them through the armed
hook; a child process reports them to its parent), the journal, and the
effect ledger in the store's database. So the same checks hold whether the
crash was raised in process or made with SIGKILL, and for one crash or many.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pytest_waypoint.schedule import CrashPoint, Schedule
from waypoint.errors import NonDeterminismError
from waypoint.hooks import CrashPhase, CrashSite
from waypoint.journal import Checkpoint, Event, EventKind, ExecutionStatus

__all__ = [
    "INVARIANTS",
    "Fault",
    "Invariant",
    "Outcome",
    "ScenarioRun",
    "Segment",
    "Violation",
    "check",
    "check_alone",
]


_BEFORE = CrashPhase.BEFORE
_AFTER_COMMIT = CrashPhase.AFTER_COMMIT
_EXECUTION_COMPLETED = EventKind.EXECUTION_COMPLETED
_EXECUTION_FAILED = EventKind.EXECUTION_FAILED


class Invariant(enum.IntEnum):
    """The invariants of DESIGN.md, numbered as there."""

    NO_RERUN_AFTER_COMMIT = 1
    SAME_OUTPUT = 2
    JOURNAL_WELL_FORMED = 3
    EFFECTS_ONCE = 4
    SAME_STEPS = 5
    TERMINATES = 6
    ONE_RESUMER = 7

    @property
    def text(self) -> str:
        return INVARIANTS[self]


INVARIANTS = {
    Invariant.NO_RERUN_AFTER_COMMIT: "a step whose checkpoint was committed "
    "never runs again",
    Invariant.SAME_OUTPUT: "the final output equals the uncrashed run's output",
    Invariant.JOURNAL_WELL_FORMED: "one checkpoint per position, no gaps, one "
    "terminal event",
    Invariant.EFFECTS_ONCE: "each side effect happens once per idempotency key",
    Invariant.SAME_STEPS: "the resumed run makes the same steps as the journal",
    Invariant.TERMINATES: "the schedule ends in a terminal state within its resumes",
    Invariant.ONE_RESUMER: "of runtimes racing to resume, one runs each step",
}


@dataclass(slots=True)
class Segment:
    """One run of an execution: its start or a resume, until it ended or died.

    ``sites`` are the crash sites it passed, in order, the last one being
    where it died when it crashed. ``crashed_at`` is the scheduled point
    that stopped it; ``error`` an exception that ended it otherwise (a
    recorded workflow failure, or a runtime error such as
    ``NonDeterminismError``). LLM figures count the model calls this segment
    made.
    """

    resume: bool
    sites: list[CrashSite] = field(default_factory=list)
    crashed_at: CrashPoint | None = None
    error: BaseException | None = None
    llm_calls: int = 0
    llm_tokens: int = 0

    def body_runs(self) -> Counter[int]:
        """How many times each position's body started in this segment."""
        return Counter(self._started())

    def committed(self) -> set[int]:
        """The positions whose checkpoint this segment committed."""
        return {
            site.position
            for site in self.sites
            if site.phase is _AFTER_COMMIT and site.position is not None
        }

    def _started(self) -> list[int]:
        """The position of each body start, in the order they started."""
        sites = self.sites
        if self.crashed_at is not None:
            # The last site is where the crash fired: at ``before`` it came
            # before the body started, and at any later phase it is not a
            # ``before`` site at all.
            sites = sites[:-1]
        return [
            site.position
            for site in sites
            if site.phase is _BEFORE and site.position is not None
        ]


class _Journal(NamedTuple):
    """What the invariants read from a journal, gathered in one pass.

    ``completed`` counts the checkpoints at each position, ``steps`` is the
    position -> step name of each (the last, where there are several),
    ``terminal`` counts the terminal events.
    """

    completed: dict[int, int]
    steps: dict[int, str]
    terminal: int


def _read_journal(
    events: tuple[Event, ...], checkpoints: tuple[Checkpoint, ...]
) -> _Journal:
    completed: dict[int, int] = {}
    steps: dict[int, str] = {}
    for checkpoint in checkpoints:
        position = checkpoint.position
        completed[position] = completed.get(position, 0) + 1
        steps[position] = checkpoint.step
    terminal = 0
    for event in events:
        kind = event.kind
        if kind is _EXECUTION_COMPLETED or kind is _EXECUTION_FAILED:
            terminal += 1
    return _Journal(completed, steps, terminal)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the store holds for the execution once the scenario is over.

    ``events`` and ``checkpoints`` are the journal as the store keeps it
    (``waypoint.journal.Journal``): the event rows (start, resumes, retries,
    failures, the end) and the completed steps. ``effects`` maps each effect
    to how many times it took effect (distinct idempotency keys); ``steps``
    is the position -> step name of each committed checkpoint.
    """

    status: ExecutionStatus
    output: Any
    error: dict[str, Any] | None
    events: tuple[Event, ...]
    effects: dict[str, int]
    checkpoints: tuple[Checkpoint, ...] = ()
    # The journal as the checks read it, gathered once: the reference run's
    # is compared with every scenario of an exploration.
    _journal: _Journal | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def steps(self) -> dict[int, str]:
        return dict(self.journal().steps)

    def journal(self) -> _Journal:
        """The facts of the journal the invariants check (read once, kept)."""
        journal = self._journal
        if journal is None:
            journal = _read_journal(self.events, self.checkpoints)
            object.__setattr__(self, "_journal", journal)
        return journal


class Fault(enum.StrEnum):
    """The kind of a scenario: what was done to the execution besides
    crashing it at the schedule's points."""

    CRASH = "crash"  # nothing more: the schedule's crashes, then one resume
    RACE = "race"  # the last resume is a race of several runtimes
    DB = "db"  # a checkpoint write lost its connection at the commit


@dataclass(slots=True)
class ScenarioRun:
    """One schedule played against one execution, and what it left.

    ``fault`` says what else the scenario did, ``detail`` how (``3
    resumers``, ``cut after_commit at fetch#2``); ``race`` lists what broke
    the rules of a race of resumers.
    """

    schedule: Schedule
    execution_id: str
    segments: list[Segment]
    outcome: Outcome
    fault: Fault = Fault.CRASH
    detail: str = ""
    race: tuple[str, ...] = ()

    @property
    def fired(self) -> list[CrashPoint]:
        return [s.crashed_at for s in self.segments if s.crashed_at is not None]

    @property
    def unfired(self) -> list[CrashPoint]:
        return list(self.schedule.points[len(self.fired) :])

    def reruns(self) -> int:
        """Step bodies started more than once, over all segments."""
        total: Counter[int] = Counter()
        for segment in self.segments:
            total.update(segment.body_runs())
        return sum(n - 1 for n in total.values() if n > 1)


@dataclass(frozen=True, slots=True)
class Violation:
    invariant: Invariant
    schedule: Schedule
    expected: str
    actual: str
    execution_id: str = ""
    duplicates: int = 0
    fault: Fault = Fault.CRASH
    detail: str = ""

    def describe(self, reproduce: str = "") -> str:
        lines = [
            f"invariant {self.invariant.value} broken: {self.invariant.text}",
            f"  schedule:  {self.schedule or '(no crash)'}",
        ]
        if self.fault is not Fault.CRASH:
            lines.append(f"  fault:     {self.fault.value}: {self.detail}")
        lines += [
            f"  expected:  {self.expected}",
            f"  actual:    {self.actual}",
        ]
        if self.execution_id:
            lines.append(f"  execution: {self.execution_id}")
        if reproduce:
            lines.append(f"  reproduce: {reproduce}")
        return "\n".join(lines)


def check_alone(run: ScenarioRun) -> list[Violation]:
    """The invariants that need no reference run: 1, 3, 5 (replay), 6, 7."""
    found = [*_rerun_after_commit(run), *_journal(run), *_diverged(run)]
    if run.race:
        found.append(
            _violation(
                run,
                Invariant.ONE_RESUMER,
                f"one of {run.detail} runs the execution, each step once",
                "; ".join(run.race),
            )
        )
    if not run.outcome.status.terminal:
        last = run.segments[-1]
        why = f"; the last run ended with {_error(last.error)}" if last.error else ""
        found.append(
            _violation(
                run,
                Invariant.TERMINATES,
                f"completed or failed after at most {len(run.schedule)} resume(s)",
                f"still running after {len(run.segments) - 1} resume(s){why}",
            )
        )
    return found


def check(reference: ScenarioRun, run: ScenarioRun) -> list[Violation]:
    """Every invariant of ``run``, against the uncrashed ``reference`` run."""
    found = check_alone(run)
    ref, out = reference.outcome, run.outcome
    if out.status.terminal:
        expected = _result(ref, reference.execution_id)
        actual = _result(out, run.execution_id)
        if expected != actual:
            found.append(_violation(run, Invariant.SAME_OUTPUT, expected, actual))
        ref_steps, out_steps = ref.journal().steps, out.journal().steps
        if out.status is ExecutionStatus.COMPLETED and out_steps != ref_steps:
            found.append(
                _violation(
                    run,
                    Invariant.SAME_STEPS,
                    _steps(ref_steps),
                    _steps(out_steps),
                )
            )
    found.extend(_effects(ref.effects, run))
    return sorted(found, key=lambda v: v.invariant)


def _violation(
    run: ScenarioRun,
    invariant: Invariant,
    expected: str,
    actual: str,
    duplicates: int = 0,
) -> Violation:
    return Violation(
        invariant,
        run.schedule,
        expected,
        actual,
        run.execution_id,
        duplicates,
        run.fault,
        run.detail,
    )


def _rerun_after_commit(run: ScenarioRun) -> list[Violation]:
    found = []
    committed: set[int] = set()
    last = len(run.segments) - 1
    for index, segment in enumerate(run.segments):
        # Nothing is committed before the first segment, and nothing runs
        # after the last: most scenarios have two segments, so each needs
        # only one of the two reads.
        again = sorted(committed.intersection(segment._started())) if index else []
        if again:
            found.append(
                _violation(
                    run,
                    Invariant.NO_RERUN_AFTER_COMMIT,
                    f"positions {again} replayed from the journal",
                    f"their bodies ran again in a resume (positions {again})",
                )
            )
        if index < last:
            committed |= segment.committed()
    return found


def _journal(run: ScenarioRun) -> list[Violation]:
    completed, _, terminal = run.outcome.journal()
    problems = [
        f"{completed[p]} checkpoints at position {p}"
        for p in sorted(p for p, n in completed.items() if n > 1)
    ]
    if run.outcome.status is ExecutionStatus.COMPLETED:
        gaps = _gaps(completed)
        if gaps:
            problems.append(f"no checkpoint at positions {gaps}")
    if run.outcome.status.terminal and terminal != 1:
        problems.append(f"{terminal} terminal events")
    if not problems:
        return []
    return [
        _violation(
            run,
            Invariant.JOURNAL_WELL_FORMED,
            "one checkpoint per position 0..n-1 and one terminal event",
            "; ".join(problems),
        )
    ]


def _gaps(completed: dict[int, int]) -> list[int]:
    """The positions from 0 to the highest checkpointed one that have none."""
    positions = set(completed)
    if not positions:
        return []
    top = max(positions)
    if len(positions) == top + 1 and min(positions) == 0:
        return []  # 0..top, each once: the usual case, without building a range
    return sorted(set(range(top + 1)) - positions)


def _diverged(run: ScenarioRun) -> list[Violation]:
    for segment in run.segments:
        if segment.error is None:
            continue
        # A child process reports its error by type name (kill mode).
        name = getattr(segment.error, "error_type", None) or ""
        if isinstance(segment.error, NonDeterminismError) or name.endswith(
            ".NonDeterminismError"
        ):
            first = str(segment.error).splitlines()
            detail = " | ".join(line.strip() for line in first[:5])
            return [
                _violation(
                    run,
                    Invariant.SAME_STEPS,
                    "the resume calls the journal's steps with the same arguments",
                    detail,
                )
            ]
    return []


def _effects(expected: dict[str, int], run: ScenarioRun) -> list[Violation]:
    actual = run.outcome.effects
    if actual == expected:
        return []
    wrong = {
        name: (expected.get(name, 0), actual.get(name, 0))
        for name in sorted(set(expected) | set(actual))
        if expected.get(name, 0) != actual.get(name, 0)
    }
    if not wrong:
        return []
    duplicates = sum(max(0, got - want) for want, got in wrong.values())
    return [
        _violation(
            run,
            Invariant.EFFECTS_ONCE,
            ", ".join(f"{name!r} x{want}" for name, (want, _) in wrong.items())
            + " (as in the uncrashed run)",
            ", ".join(f"{name!r} x{got}" for name, (_, got) in wrong.items()),
            duplicates,
        )
    ]


def _result(outcome: Outcome, execution_id: str) -> str:
    if outcome.status is ExecutionStatus.COMPLETED:
        return f"completed with {_short(outcome.output)}"
    # Error messages name their execution; two runs fail alike when they
    # fail alike apart from that.
    error = outcome.error or {}
    message = str(error.get("message")).replace(execution_id, "<execution>")
    return f"failed with {error.get('type')}: {_short(message)}"


def _steps(steps: dict[int, str]) -> str:
    return _short([f"{p}:{name}" for p, name in sorted(steps.items())])


def _short(value: Any, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _error(error: BaseException | None) -> str:
    if error is None:
        return "nothing"
    first = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {first}"
