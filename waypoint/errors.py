"""Every error Waypoint raises, in one tree.

    WaypointError
    ├── ConfigurationError      a bad DSN, option or argument (also a ValueError)
    ├── WorkflowNotRegistered   a workflow name with no @workflow function
    ├── ExecutionNotFound       an execution id the store does not hold
    ├── ExecutionBusy           another live runner owns the execution
    │   └── LeaseLost           the lease expired and another runner took over
    ├── NonDeterminismError     a replay diverged from the journal
    ├── SerializationError      a value that cannot be stored as JSON
    ├── StepFailed              a step failed after its last retry
    ├── WorkflowFailed          a recorded failure whose type cannot be rebuilt
    ├── CheckpointConflict      a second write to a recorded position
    ├── SchemaVersionError      the database schema is not the one expected
    ├── StoreError              the database failed; the message says how
    └── InternalError           a bug in Waypoint itself; please report it

Each error carries its facts as attributes (``execution_id``, ``position``,
``step``, ...) so that callers never parse messages.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CheckpointConflict",
    "ConfigurationError",
    "ExecutionBusy",
    "ExecutionNotFound",
    "InternalError",
    "LeaseLost",
    "NonDeterminismError",
    "SchemaVersionError",
    "SerializationError",
    "StepFailed",
    "StoreError",
    "WaypointError",
    "WorkflowFailed",
    "WorkflowNotRegistered",
]


class WaypointError(Exception):
    """Base class of every error raised by Waypoint."""

    execution_id: str | None = None

    def __init__(self, message: str, **facts: Any) -> None:
        super().__init__(message)
        self.message = message
        for key, value in facts.items():
            setattr(self, key, value)

    def __str__(self) -> str:
        return self.message


class ConfigurationError(WaypointError, ValueError):
    """Raised for a bad DSN, option or argument, before anything is written."""


class WorkflowNotRegistered(WaypointError):
    """Raised when a workflow name has no function decorated with @workflow."""

    workflow: str | None = None


class ExecutionNotFound(WaypointError, LookupError):
    """Raised when the store holds no execution with the given id."""


class ExecutionBusy(WaypointError):
    """Raised when another live runner holds the execution's lease."""

    owner: str | None = None


class LeaseLost(ExecutionBusy):
    """Raised when a runner's lease lapsed and another runner took over."""


class NonDeterminismError(WaypointError):
    """Raised when a replay calls different steps than the journal recorded."""

    position: int | None = None
    recorded: str | None = None
    attempted: str | None = None


class SerializationError(WaypointError, TypeError):
    """Raised when a value cannot be stored as JSON or rebuilt from it."""

    step: str | None = None
    type_name: str | None = None


class StepFailed(WaypointError):
    """Raised into the workflow when a step failed after its last attempt."""

    step: str | None = None
    position: int | None = None
    attempts: int | None = None
    error_type: str | None = None
    error_message: str | None = None


class WorkflowFailed(WaypointError):
    """Raised for a recorded workflow failure whose type cannot be rebuilt."""

    error_type: str | None = None
    error_message: str | None = None


class CheckpointConflict(WaypointError):
    """Raised when a position already holds a checkpoint; it is never replaced."""

    position: int | None = None


class SchemaVersionError(WaypointError):
    """Raised when a store opens a database whose schema is not the expected one."""

    found: str | None = None
    expected: str | None = None


class StoreError(WaypointError):
    """Raised when the database fails in a way a retry did not mend."""


class InternalError(WaypointError):
    """Raised for a state Waypoint should never reach: a bug to report."""

    def __init__(self, message: str, **facts: Any) -> None:
        super().__init__(
            f"{message} (this is a bug in Waypoint, not in your code; please "
            "report it to the Waypoint issue tracker with this traceback)",
            **facts,
        )
