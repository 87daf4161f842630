"""Which crash schedules to try: all of them when few, a seeded sample if not.

A schedule of several crashes is played as: run, crash at the first point,
resume, crash at the second point (during that resume), and so on. Not every
sequence can happen. A step committed before a crash never runs again, so
none of its points can fire later; a step that was not committed runs again,
so its points can fire again (``fetch#1@before`` twice is a real schedule:
the crash lands on the re-run). This module follows that rule over the order
in which the reference run reached its crash points (its *trace*), and so
enumerates only schedules whose every point can fire.

The rule assumes that a resume reaches the remaining points in the reference
order, which holds for workflows that make the same calls on every run (the
invariant the harness checks anyway). A point that still does not fire is
reported by the harness as a point that never fired.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache

from pytest_waypoint.schedule import CrashPoint, Schedule
from waypoint.errors import ConfigurationError
from waypoint.hooks import STEP_PHASES, CrashPhase

__all__ = [
    "DEFAULT_BUDGET",
    "SchedulePlan",
    "Steps",
    "derive_seed",
    "ordered_points",
    "plan_schedules",
]

#: Schedules explored before switching to a sample. Every single crash of a
#: 20-step workflow and every feasible pair of them (61 + 1,830) fit, so the
#: usual agent is searched exhaustively up to two crashes.
DEFAULT_BUDGET = 2000

#: Random walks tried per wanted schedule before a sample settles for fewer
#: (walks repeat once most short schedules have been drawn).
_ATTEMPTS_PER_SCHEDULE = 20

#: A reference run's steps in call order: ``(name, occurrence)`` pairs, or
#: bare names whose occurrences are counted here.
Steps = Sequence[tuple[str, int]] | Sequence[str]

_StepKey = tuple[str, int] | None
_COMPLETE = CrashPoint(None, None, CrashPhase.BEFORE_COMPLETE)


def ordered_points(steps: Steps | Sequence[CrashPoint]) -> list[CrashPoint]:
    """The crash points in the order a run reaches them.

    Crash points are returned as given (record them in the order their hooks
    fired, which is the truth for steps under ``asyncio.gather``). Steps give
    ``before``, ``after_effect`` and ``after_commit`` of each, then
    ``@before_complete``.
    """
    if all(isinstance(s, CrashPoint) for s in steps):
        return list(steps)  # type: ignore[arg-type]
    points: list[CrashPoint] = []
    seen: dict[str, int] = {}
    for step in steps:
        if isinstance(step, str):
            seen[step] = seen.get(step, 0) + 1
            name, occurrence = step, seen[step]
        elif isinstance(step, tuple) and len(step) == 2:
            name, occurrence = step
        else:
            raise ConfigurationError(
                f"bad step {step!r}: give (name, occurrence) pairs such as "
                "('fetch', 1), bare step names, or CrashPoint objects"
            )
        points.extend(CrashPoint(name, occurrence, phase) for phase in STEP_PHASES)
    points.append(_COMPLETE)
    return points


def derive_seed(run_seed: int, worker_id: str | None) -> int:
    """The seed of one pytest-xdist worker, derived from the run's seed.

    Without xdist (``worker_id`` None, empty or ``'master'``) it is the run's
    seed itself, so a run repeated without xdist explores the same schedules.
    """
    if not isinstance(run_seed, int):
        raise ConfigurationError(f"run_seed must be an int, not {run_seed!r}")
    if worker_id in (None, "", "master"):
        return run_seed
    digest = hashlib.sha256(f"{run_seed}/{worker_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


@dataclass(frozen=True, slots=True)
class SchedulePlan:
    """The schedules to run, and whether they are all there are."""

    schedules: tuple[Schedule, ...]
    exhaustive: bool
    total: int
    max_crashes: int
    budget: int
    seed: int
    singles: int = 0

    @property
    def description(self) -> str:
        crashes = "1 crash" if self.max_crashes == 1 else f"{self.max_crashes} crashes"
        if self.exhaustive:
            return (
                f"exhaustive: all {self.total:,} feasible schedules of up to "
                f"{crashes} (budget {self.budget:,})"
            )
        every = (
            "every single crash is included"
            if self.singles <= self.budget
            else f"{self.budget:,} of {self.singles:,} single crashes"
        )
        return (
            f"sampled: {len(self.schedules):,} of {self.total:,} feasible "
            f"schedules of up to {crashes}, over the budget of {self.budget:,} "
            f"(seed {self.seed}); {every}"
        )

    def __len__(self) -> int:
        return len(self.schedules)

    def __iter__(self) -> Iterator[Schedule]:
        return iter(self.schedules)


class _Trace:
    """The reference order of crash points and what each crash commits."""

    def __init__(self, points: Sequence[CrashPoint]) -> None:
        self.points = tuple(points)
        self.keys: tuple[_StepKey, ...] = tuple(
            None if p.step is None else (p.step, p.occurrence or 0) for p in points
        )
        # committed[i]: steps whose checkpoint is durable once point i fires.
        committed: list[frozenset[_StepKey]] = []
        done: set[_StepKey] = set()
        for point, key in zip(self.points, self.keys, strict=True):
            if point.phase is CrashPhase.AFTER_COMMIT:
                done.add(key)
            committed.append(frozenset(done))
        self.committed = tuple(committed)

    def choices(self, done: frozenset[_StepKey]) -> list[int]:
        return [i for i, key in enumerate(self.keys) if key is None or key not in done]

    def after(self, done: frozenset[_StepKey], index: int) -> frozenset[_StepKey]:
        return done | self.committed[index]

    def count(self, depth: int) -> int:
        @cache
        def schedules_from(done: frozenset[_StepKey], left: int) -> int:
            if left == 0:
                return 0
            return sum(
                1 + schedules_from(self.after(done, i), left - 1)
                for i in self.choices(done)
            )

        return schedules_from(frozenset(), depth)

    def walk(self, done: frozenset[_StepKey], depth: int) -> Iterator[tuple[int, ...]]:
        for i in self.choices(done):
            yield (i,)
            if depth > 1:
                for rest in self.walk(self.after(done, i), depth - 1):
                    yield (i, *rest)


def plan_schedules(
    steps: Steps | Sequence[CrashPoint],
    *,
    max_crashes: int = 2,
    budget: int = DEFAULT_BUDGET,
    seed: int = 0,
) -> SchedulePlan:
    """Every feasible schedule of up to ``max_crashes`` crashes, or a sample.

    When there are at most ``budget`` of them, all are returned, shortest
    first, in trace order. Otherwise ``budget`` of them, chosen at random
    from ``seed`` (the same seed gives the same plan): every single crash
    first, as far as the budget allows, then random multi-crash schedules.
    """
    if not isinstance(max_crashes, int) or max_crashes < 1:
        raise ConfigurationError(
            f"max_crashes must be a whole number >= 1, not {max_crashes!r}"
        )
    if not isinstance(budget, int) or budget < 1:
        raise ConfigurationError(
            f"budget must be a whole number of schedules >= 1, not {budget!r}"
        )
    trace = _Trace(ordered_points(steps))
    total = trace.count(max_crashes)

    def plan(picks: list[tuple[int, ...]], exhaustive: bool) -> SchedulePlan:
        return SchedulePlan(
            tuple(Schedule(tuple(trace.points[i] for i in p)) for p in picks),
            exhaustive,
            total,
            max_crashes,
            budget,
            seed,
            len(trace.choices(frozenset())),
        )

    if total <= budget:
        every = sorted(trace.walk(frozenset(), max_crashes), key=len)
        return plan(every, exhaustive=True)
    return plan(_sample(trace, max_crashes, budget, random.Random(seed)), False)


def _sample(
    trace: _Trace, max_crashes: int, budget: int, rng: random.Random
) -> list[tuple[int, ...]]:
    singles = [(i,) for i in trace.choices(frozenset())]
    if len(singles) >= budget:
        return sorted(rng.sample(singles, budget))
    picked: set[tuple[int, ...]] = set(singles)
    for _ in range(budget * _ATTEMPTS_PER_SCHEDULE):
        if len(picked) >= budget:
            break
        done: frozenset[_StepKey] = frozenset()
        walk: list[int] = []
        for _ in range(rng.randint(2, max_crashes)):
            i = rng.choice(trace.choices(done))
            walk.append(i)
            done = trace.after(done, i)
        picked.add(tuple(walk))
    # Sorted, so that the order does not depend on set iteration either.
    return sorted(picked, key=lambda p: (len(p), p))
