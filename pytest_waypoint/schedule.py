"""Crash points and schedules, as the harness writes and reads them.

A crash point is ``name#k@phase``: the k-th call (from 1) of step ``name`` in
the execution, at one of the phases of ``waypoint.hooks.CrashPhase``; the
point before the execution is marked complete is ``@before_complete``. A
schedule is a comma-separated list of points, each of which fires once, in
order: the first crash, then a resume in which the second may fire, and so on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from waypoint.errors import ConfigurationError
from waypoint.hooks import CrashPhase, CrashSite

__all__ = ["CrashPoint", "Schedule", "parse_point", "parse_schedule", "point_at"]

_POINT = re.compile(r"^(?:(?P<step>[^#@,]+)#(?P<k>\d+))?@(?P<phase>[a-z_]+)$")
_PHASES = ", ".join(p.value for p in CrashPhase)


@dataclass(frozen=True, slots=True, order=True)
class CrashPoint:
    """Where to crash: step ``step``'s ``occurrence``-th call at ``phase``."""

    step: str | None
    occurrence: int | None
    phase: CrashPhase

    def __post_init__(self) -> None:
        at_complete = self.phase is CrashPhase.BEFORE_COMPLETE
        if at_complete != (self.step is None) or (self.step is None) != (
            self.occurrence is None
        ):
            raise ConfigurationError(
                f"bad crash point {self!r}: a step phase needs a step and an "
                "occurrence, and @before_complete takes neither"
            )
        if self.occurrence is not None and self.occurrence < 1:
            raise ConfigurationError(
                f"bad crash point {self!r}: occurrences count from 1"
            )

    def __str__(self) -> str:
        if self.step is None:
            return f"@{self.phase.value}"
        return f"{self.step}#{self.occurrence}@{self.phase.value}"

    def matches(self, site: CrashSite) -> bool:
        return (
            site.phase is self.phase
            and site.step == self.step
            and site.occurrence == self.occurrence
        )

    def site(self, execution_id: str, position: int | None) -> CrashSite:
        """This point as a site of ``execution_id`` at ``position``: how a
        driver that hears of points by name (a child process) reports them."""
        return CrashSite(self.phase, execution_id, self.step, self.occurrence, position)


def point_at(site: CrashSite) -> CrashPoint:
    """The crash point ``site`` is at."""
    return CrashPoint(site.step, site.occurrence, site.phase)


def parse_point(text: str) -> CrashPoint:
    """``'fetch#2@after_effect'`` -> ``CrashPoint('fetch', 2, AFTER_EFFECT)``."""
    match = _POINT.match(text.strip())
    if match is None:
        raise ConfigurationError(
            f"bad crash point {text!r}: write name#k@phase (for example "
            f"'fetch#1@after_commit') or @before_complete; phases: {_PHASES}"
        )
    try:
        phase = CrashPhase(match["phase"])
    except ValueError:
        raise ConfigurationError(
            f"bad crash point {text!r}: unknown phase {match['phase']!r}; "
            f"phases: {_PHASES}"
        ) from None
    step = match["step"]
    return CrashPoint(
        step.strip() if step else None, int(match["k"]) if step else None, phase
    )


@dataclass(frozen=True, slots=True, repr=False)
class Schedule:
    """Crash points that fire once each, in order."""

    points: tuple[CrashPoint, ...] = ()

    def __str__(self) -> str:
        return ",".join(str(p) for p in self.points)

    def __repr__(self) -> str:
        # Hypothesis prints drawn values with repr: this one reads as the
        # schedule a person would type, and evaluates back to it.
        return f"parse_schedule({str(self)!r})" if self.points else "Schedule()"

    def __len__(self) -> int:
        return len(self.points)

    def __iter__(self) -> Iterator[CrashPoint]:
        return iter(self.points)

    @classmethod
    def of(cls, points: Iterable[CrashPoint | str]) -> Schedule:
        return cls(
            tuple(p if isinstance(p, CrashPoint) else parse_point(p) for p in points)
        )


def parse_schedule(text: str | Sequence[str]) -> Schedule:
    """``'a#1@before,b#2@after_commit'`` (or a list of points) -> Schedule."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    points = [p for p in parts if p.strip()]
    if not points:
        raise ConfigurationError(
            "an empty crash schedule: give at least one point, name#k@phase"
        )
    return Schedule.of(points)
