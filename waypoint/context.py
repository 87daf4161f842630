"""What a running step can ask about itself: ``current_step()``."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from waypoint.errors import WaypointError

__all__ = ["StepContext", "current_step"]


@dataclass(frozen=True, slots=True)
class StepContext:
    """The identity of the running step.

    ``idempotency_key`` is the same every time this step runs in this
    execution, including re-runs after a crash: pass it to an external API so
    that it can drop a duplicate request.
    """

    execution_id: str
    position: int
    name: str
    attempt: int
    idempotency_key: str


#: (execution_id, position, name, attempt) of the running step. A tuple, not
#: a StepContext, because it is set for every step and read by few of them.
_current: ContextVar[tuple[str, int, str, int] | None] = ContextVar(
    "waypoint_current_step", default=None
)


def current_step() -> StepContext:
    """The running step's context; raises outside a ``@checkpoint`` step."""
    current = _current.get()
    if current is None:
        raise WaypointError(
            "current_step() was called outside a step: call it from the body "
            "of an async function decorated with @checkpoint while a workflow "
            "runs it"
        )
    execution_id, position, name, attempt = current
    return StepContext(
        execution_id, position, name, attempt, f"{execution_id}:{position}"
    )
