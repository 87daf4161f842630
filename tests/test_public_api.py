"""The public API is one sorted __all__, and it holds the design's names."""

from __future__ import annotations

import subprocess
import sys

import waypoint

DESIGN_NAMES = {
    "checkpoint",
    "workflow",
    "Waypoint",
    "current_step",
    "WaypointError",
    "NonDeterminismError",
    "SerializationError",
    "ExecutionNotFound",
    "ExecutionBusy",
    "StepFailed",
    "WorkflowNotRegistered",
    "SchemaVersionError",
}


def test_all_is_sorted_complete_and_importable() -> None:
    assert waypoint.__all__ == sorted(waypoint.__all__)
    assert set(waypoint.__all__) >= DESIGN_NAMES
    for name in waypoint.__all__:
        assert getattr(waypoint, name) is not None


def test_runtime_methods_of_the_design_exist() -> None:
    for method in ("run", "start", "resume", "recover", "execution", "history"):
        assert callable(getattr(waypoint.Waypoint, method))
    assert callable(waypoint.Waypoint.executions)


def test_every_error_derives_from_waypoint_error() -> None:
    errors = [
        getattr(waypoint, name)
        for name in waypoint.__all__
        if name.endswith(("Error", "Busy", "Found", "Failed", "Registered", "Lost"))
        or name == "CheckpointConflict"
    ]
    assert len(errors) >= 12
    for error in errors:
        assert issubclass(error, waypoint.WaypointError), error


def test_importing_waypoint_loads_no_database_driver_or_alembic() -> None:
    code = (
        "import sys, waypoint; "
        "print(sorted(m for m in ('asyncpg', 'alembic', 'sqlalchemy') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
