"""What the journal holds: executions, their events, and recorded checkpoints.

These are plain values handed between the runtime and the stores. Payloads
stay JSON text here; only the runtime, which knows the annotations, rebuilds
typed values from them.
"""

from __future__ import annotations

import enum
import json
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import pydantic_core

from waypoint import _json

__all__ = [
    "Checkpoint",
    "Claim",
    "Event",
    "EventKind",
    "Execution",
    "ExecutionStatus",
    "Journal",
    "StepFailure",
    "events_from_rows",
    "failure_from_row",
    "merge_history",
    "resumed_payload",
    "utc_from_timestamp",
]


class ExecutionStatus(enum.StrEnum):
    """The lifecycle of an execution; only RUNNING can change."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self is not ExecutionStatus.RUNNING


class EventKind(enum.StrEnum):
    """The kinds of journal event, in the order a run usually writes them."""

    EXECUTION_STARTED = "execution_started"
    EXECUTION_RESUMED = "execution_resumed"
    STEP_STARTED = "step_started"
    STEP_COMPLETED = "step_completed"
    STEP_RETRIED = "step_retried"
    STEP_FAILED = "step_failed"
    EXECUTION_COMPLETED = "execution_completed"
    EXECUTION_FAILED = "execution_failed"


def utc_from_timestamp(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def resumed_payload(previous_owner: str | None) -> str:
    """The payload of an ``execution_resumed`` event, as every store writes it."""
    record = {"previous_owner": previous_owner}
    try:
        return pydantic_core.to_json(record).decode()
    except pydantic_core.PydanticSerializationError:
        # An owner id with a lone surrogate (a host name decoded with
        # surrogateescape): json escapes it where pydantic-core refuses.
        return json.dumps(record)


class Checkpoint(NamedTuple):
    """A completed step: the one row that makes it never run again.

    ``started_at`` and ``completed_at`` are epoch seconds; the step's start is
    written in the same transaction as its result, so that recording a step
    costs one transaction. A named tuple, so that a store can make one from a
    row of its steps table as it is: a resume loads every checkpoint of the
    execution.
    """

    position: int
    step: str
    args_hash: str
    attempt: int
    result: str
    started_at: float
    completed_at: float


@dataclass(slots=True)
class StepFailure:
    """A failed attempt of a step; ``final`` when no retry follows."""

    position: int
    step: str
    args_hash: str
    attempt: int
    error: str
    final: bool
    retry_in: float | None = None


@dataclass(frozen=True, slots=True)
class Execution:
    """One run of a workflow, as the store records it.

    ``input``, ``output`` and ``error`` are decoded JSON, not typed values:
    ``Waypoint.run`` and ``resume`` rebuild the typed output.
    """

    execution_id: str
    workflow: str
    status: ExecutionStatus
    input: Any
    output: Any
    error: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    owner: str | None
    lease_expires_at: datetime | None

    @classmethod
    def from_row(
        cls,
        *,
        execution_id: str,
        workflow: str,
        status: str,
        input: str,
        output: str | None,
        error: str | None,
        created_at: datetime,
        updated_at: datetime,
        completed_at: datetime | None,
        owner: str | None,
        lease_expires_at: datetime | None,
    ) -> Execution:
        return cls(
            execution_id=execution_id,
            workflow=workflow,
            status=ExecutionStatus(status),
            input=_json.loads(input),
            output=None if output is None else _json.loads(output),
            error=None if error is None else _json.loads(error),
            created_at=created_at,
            updated_at=updated_at,
            completed_at=completed_at,
            owner=owner,
            lease_expires_at=lease_expires_at,
        )


class Event(NamedTuple):
    """One entry of the journal, as ``Waypoint.history`` returns it.

    The time and the payload are kept as read (epoch seconds, JSON text) and
    turned into a datetime and a value only when asked for: a harness that
    checks thousands of journals rarely looks at either. A named tuple, like
    ``CrashSite``: immutable, and three times cheaper to build than a frozen
    dataclass; a history builds two per step.
    """

    seq: int
    execution_id: str
    kind: EventKind
    timestamp: float
    position: int | None = None
    step: str | None = None
    attempt: int | None = None
    payload_json: str | None = None

    @property
    def at(self) -> datetime:
        """When it happened, in UTC."""
        return utc_from_timestamp(self.timestamp)

    @property
    def payload(self) -> Any:
        """The event's data: a step's result, an error, an input..."""
        return None if self.payload_json is None else _json.loads(self.payload_json)

    def describe(self) -> str:
        """One line a person can read, for logs and reports."""
        where = "" if self.position is None else f" #{self.position} {self.step}"
        attempt = "" if self.attempt is None else f" (attempt {self.attempt})"
        return f"{self.at.isoformat()} {self.kind.value}{where}{attempt}"


@dataclass(slots=True)
class Claim:
    """What a runner learns when it asks to run an execution.

    ``claimed`` is False when the execution is terminal (nothing to run) or
    when a live runner, ``holder``, owns it.
    """

    execution: Execution
    claimed: bool
    holder: str | None = None
    checkpoints: list[Checkpoint] = field(default_factory=list)
    failures: list[StepFailure] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Journal:
    """One execution as its store holds it, read in one snapshot.

    ``events`` are the rows of the events table in the order they were
    written: the start, resumes, retried and failed attempts, the end.
    ``checkpoints`` are the completed steps, in position order. ``history``
    merges the two into the journal ``Waypoint.history`` returns.
    """

    execution: Execution
    events: list[Event]
    checkpoints: list[Checkpoint]

    def history(self) -> list[Event]:
        return merge_history(self.execution.execution_id, self.events, self.checkpoints)


def events_from_rows(
    execution_id: str,
    rows: Iterable[Sequence[Any]],
    when: Callable[[Any], float],
) -> list[Event]:
    """A SQL store's event rows as events.

    ``rows`` are (seq, kind, position, step, attempt, payload, at) with ``at``
    in the store's own time type, which ``when`` turns into epoch seconds.
    """
    return [
        Event(
            seq,
            execution_id,
            EventKind(kind),
            when(at),
            position,
            step,
            attempt,
            payload,
        )
        for seq, kind, position, step, attempt, payload, at in rows
    ]


def failure_from_row(
    position: int, step: str, args_hash: str, attempt: int, payload: str, kind: str
) -> StepFailure:
    """A failed attempt from its event row: ``kind`` is ``step_retried`` or
    ``step_failed``, ``payload`` the JSON of its error and retry delay."""
    record = _json.loads(payload)
    return StepFailure(
        position,
        step,
        args_hash,
        attempt,
        json.dumps(record["error"]),
        kind == EventKind.STEP_FAILED,
        record.get("retry_in"),
    )


def merge_history(
    execution_id: str, events: list[Event], checkpoints: list[Checkpoint]
) -> list[Event]:
    """One journal, in time order, from the events and the checkpoint rows.

    A checkpoint row holds its step's start and completion, written in one
    transaction; it becomes a STEP_STARTED and a STEP_COMPLETED event. Events
    made from checkpoints carry ``seq`` 0 (they live in their own table).

    Events with the same timestamp keep the order they are laid out in before
    the (stable) sort: the start and resumes of the execution, then the steps
    by position, each start before its completion, then retries, failures and
    the terminal event, each group in the order it was written.
    """
    merged = [event for event in events if event.kind in _OPENING]
    merged += _step_events(execution_id, checkpoints)
    merged += [event for event in events if event.kind not in _OPENING]
    merged.sort(key=_TIMESTAMP)
    return merged


def _step_events(execution_id: str, checkpoints: list[Checkpoint]) -> list[Event]:
    # Two events per step of the journal: tuple.__new__ skips the named
    # tuple's Python-level __new__, a third of the cost of each event.
    new = tuple.__new__
    started, completed = EventKind.STEP_STARTED, EventKind.STEP_COMPLETED
    built: list[Event] = []
    append = built.append
    for cp in checkpoints:
        position, step, attempt = cp.position, cp.step, cp.attempt
        append(
            new(
                Event,
                (
                    0,
                    execution_id,
                    started,
                    cp.started_at,
                    position,
                    step,
                    attempt,
                    None,
                ),
            )
        )
        append(
            new(
                Event,
                (
                    0,
                    execution_id,
                    completed,
                    cp.completed_at,
                    position,
                    step,
                    attempt,
                    cp.result,
                ),
            )
        )
    return built


#: Lifecycle events that come before the steps at an equal timestamp.
_OPENING = frozenset({EventKind.EXECUTION_STARTED, EventKind.EXECUTION_RESUMED})

_TIMESTAMP = operator.itemgetter(Event._fields.index("timestamp"))
