"""Hypothesis strategies for crash points and crash schedules of a workflow.

Built from the steps a reference run recorded. Each strategy draws *indices*
into the crash points in the order the reference run reaches them, so that
Hypothesis' own shrinking (shorter lists, smaller integers) moves a failing
schedule toward fewer and earlier crashes: the minimal example it reports is
the smallest schedule a person can read.

This is the only module of the plugin that imports Hypothesis; the plugin
itself stays importable without it.
"""

# TODO(strategies-feasible): a drawn schedule may name a point that cannot
# fire after the crashes before it (a step already committed); the harness
# reports it as unfired. Drawing only feasible points (see search.py) would
# tie an index's meaning to the earlier draws and make shrinking less direct.

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st

from pytest_waypoint.schedule import CrashPoint, Schedule
from pytest_waypoint.search import Steps, ordered_points
from waypoint.errors import ConfigurationError

__all__ = ["crash_points", "schedules"]


def _points(steps: Steps | Sequence[CrashPoint]) -> list[CrashPoint]:
    points = ordered_points(steps)
    if not points:
        raise ConfigurationError(
            "no crash points to draw from: pass the steps of a reference run "
            "(pairs like ('fetch', 1)) or its crash points, not an empty list"
        )
    return points


def crash_points(steps: Steps | Sequence[CrashPoint]) -> st.SearchStrategy[CrashPoint]:
    """One crash point of the workflow; shrinks toward the earliest.

    ``steps`` is the reference run's steps in order, as ``(name, occurrence)``
    pairs or bare names, or its crash points (kept in the order given).
    """
    points = _points(steps)
    return st.integers(0, len(points) - 1).map(points.__getitem__)


def schedules(
    steps: Steps | Sequence[CrashPoint],
    *,
    max_crashes: int = 2,
    min_crashes: int = 1,
) -> st.SearchStrategy[Schedule]:
    """Schedules of ``min_crashes`` to ``max_crashes`` crashes.

    Shrinks toward fewer crashes, then earlier ones. A point may repeat: the
    second crash at ``fetch#1@after_effect`` lands on the re-run of ``fetch``
    during the resume that follows the first.
    """
    if not isinstance(max_crashes, int) or max_crashes < 1:
        raise ConfigurationError(
            f"max_crashes must be a whole number >= 1, not {max_crashes!r}"
        )
    if not isinstance(min_crashes, int) or not 0 <= min_crashes <= max_crashes:
        raise ConfigurationError(
            f"min_crashes must be a whole number from 0 to max_crashes "
            f"({max_crashes}), not {min_crashes!r}"
        )
    points = _points(steps)
    indices = st.lists(
        st.integers(0, len(points) - 1), min_size=min_crashes, max_size=max_crashes
    )
    return indices.map(lambda picks: Schedule(tuple(points[i] for i in picks)))
