"""Waypoint: crash-proof async agent workflows.

Decorate each step with ``@checkpoint`` and the workflow with ``@workflow``;
run it with ``Waypoint().run(...)``. Every step's result is journaled before
the workflow goes on, so after a crash ``resume(execution_id)`` replays the
completed steps from the journal and runs only what is left.
"""

from waypoint.context import StepContext, current_step
from waypoint.decorators import Backoff, checkpoint, workflow
from waypoint.errors import (
    CheckpointConflict,
    ConfigurationError,
    ExecutionBusy,
    ExecutionNotFound,
    InternalError,
    LeaseLost,
    NonDeterminismError,
    SchemaVersionError,
    SerializationError,
    StepFailed,
    StoreError,
    WaypointError,
    WorkflowFailed,
    WorkflowNotRegistered,
)
from waypoint.journal import Event, EventKind, Execution, ExecutionStatus
from waypoint.runtime import Waypoint
from waypoint.stores.base import Store
from waypoint.stores.memory import MemoryStore
from waypoint.stores.sqlite import SQLiteStore

__version__ = "0.1.0"

__all__ = [
    "Backoff",
    "CheckpointConflict",
    "ConfigurationError",
    "Event",
    "EventKind",
    "Execution",
    "ExecutionBusy",
    "ExecutionNotFound",
    "ExecutionStatus",
    "InternalError",
    "LeaseLost",
    "MemoryStore",
    "NonDeterminismError",
    "SQLiteStore",
    "SchemaVersionError",
    "SerializationError",
    "StepContext",
    "StepFailed",
    "Store",
    "StoreError",
    "Waypoint",
    "WaypointError",
    "WorkflowFailed",
    "WorkflowNotRegistered",
    "checkpoint",
    "current_step",
    "workflow",
]


def __getattr__(name: str) -> object:
    # PostgresStore needs asyncpg, an optional extra: import it on first use.
    if name == "PostgresStore":
        from waypoint.stores.postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module 'waypoint' has no attribute {name!r}")
