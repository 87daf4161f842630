"""``@checkpoint`` and ``@workflow``: how user code joins the journal.

A checkpointed step is reserved its position at the moment it is *called*,
before its coroutine first runs. So steps called in a loop, or several steps
handed to ``asyncio.gather``, get positions in call order, whatever order
they finish in, and a replay reserves the same positions again.
"""

from __future__ import annotations

import functools
import inspect
import logging
import random
import sys
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from waypoint.context import _current as _current_step
from waypoint.errors import ConfigurationError, WorkflowNotRegistered
from waypoint.serialization import Codec, return_codec

if TYPE_CHECKING:
    from waypoint.replay import Run

__all__ = ["Backoff", "StepDef", "WorkflowDef", "checkpoint", "workflow"]

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

#: The run the current task belongs to, set by the runtime while it drives a
#: workflow; None outside a workflow, where steps are plain async functions.
_current_run: ContextVar[Run | None] = ContextVar("waypoint_run", default=None)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between attempts: ``initial * factor**(n-1)``, capped, jittered.

    ``jitter`` is a fraction: 0.1 spreads each delay over +/-10% so that many
    runners that failed together do not retry together.
    """

    initial: float = 0.5
    factor: float = 2.0
    maximum: float = 30.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.initial < 0 or self.maximum < 0 or self.factor < 1:
            raise ConfigurationError(
                f"bad {self!r}: initial and maximum must be >= 0, factor >= 1"
            )
        if not 0 <= self.jitter <= 1:
            raise ConfigurationError(f"bad {self!r}: jitter must be in [0, 1]")

    def delay(self, attempt: int) -> float:
        """The pause after failed attempt number ``attempt`` (from 1)."""
        base = min(self.maximum, self.initial * self.factor ** (attempt - 1))
        if self.jitter:
            base *= 1 + random.uniform(-self.jitter, self.jitter)
        return max(0.0, base)


@dataclass(slots=True)
class StepDef:
    """A checkpointed step: its function, name and retry policy."""

    fn: Callable[..., Awaitable[Any]]
    name: str
    retries: int
    backoff: Backoff
    _codec: Codec | None = field(default=None, repr=False)

    @property
    def codec(self) -> Codec:
        # Resolved on first use, not at decoration, so that annotations may
        # name classes defined later in the module.
        if self._codec is None:
            self._codec = return_codec(self.fn, f"step {self.name!r}")
        return self._codec


@dataclass(slots=True)
class WorkflowDef:
    """A registered workflow: the function and the name the journal records."""

    fn: Callable[..., Awaitable[Any]]
    name: str
    _codec: Codec | None = field(default=None, repr=False)

    @property
    def codec(self) -> Codec:
        if self._codec is None:
            self._codec = return_codec(self.fn, f"workflow {self.name!r}")
        return self._codec


_registry: dict[str, WorkflowDef] = {}


def _check_async(fn: Any, decorator: str) -> None:
    if not inspect.iscoroutinefunction(fn):
        raise ConfigurationError(
            f"@{decorator} needs an 'async def' function, and "
            f"{getattr(fn, '__qualname__', fn)!r} is not one"
        )


def _check_name(name: Any, decorator: str) -> None:
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ConfigurationError(
            f"@{decorator}(name=...) must be a non-empty string, not {name!r}"
        )


def _as_backoff(backoff: Backoff | float) -> Backoff:
    if isinstance(backoff, Backoff):
        return backoff
    if isinstance(backoff, int | float) and not isinstance(backoff, bool):
        return Backoff(initial=float(backoff))
    raise ConfigurationError(
        f"backoff must be a Backoff or a number of seconds, not {backoff!r}"
    )


@overload
def checkpoint(
    fn: Callable[P, Awaitable[R]], /
) -> Callable[P, Coroutine[Any, Any, R]]: ...


@overload
def checkpoint(
    fn: str | None = None,
    /,
    *,
    name: str | None = None,
    retries: int = 0,
    backoff: Backoff | float = ...,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Coroutine[Any, Any, R]]]: ...


def checkpoint(
    fn: Any = None,
    /,
    *,
    name: str | None = None,
    retries: int = 0,
    backoff: Backoff | float = Backoff(),
) -> Any:
    """Make an async function a step: run once, its result journaled.

    Inside a workflow run, each call is one step at the next position. A step
    whose checkpoint is recorded returns the recorded result without running;
    otherwise the body runs (again, after a crash) with the same
    ``current_step().idempotency_key``. A failing body is retried ``retries``
    times with ``backoff``; the last failure raises ``StepFailed``.

    Outside a workflow, or inside another step's body, the function runs as
    if undecorated: the outermost step is the unit that is recorded.
    """
    if isinstance(fn, str):
        name, fn = fn, None
    _check_name(name, "checkpoint")
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise ConfigurationError(
            f"@checkpoint(retries=...) must be an int >= 0, not {retries!r}"
        )
    policy = _as_backoff(backoff)

    def decorate(
        func: Callable[P, Awaitable[R]],
    ) -> Callable[P, Coroutine[Any, Any, R]]:
        _check_async(func, "checkpoint")
        step = StepDef(func, name or func.__qualname__, retries, policy)

        @functools.wraps(func)
        def call(*args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
            run = _current_run.get()
            if run is None or _current_step.get() is not None:
                return func(*args, **kwargs)  # type: ignore[return-value]
            # The position is taken here, synchronously, so that it follows
            # call order rather than the order in which coroutines first run.
            return run.start_step(step, args, kwargs)

        call.__waypoint_step__ = step  # type: ignore[attr-defined]
        return call

    return decorate if fn is None else decorate(fn)


@overload
def workflow(fn: Callable[P, Awaitable[R]], /) -> Callable[P, Awaitable[R]]: ...


@overload
def workflow(
    fn: str | None = None, /, *, name: str | None = None
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]: ...


def workflow(fn: Any = None, /, *, name: str | None = None) -> Any:
    """Register an async function as a workflow under ``name``.

    The name is what the journal records and what ``resume`` looks up, so a
    process that resumes must have imported the module that defines the
    workflow. By default it is ``module.qualname``: two modules may both have
    a workflow called ``run``. A name claimed by a workflow of another module
    is refused, since a resume could otherwise run the wrong code. The
    function itself is returned unchanged; called directly, it simply runs.
    """
    if isinstance(fn, str):
        name, fn = fn, None
    _check_name(name, "workflow")

    def decorate(func: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        _check_async(func, "workflow")
        definition = WorkflowDef(func, name or _default_name(func))
        previous = _registry.get(definition.name)
        if previous is not None and previous.fn is not func:
            if _module_of(previous.fn) != _module_of(func):
                raise ConfigurationError(
                    f"the workflow name {definition.name!r} is taken by "
                    f"{_module_of(previous.fn)}.{previous.fn.__qualname__}; a "
                    "name must identify one workflow, or a resume could run "
                    "the wrong code: give one of them another name with "
                    "@workflow(name=...)"
                )
            # The same module defining it again (a reload, a test module
            # imported afresh): the newest definition wins.
            logger.debug(
                "workflow %r redefined in %s", definition.name, func.__module__
            )
        _registry[definition.name] = definition
        func.__waypoint_workflow__ = definition  # type: ignore[attr-defined]
        return func

    return decorate if fn is None else decorate(fn)


def _module_of(func: Callable[..., Any]) -> str:
    """The importable name of the module that defines ``func``.

    A module run as ``python -m pkg.mod`` is ``__main__`` in that process but
    ``pkg.mod`` in the process that resumes its executions; a script run as
    ``python agent.py`` is taken to be the module ``agent``.
    """
    module = str(func.__module__)
    if module != "__main__":
        return module
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        return str(spec.name)
    path = getattr(main, "__file__", None)
    return Path(path).stem if path else module


def _default_name(func: Callable[..., Any]) -> str:
    return f"{_module_of(func)}.{func.__qualname__}"


def workflow_definition(target: Any) -> WorkflowDef:
    """The registered workflow for a decorated function or a name."""
    if isinstance(target, str):
        definition = _registry.get(target)
        if definition is None:
            raise WorkflowNotRegistered(
                f"no workflow is registered as {target!r}: import the module "
                "that defines it (decorated with @workflow) before running or "
                "resuming it",
                workflow=target,
            )
        return definition
    definition = getattr(target, "__waypoint_workflow__", None)
    if not isinstance(definition, WorkflowDef):
        raise ConfigurationError(
            f"{getattr(target, '__qualname__', target)!r} is not a workflow: "
            "decorate it with @workflow"
        )
    return definition
